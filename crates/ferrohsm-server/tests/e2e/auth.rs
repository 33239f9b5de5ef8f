//! Authentication attacks, each refused with 401 and audited; every keyset algorithm accepted;
//! certificate-bound tokens.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ferrohsm_server::{ClientAuth, TokenSpec};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};

use crate::harness::{AUDIENCE, ISSUER, Options, TestServer};

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

fn claims(iss: &str, aud: &str, exp: u64, nbf: Option<u64>) -> Value {
    let mut c = json!({"sub": "mallory", "roles": ["admin"], "iss": iss, "aud": aud, "exp": exp, "iat": now()});
    if let Some(nbf) = nbf {
        c["nbf"] = json!(nbf);
    }
    c
}

fn sign(alg: Algorithm, kid: &str, key: &EncodingKey, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_owned());
    encode(&header, claims, key).unwrap()
}

fn raw_token(header: &Value, claims: &Value, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        URL_SAFE_NO_PAD.encode(signature)
    )
}

async fn status_with(server: &TestServer, token: Option<&str>) -> u16 {
    let mut req = server.client().get(format!("{}/v1/keys", server.url));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn every_keyset_algorithm_is_accepted() {
    let server = TestServer::start().await;
    let s = &server.signers;
    let good = claims("https://ci.example", AUDIENCE, now() + 300, None);
    let tokens = [
        sign(Algorithm::HS256, "ci-hs256", &EncodingKey::from_secret(&s.hs256), &good),
        sign(
            Algorithm::ES256,
            "ci-es256",
            &EncodingKey::from_ec_pem(s.es256.serialize_pem().as_bytes()).unwrap(),
            &good,
        ),
        sign(
            Algorithm::RS256,
            "ci-rs256",
            &EncodingKey::from_rsa_pem(s.rs256.serialize_pem().as_bytes()).unwrap(),
            &good,
        ),
        sign(
            Algorithm::EdDSA,
            "ops-eddsa",
            &EncodingKey::from_ed_pem(s.ed25519.serialize_pem().as_bytes()).unwrap(),
            &claims("https://ops.example", AUDIENCE, now() + 300, None),
        ),
        server.token("ada", &["admin"]),
        // `aud` may be a list that includes ours.
        sign(
            Algorithm::HS256,
            "ci-hs256",
            &EncodingKey::from_secret(&s.hs256),
            &json!({"sub": "ci", "roles": ["operator"], "iss": "https://ci.example", "aud": ["other", AUDIENCE], "exp": now() + 300, "iat": now()}),
        ),
    ];
    for token in &tokens {
        assert_eq!(status_with(&server, Some(token)).await, 200, "{token}");
    }

    // The token's session id reaches the audit record.
    let mut with_sid = claims("https://ci.example", AUDIENCE, now() + 300, None);
    with_sid["sid"] = json!("session-1234");
    let token = sign(Algorithm::HS256, "ci-hs256", &EncodingKey::from_secret(&s.hs256), &with_sid);
    let r = server
        .client()
        .get(format!("{}/v1/keys", server.url))
        .bearer_auth(&token)
        .header("x-request-id", "with-session")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let auditor = server.api(&server.token("audrey", &["auditor"]));
    let r = auditor.get("/v1/audit?request_id=with-session").await;
    assert_eq!(r.body["records"][0]["session"], "session-1234", "{}", r.body);
}

#[tokio::test]
async fn attacks_are_refused_with_401_and_audited() {
    let server = TestServer::start().await;
    let s = &server.signers;
    let hs = EncodingKey::from_secret(&s.hs256);
    let ci = "https://ci.example";
    let valid = sign(Algorithm::HS256, "ci-hs256", &hs, &claims(ci, AUDIENCE, now() + 300, None));
    let mut bad_signature = valid.clone().into_bytes();
    let n = bad_signature.len();
    bad_signature[n - 10] = if bad_signature[n - 10] == b'A' { b'B' } else { b'A' };
    let bad_signature = String::from_utf8(bad_signature).unwrap();
    let rsa_public_pem = s.rs256.public_key_pem();
    let attacks: Vec<(&str, Option<String>)> = vec![
        ("no token", None),
        ("malformed", Some("not.a.jwt".into())),
        (
            "expired",
            Some(sign(Algorithm::HS256, "ci-hs256", &hs, &claims(ci, AUDIENCE, now() - 600, None))),
        ),
        (
            "not yet valid",
            Some(sign(
                Algorithm::HS256,
                "ci-hs256",
                &hs,
                &claims(ci, AUDIENCE, now() + 3600, Some(now() + 1800)),
            )),
        ),
        (
            "wrong issuer",
            Some(sign(
                Algorithm::HS256,
                "ci-hs256",
                &hs,
                &claims("https://evil.example", AUDIENCE, now() + 300, None),
            )),
        ),
        (
            "wrong audience",
            Some(sign(
                Algorithm::HS256,
                "ci-hs256",
                &hs,
                &claims(ci, "someone-else", now() + 300, None),
            )),
        ),
        (
            "unknown kid",
            Some(sign(
                Algorithm::HS256,
                "who-knows",
                &hs,
                &claims(ci, AUDIENCE, now() + 300, None),
            )),
        ),
        (
            "no kid",
            Some(
                encode(
                    &Header::new(Algorithm::HS256),
                    &claims(ci, AUDIENCE, now() + 300, None),
                    &hs,
                )
                .unwrap(),
            ),
        ),
        ("bad signature", Some(bad_signature)),
        (
            "alg none",
            Some(raw_token(
                &json!({"alg": "none", "kid": "ci-hs256", "typ": "JWT"}),
                &claims(ci, AUDIENCE, now() + 300, None),
                b"",
            )),
        ),
        // RS/HS confusion: HMAC keyed with the RSA key's public PEM, naming the RSA kid.
        (
            "HS256 with RSA public key",
            Some(sign(
                Algorithm::HS256,
                "ci-rs256",
                &EncodingKey::from_secret(rsa_public_pem.as_bytes()),
                &claims(ci, AUDIENCE, now() + 300, None),
            )),
        ),
        (
            "no exp",
            Some(sign(
                Algorithm::HS256,
                "ci-hs256",
                &hs,
                &json!({"sub": "m", "iss": ci, "aud": AUDIENCE}),
            )),
        ),
        (
            "forged own-key token",
            Some(sign(
                Algorithm::HS256,
                server.hsm().token_key().kid(),
                &hs,
                &claims(ISSUER, AUDIENCE, now() + 300, None),
            )),
        ),
    ];
    for (name, token) in &attacks {
        let mut req = server
            .client()
            .get(format!("{}/v1/keys", server.url))
            .header("x-request-id", format!("attack-{}", name.replace(' ', "-")));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 401, "{name}");
        assert_eq!(resp.headers()["www-authenticate"], "Bearer");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unauthenticated", "{name}");
    }
    // Each attempt left a denied `authenticate` record naming its request.
    let auditor = server.api(&server.token("audrey", &["auditor"]));
    let r = auditor.get("/v1/audit?action=authenticate&outcome=denied&limit=100").await;
    let records = r.body["records"].as_array().unwrap();
    for (name, _) in &attacks {
        let id = format!("attack-{}", name.replace(' ', "-"));
        let record = records.iter().find(|r| r["request_id"] == id.as_str());
        let record = record.unwrap_or_else(|| panic!("no audit record for {name}"));
        assert!(record["message"].as_str().unwrap().starts_with("unauthenticated: "), "{record}");
        assert_eq!(record["source_ip"], "127.0.0.1");
    }
}

#[tokio::test]
async fn certificate_bound_tokens_need_that_certificate() {
    let server =
        TestServer::start_with(Options { client_auth: ClientAuth::Optional, ..Options::default() })
            .await;
    let (cert, key, fingerprint) = server.client_pki.issue(&["ci-runner"]);
    let (other_cert, other_key, _) = server.client_pki.issue(&["someone-else"]);
    let bound = server.token_spec(TokenSpec {
        sub: "ci-runner".into(),
        roles: vec!["operator".into()],
        ttl: Duration::from_secs(300),
        issuer: ISSUER.into(),
        audience: AUDIENCE.into(),
        cert_sha256: Some(fingerprint.clone()),
        minted_by: Vec::new(),
        max_ttl: Duration::from_secs(86_400),
    });
    let get = |client: reqwest::Client| {
        let url = format!("{}/v1/keys", server.url);
        let bound = bound.clone();
        async move { client.get(url).bearer_auth(bound).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(get(server.client()).await, 401, "no client certificate");
    assert_eq!(
        get(server.client_with(Some((&other_cert, &other_key)))).await,
        401,
        "another certificate"
    );
    assert_eq!(get(server.client_with(Some((&cert, &key)))).await, 200, "the bound certificate");

    // The fingerprint reaches the audit record.
    let api = crate::harness::Api {
        client: server.client_with(Some((&cert, &key))),
        url: server.url.clone(),
        token: bound.clone(),
    };
    api.create(json!({"algorithm": "aes-256-gcm", "name": "bound"})).await;
    let auditor = server.api(&server.token("audrey", &["auditor"]));
    let r = auditor.get("/v1/audit?action=create_key").await;
    assert_eq!(r.body["records"][0]["client_fingerprint"], fingerprint.as_str());
    // Time windows: records since an hour ago include it, records before then do not, and a
    // time that is not RFC 3339 is a 400.
    let hour_ago = (time::OffsetDateTime::now_utc() - time::Duration::hours(1))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let r = auditor.get(&format!("/v1/audit?action=create_key&since={hour_ago}")).await;
    assert_eq!(r.body["records"].as_array().unwrap().len(), 1, "{}", r.body);
    let r = auditor.get(&format!("/v1/audit?action=create_key&until={hour_ago}")).await;
    assert_eq!(r.body["records"].as_array().unwrap().len(), 0, "{}", r.body);
    let r = auditor.get("/v1/audit?since=yesterday").await;
    assert_eq!(r.status, 400, "{}", r.body);
    let r = auditor.get("/v1/audit?action=authenticate").await;
    let reasons: Vec<_> = r.body["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["message"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(reasons, ["unauthenticated: certificate_mismatch"; 2]);
}

#[tokio::test]
async fn required_client_certificates_are_enforced_by_tls() {
    let server =
        TestServer::start_with(Options { client_auth: ClientAuth::Required, ..Options::default() })
            .await;
    let token = server.token("ada", &["admin"]);
    let without =
        server.client().get(format!("{}/v1/keys", server.url)).bearer_auth(&token).send().await;
    assert!(without.is_err(), "a connection without a client certificate must fail the handshake");
    let stranger = crate::harness::Pki::new("unknown CA");
    let (cert, key, _) = stranger.issue(&["stranger"]);
    let r = server
        .client_with(Some((&cert, &key)))
        .get(format!("{}/v1/keys", server.url))
        .bearer_auth(&token)
        .send()
        .await;
    assert!(r.is_err(), "a certificate from another CA must fail the handshake");
    let (cert, key, _) = server.client_pki.issue(&["trusted"]);
    let r = server
        .client_with(Some((&cert, &key)))
        .get(format!("{}/v1/keys", server.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}
