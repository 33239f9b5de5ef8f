//! Stable-Rust fuzzing of every parser that reads untrusted bytes: the policy file, the JWT
//! keyset file, audit logs (the verifier), `fhsm:` ciphertexts, bearer tokens and request
//! bodies. No nightly toolchain or sanitizer is needed: a small mutation engine starts from
//! valid seeds, mutates them (bit flips, splices, truncations, multi-byte characters, huge
//! numbers), and runs each target under `catch_unwind`; any panic is a failure, saved with the
//! input that caused it.
//!
//! `cargo test -p ferrohsm-fuzz` runs a bounded smoke run of every target (part of
//! `cargo xtask test`); `cargo xtask fuzz [SECONDS]` runs longer with a fresh seed.
//! It must never reach the network or write outside `target/fuzz`.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use ferrohsm_core::Hsm;

/// The function a target runs on one input; it must never panic.
pub type Run = Box<dyn Fn(&[u8]) + Send + Sync>;

/// One fuzz target: its name, its seeds, and the function that must never panic.
pub struct Target {
    /// The name (`policy`, `keyset`, …).
    pub name: &'static str,
    /// Valid (or nearly valid) inputs to start from.
    pub seeds: Vec<Vec<u8>>,
    /// Runs one input.
    pub run: Run,
}

/// A panic found: the target and the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The target.
    pub target: &'static str,
    /// The input that panicked.
    pub input: Vec<u8>,
    /// The panic message.
    pub message: String,
}

/// A small, fast, deterministic generator (xorshift64*).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed (zero is replaced).
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next_u64() % n as u64) as usize }
    }
}

/// Byte strings that break parsers: multi-byte and combining characters, huge and negative
/// numbers, structure characters.
const INTERESTING: &[&[u8]] = &[
    "é".as_bytes(),
    "日".as_bytes(),
    "\u{301}".as_bytes(),
    "\u{10FFFF}".as_bytes(),
    b"\xff\xfe",
    b"18446744073709551615",
    b"18446744073709551616",
    b"-9223372036854775808",
    b"-1",
    b"0",
    b"1e999",
    b"NaN",
    b"\n",
    b"\r\n",
    b"\"",
    b"\\",
    b"{",
    b"}",
    b"[[[",
    b"]]",
    b"=",
    b":",
    b".",
    b"null",
    b"true",
    b"\0",
];

/// One mutation of `input` (sometimes spliced with `other`).
pub fn mutate(rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..=rng.below(4) {
        let len = out.len();
        match rng.below(8) {
            0 if len > 0 => {
                let i = rng.below(len);
                out[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                out[i] = rng.next_u64() as u8;
            }
            2 => {
                let at = rng.below(len + 1);
                let piece = INTERESTING[rng.below(INTERESTING.len())];
                out.splice(at..at, piece.iter().copied());
            }
            3 if len > 0 => {
                let start = rng.below(len);
                let end = (start + 1 + rng.below(16)).min(len);
                out.drain(start..end);
            }
            4 if len > 0 => {
                let start = rng.below(len);
                let end = (start + 1 + rng.below(32)).min(len);
                let copy = out[start..end].to_vec();
                let at = rng.below(len + 1);
                out.splice(at..at, copy);
            }
            5 => out.truncate(rng.below(len + 1)),
            6 if !other.is_empty() => {
                let cut = rng.below(len + 1);
                let from = rng.below(other.len());
                out.truncate(cut);
                out.extend_from_slice(&other[from..]);
            }
            _ => {
                let at = rng.below(len + 1);
                out.insert(at, rng.next_u64() as u8);
            }
        }
    }
    out.truncate(64 * 1024);
    out
}

/// Runs `iterations` mutated inputs through `target`; the first panic is returned.
pub fn fuzz(target: &Target, rng: &mut Rng, iterations: usize) -> Option<Finding> {
    let seeds = if target.seeds.is_empty() { vec![Vec::new()] } else { target.seeds.clone() };
    // Seeds themselves first.
    for seed in &seeds {
        if let Some(f) = run_one(target, seed) {
            return Some(f);
        }
    }
    let mut corpus = seeds;
    for _ in 0..iterations {
        let a = rng.below(corpus.len());
        let b = rng.below(corpus.len());
        let input = mutate(rng, &corpus[a], &corpus[b]);
        if let Some(f) = run_one(target, &input) {
            return Some(f);
        }
        // Keep a bounded, varied corpus.
        if corpus.len() < 256 && rng.below(8) == 0 {
            corpus.push(input);
        }
    }
    None
}

fn run_one(target: &Target, input: &[u8]) -> Option<Finding> {
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| (target.run)(input)));
    result.err().map(|payload| Finding {
        target: target.name,
        input: input.to_vec(),
        message: payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "a panic".into()),
    })
}

fn text(input: &[u8]) -> String {
    String::from_utf8_lossy(input).into_owned()
}

/// Every target. Building them needs a tokio runtime (the token target verifies against a
/// real authenticator of an in-memory HSM).
pub fn targets(runtime: &tokio::runtime::Runtime) -> anyhow::Result<Vec<Target>> {
    let hsm: Hsm = runtime.block_on(
        Hsm::builder()
            .backend(ferrohsm_core::BackendConfig::memory())
            .master_key(ferrohsm_core::MasterKey::from_bytes(&[5; 32])?)
            .build(),
    )?;
    let auth = Arc::new(ferrohsm_server::Authenticator::new(&hsm, "ferrohsm", "ferrohsm", None)?);
    let token = {
        let spec = ferrohsm_server::TokenSpec {
            sub: "fuzz".into(),
            roles: vec!["operator".into()],
            ttl: std::time::Duration::from_secs(600),
            issuer: "ferrohsm".into(),
            audience: "ferrohsm".into(),
            cert_sha256: None,
            minted_by: Vec::new(),
            max_ttl: std::time::Duration::from_secs(3600),
        };
        let key = hsm.token_key();
        let unsigned = ferrohsm_server::unsigned_token(key, &spec).map_err(anyhow::Error::msg)?;
        let signature = key.sign(unsigned.signing_input.as_bytes())?;
        ferrohsm_server::finish_token(&unsigned, &signature)
    };
    let encrypted = runtime.block_on(async {
        let ctx = ferrohsm_core::RequestContext::local("fuzz");
        let key = hsm
            .create_key(&ctx, ferrohsm_core::CreateKey::new(ferrohsm_core::Algorithm::Aes256Gcm))
            .await?;
        let id = ferrohsm_core::KeyRef::Id(key.id);
        let e = hsm.encrypt(&ctx, &id, b"seed", b"").await?;
        let mut export = Vec::new();
        hsm.export_audit(&ctx, &mut export).await?;
        anyhow::Ok((e.ciphertext, export))
    })?;
    let (ciphertext, audit_export) = encrypted;
    let provider = ferrohsm_core::default_provider();
    let verifier = Arc::new(ferrohsm_audit::Verifier::new(provider.clone()));
    let partial = Arc::new(ferrohsm_audit::Verifier::new(provider).allow_partial(true));

    let policy_seed = include_str!("../../docs/policy.md");
    let policy_seed = policy_seed
        .split("```toml\n")
        .skip(1)
        .filter_map(|block| block.split("```").next())
        .map(|b| b.as_bytes().to_vec());
    let keyset_seed = b"[[key]]\nkid = \"a\"\nalgorithm = \"HS256\"\nissuer = \"idp\"\nroles = [\"operator\"]\nsecret = \"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\"\n".to_vec();
    let bodies: Vec<Vec<u8>> = [
        r#"{"algorithm": "aes-256-gcm", "name": "k", "tags": {"a": "b"}, "usages": ["encrypt"]}"#,
        r#"{"plaintext": "aGVsbG8=", "aad": "eA=="}"#,
        r#"{"message": "aGVsbG8=", "algorithm": "ecdsa-p256-sha256"}"#,
        r#"{"sub": "x", "roles": ["admin"], "ttl_seconds": 60}"#,
        r#"{"jti": "abc", "reason": "lost"}"#,
        r#"{"version": 1}"#,
        r#"{"grace_seconds": 0}"#,
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();

    let hsm_for_ct = hsm.clone();
    Ok(vec![
        Target {
            name: "policy",
            seeds: policy_seed.collect(),
            run: Box::new(|input| {
                let _ = ferrohsm_policy::Policy::from_toml(&text(input));
                let _ = ferrohsm_policy::parse_duration(&text(input));
            }),
        },
        Target {
            name: "keyset",
            seeds: vec![keyset_seed],
            run: Box::new(|input| {
                let _ = ferrohsm_server::check_keyset(&text(input), "ferrohsm");
            }),
        },
        Target {
            name: "audit-verifier",
            seeds: vec![audit_export],
            run: Box::new(move |input| {
                let _ = verifier.verify_reader("fuzz", input);
                let _ = partial.verify_reader("fuzz", input);
            }),
        },
        Target {
            name: "ciphertext",
            seeds: vec![ciphertext.into_bytes()],
            run: Box::new(move |input| {
                let _ = ferrohsm_core::parse_ciphertext(&text(input));
                let _ = &hsm_for_ct;
            }),
        },
        Target {
            name: "token",
            seeds: vec![token.into_bytes()],
            run: Box::new(move |input| {
                let _ = auth.verify(&text(input), None);
            }),
        },
        Target {
            name: "request-bodies",
            seeds: bodies,
            run: Box::new(|input| {
                // The bodies the server parses (the REST contract's request types).
                use ferrohsm_api::*;
                let _ = serde_json::from_slice::<CreateKey>(input);
                let _ = serde_json::from_slice::<EncryptRequest>(input);
                let _ = serde_json::from_slice::<DecryptRequest>(input);
                let _ = serde_json::from_slice::<SignRequest>(input);
                let _ = serde_json::from_slice::<VerifyRequest>(input);
                let _ = serde_json::from_slice::<TokenRequest>(input);
                let _ = serde_json::from_slice::<RevokeTokenRequest>(input);
                let _ = serde_json::from_slice::<RollbackRequest>(input);
                let _ = serde_json::from_slice::<DestroyRequest>(input);
                let _ = serde_json::from_slice::<AuditQuery>(input);
                let _ = serde_json::from_slice::<RevokeRequest>(input);
                let _ = serde_json::from_slice::<VoteRequest>(input);
                let _ = serde_json::from_slice::<WrapRequest>(input);
                let _ = serde_json::from_slice::<UnwrapRequest>(input);
            }),
        },
    ])
}

/// Saves a finding under `target/fuzz/crashes` and returns the file.
pub fn save(root: &std::path::Path, finding: &Finding) -> std::io::Result<std::path::PathBuf> {
    let dir = root.join("target/fuzz/crashes");
    std::fs::create_dir_all(&dir)?;
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in &finding.input {
        hash = (hash ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
    }
    let path = dir.join(format!("{}-{hash:016x}.bin", finding.target));
    std::fs::write(&path, &finding.input)?;
    Ok(path)
}
