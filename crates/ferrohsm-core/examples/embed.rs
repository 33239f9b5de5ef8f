//! Embedding FerroHSM in a Rust program: an in-memory store, one AES key and one EC key.
//!
//! Run it with `cargo run -p ferrohsm-core --example embed`. It prints a ciphertext and its
//! decryption, and a signature and whether it verifies. Swap `BackendConfig::memory()` for
//! `BackendConfig::filesystem("./ferrohsm-data")` or `BackendConfig::sqlite("./ferrohsm-data")`
//! to keep keys, approvals and the audit log on disk.

use ferrohsm_core::{
    Algorithm, AwsLcProvider, BackendConfig, CreateKey, CryptoProvider, Hsm, MasterKey,
    RequestContext, SignInput,
};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    // A real deployment loads the master key with `MasterKey::from_file` or `from_env`.
    let mut seed = [0u8; 32];
    AwsLcProvider.fill_random(&mut seed)?;
    let hsm = Hsm::builder()
        .backend(BackendConfig::memory())
        .master_key(MasterKey::from_bytes(&seed)?)
        .build()
        .await?;
    let me = RequestContext::local("embed-example");

    let aes = hsm.create_key(&me, CreateKey::new(Algorithm::Aes256Gcm).name("app-data")).await?;
    let sealed = hsm.encrypt(&me, &aes.id.into(), b"attack at dawn", b"order-42").await?;
    println!("ciphertext: {}", sealed.ciphertext);
    let opened = hsm.decrypt(&me, &"app-data".parse()?, &sealed.ciphertext, b"order-42").await?;
    println!("decrypted:  {}", String::from_utf8_lossy(opened.plaintext.expose()));

    let ec = hsm.create_key(&me, CreateKey::new(Algorithm::EcP256).name("release-signing")).await?;
    let artefact = b"release-1.0.tar.gz contents";
    let signed = hsm.sign(&me, &ec.id.into(), SignInput::Message(artefact), None).await?;
    println!("signature ({}): {}", signed.algorithm, ferrohsm_core::b64::encode(&signed.signature));
    let verified = hsm
        .verify(&me, &ec.id.into(), SignInput::Message(artefact), &signed.signature, None, None)
        .await?;
    println!("verified:   {}", verified.valid);
    anyhow::ensure!(
        opened.plaintext.expose() == b"attack at dawn" && verified.valid,
        "round trip failed"
    );
    Ok(())
}
