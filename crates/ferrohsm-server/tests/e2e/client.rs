//! The Rust client (`ferrohsm-api`, feature `client`) against a real server: the shared SDK
//! scenarios (`sdks/testdata/scenarios.json`, which the Go and Python SDKs run too), dual
//! control through the client's helper, retries only where they cannot repeat a side effect,
//! and paging.

use std::collections::HashMap;

use ferrohsm_api::client::{Client, ClientError, RetryPolicy};
use ferrohsm_api::{
    ApprovalState, CreateKey, DecryptRequest, DestroyRequest, EncryptRequest, ErrorCode, ListKeys,
    RevokeRequest, SignRequest, UnwrapRequest, VerifyRequest, VoteRequest, WrapRequest,
};
use serde_json::{Map, Value, json};

use crate::harness::{Options, TestServer};

fn testdata(file: &str) -> String {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../sdks/testdata").join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn client(server: &TestServer, token: &str) -> Client {
    Client::builder(server.url.clone())
        .ca_pem(server.ca_pem.as_bytes().to_vec())
        .token(token)
        .build()
        .unwrap()
}

/// The principals of sdks/testdata/README.md: each token's subject is its name.
const PRINCIPALS: &[(&str, &str)] = &[
    ("admin", "admin"),
    ("operator", "operator"),
    ("auditor", "auditor"),
    ("service", "service"),
    ("approver1", "admin"),
    ("approver2", "operator"),
];

/// Runs one scenario file's steps through the typed client.
struct Runner {
    clients: HashMap<&'static str, Client>,
    run: String,
    vars: HashMap<String, Value>,
}

impl Runner {
    /// `${name}` in every string: a string that is exactly one saved non-string variable
    /// becomes that value (so a saved version stays a number), any other use is textual.
    fn substitute(&self, value: &Value) -> Value {
        match value {
            Value::String(s) => {
                if let Some(name) = s.strip_prefix("${").and_then(|r| r.strip_suffix('}'))
                    && let Some(v) = self.vars.get(name).filter(|v| !v.is_string())
                    && !name.contains('$')
                {
                    return v.clone();
                }
                let mut out = s.replace("${run}", &self.run);
                for (name, v) in &self.vars {
                    let text = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
                    out = out.replace(&format!("${{{name}}}"), &text);
                }
                Value::String(out)
            }
            Value::Array(items) => Value::Array(items.iter().map(|v| self.substitute(v)).collect()),
            Value::Object(map) => {
                Value::Object(map.iter().map(|(k, v)| (k.clone(), self.substitute(v))).collect())
            }
            other => other.clone(),
        }
    }

    async fn step(&mut self, step: &Value) -> Result<(), String> {
        let call = step["call"].as_str().ok_or("a step without call")?;
        let who = step.get("as").and_then(Value::as_str).unwrap_or("operator");
        let mut client = self.clients.get(who).ok_or(format!("no principal {who}"))?.clone();
        let mut input = match self.substitute(step.get("input").unwrap_or(&json!({}))) {
            Value::Object(map) => map,
            other => return Err(format!("input is not an object: {other}")),
        };
        if let Some(id) = input.remove("approval_id") {
            client = client.with_approval(uuid(&id)?);
        }
        let (outcome, count) = self.call(&client, call, input).await?;
        let expect = &step["expect"];
        let saved = match (&outcome, expect) {
            (Err(ClientError::ApprovalRequired(a)), e) if e["approval_required"] == true => {
                let mut value = serde_json::to_value(a).map_err(|e| e.to_string())?;
                value["approval_id"] = json!(a.id);
                value
            }
            (Err(error), e) if e.get("error").is_some() => {
                let code = error.code();
                if Some(code.as_str()) != e["error"].as_str()
                    || error.status().map(u64::from) != e["status"].as_u64()
                {
                    return Err(format!("expected {e}, got {error}"));
                }
                return Ok(());
            }
            (Ok(value), e) if e.get("status").is_some() => {
                if let Some(expected) = e.get("count")
                    && Some(json!(count)) != Some(expected.clone())
                {
                    return Err(format!("expected {expected} items, gathered {count}"));
                }
                value.clone()
            }
            (Ok(value), e) => return Err(format!("expected {e}, got success {value}")),
            (Err(error), e) => return Err(format!("expected {e}, got {error}")),
        };
        if let Some(expected) = expect.get("output") {
            let expected = self.substitute(expected);
            if !subset(&expected, &saved) {
                return Err(format!("expected output {expected}, got {saved}"));
            }
        }
        if let Some(Value::Object(save)) = step.get("save") {
            for (name, path) in save {
                let path = path.as_str().ok_or("a save path is not a string")?;
                let value = path
                    .split('.')
                    .try_fold(&saved, |v, part| match part.parse::<usize>() {
                        Ok(i) if v.is_array() => v.get(i),
                        _ => v.get(part),
                    })
                    .ok_or(format!("no {path} in {saved}"))?;
                self.vars.insert(name.clone(), value.clone());
            }
        }
        Ok(())
    }

    /// Calls the client's method for `call`: its result as REST JSON, and for list calls the
    /// number of items every page holds.
    async fn call(
        &self,
        client: &Client,
        call: &str,
        mut input: Map<String, Value>,
    ) -> Result<(Result<Value, ClientError>, usize), String> {
        let mut take = |name: &str| input.remove(name);
        let key = take("key").and_then(|k| k.as_str().map(str::to_owned)).unwrap_or_default();
        let id = take("id");
        fn body<T: serde::de::DeserializeOwned>(input: Map<String, Value>) -> Result<T, String> {
            serde_json::from_value(Value::Object(input)).map_err(|e| format!("body: {e}"))
        }
        fn json<T: serde::Serialize>(r: Result<T, ClientError>) -> Result<Value, ClientError> {
            r.map(|v| serde_json::to_value(v).unwrap_or(Value::Null))
        }
        let mut count = 0;
        let result = match call {
            "create_key" => json(client.create_key(&body::<CreateKey>(input)?).await),
            "describe_key" => json(client.describe_key(&key).await),
            "rotate_key" => json(client.rotate_key(&key).await),
            "rollback_key" => {
                let version = input.get("version").and_then(Value::as_u64).ok_or("no version")?;
                json(client.rollback_key(&key, version as u32).await)
            }
            "revoke_key" => json(client.revoke_key(&key, &body::<RevokeRequest>(input)?).await),
            "destroy_key" => json(client.destroy_key(&key, &body::<DestroyRequest>(input)?).await),
            "cancel_destroy" => json(client.cancel_destroy(&key).await),
            "encrypt" => json(client.encrypt(&key, &body::<EncryptRequest>(input)?).await),
            "decrypt" => json(client.decrypt(&key, &body::<DecryptRequest>(input)?).await),
            "sign" => json(client.sign(&key, &body::<SignRequest>(input)?).await),
            "verify" => json(client.verify(&key, &body::<VerifyRequest>(input)?).await),
            "wrap" => json(client.wrap(&key, &body::<WrapRequest>(input)?).await),
            "unwrap" => json(client.unwrap(&key, &body::<UnwrapRequest>(input)?).await),
            "public_key" => {
                let version = input.get("version").and_then(Value::as_u64).map(|v| v as u32);
                json(client.public_key(&key, version).await)
            }
            "list_keys" => {
                let text = |name: &str| input.get(name).and_then(Value::as_str).map(str::to_owned);
                let query = ListKeys {
                    limit: input.get("limit").and_then(Value::as_u64).map(|l| l as u32),
                    algorithm: text("algorithm").map(|a| ferrohsm_api::Algorithm::from_wire(&a)),
                    state: text("state").map(|s| ferrohsm_api::KeyState::from_wire(&s)),
                    tags: text("tag")
                        .and_then(|t| t.split_once(':').map(|(k, v)| (k.to_owned(), v.to_owned())))
                        .into_iter()
                        .collect(),
                    name_prefix: text("name_prefix"),
                    cursor: None,
                };
                let first = client.list_keys(&query).await;
                if first.is_ok() {
                    let mut pages = client.key_pages(query);
                    while let Some(page) = pages.next().await {
                        count += page.map_err(|e| e.to_string())?.keys.len();
                    }
                }
                json(first)
            }
            "list_approvals" => {
                let limit = input.get("limit").and_then(Value::as_u64).map(|l| l as u32);
                let list = client.list_approvals(limit).await;
                count = list.as_ref().map_or(0, |l| l.approvals.len());
                json(list)
            }
            "describe_approval" => {
                json(client.describe_approval(uuid(&id.unwrap_or_default())?).await)
            }
            "approve" => {
                let id = uuid(&id.unwrap_or_default())?;
                json(client.approve(id, &body::<VoteRequest>(input)?).await)
            }
            "deny" => {
                let id = uuid(&id.unwrap_or_default())?;
                json(client.deny(id, &body::<VoteRequest>(input)?).await)
            }
            "audit_records" => {
                let query: ferrohsm_api::AuditQuery = body(input)?;
                let first = client.audit_records(&query).await;
                if first.is_ok() {
                    let mut pages = client.audit_pages(query);
                    while let Some(page) = pages.next().await {
                        count += page.map_err(|e| e.to_string())?.records.len();
                    }
                }
                json(first)
            }
            "audit_verify" => json(client.audit_verify().await),
            other => return Err(format!("unknown call {other}")),
        };
        Ok((result, count))
    }
}

fn uuid(value: &Value) -> Result<uuid::Uuid, String> {
    value.as_str().and_then(|s| s.parse().ok()).ok_or(format!("{value} is not a UUID"))
}

/// `expected` is a subset of `actual`: objects by their fields (a null matches a null or
/// absent field), arrays whole, numbers by value.
fn subset(expected: &Value, actual: &Value) -> bool {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => e.iter().all(|(k, v)| match a.get(k) {
            Some(av) => subset(v, av),
            None => v.is_null(),
        }),
        (Value::Null, Value::Null) => true,
        (Value::Array(e), Value::Array(a)) => {
            e.len() == a.len() && e.iter().zip(a).all(|(e, a)| subset(e, a))
        }
        (Value::Number(e), Value::Number(a)) => e.as_f64() == a.as_f64(),
        (e, a) => e == a,
    }
}

/// The scenarios every SDK runs, through the Rust client, against a real server with the
/// scenario policy: the one `cargo xtask test` starts for the Go and Python SDKs when it
/// passes `FERROHSM_SCENARIO_TOKENS` (with `FERROHSM_SERVER` and `FERROHSM_CA_CERT`), else
/// one of its own.
#[tokio::test]
async fn the_shared_sdk_scenarios_pass_through_the_rust_client() {
    let shared = std::env::var("FERROHSM_SCENARIO_TOKENS").ok().map(|file| {
        let tokens: HashMap<String, String> =
            serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
        let url = std::env::var("FERROHSM_SERVER").unwrap();
        let ca = std::fs::read(std::env::var("FERROHSM_CA_CERT").unwrap()).unwrap();
        (url, ca, tokens)
    });
    let own = match shared {
        Some(_) => None,
        None => Some(
            TestServer::start_with(Options {
                policy: Some(testdata("policy.toml")),
                ..Options::default()
            })
            .await,
        ),
    };
    let clients = PRINCIPALS
        .iter()
        .map(|(name, role)| {
            let c = match (&shared, &own) {
                (Some((url, ca, tokens)), _) => Client::builder(url.clone())
                    .ca_pem(ca.clone())
                    .token(tokens[*name].clone())
                    .build()
                    .unwrap(),
                (None, Some(server)) => client(server, &server.token(name, &[role])),
                (None, None) => unreachable!(),
            };
            (*name, c)
        })
        .collect();
    let file: Value = serde_json::from_str(&testdata("scenarios.json")).unwrap();
    assert_eq!(file["version"], 1);
    let scenarios = file["scenarios"].as_array().unwrap();
    assert!(scenarios.len() >= 10, "the shared scenarios shrank");
    let mut runner =
        Runner { clients, run: format!("rs{}", std::process::id()), vars: HashMap::new() };
    for scenario in scenarios {
        runner.vars.clear();
        for (i, step) in scenario["steps"].as_array().unwrap().iter().enumerate() {
            if let Err(e) = runner.step(step).await {
                panic!("scenario {:?}, step {i} ({}): {e}", scenario["name"], step["call"]);
            }
        }
    }
}

const DUAL: &str = r#"
version = 1
[[tag_policy]]
name = "dual"
match = { env = "prod" }
[tag_policy.dual_control]
operations = ["encrypt"]
quorum = 1
approver_roles = ["admin"]
expires_after = "1h"

[rate_limit]
capacity = 4
refill_per_second = 1
weights = { create_key = 1 }
"#;

/// The dual-control helper asks, hands the approval over, and repeats with its id; a 429 is
/// retried after `Retry-After` for an encryption and never for a create.
#[tokio::test]
async fn dual_control_helper_and_retries_only_where_safe() {
    let server =
        TestServer::start_with(Options { policy: Some(DUAL.into()), ..Options::default() }).await;
    let olga = client(&server, &server.token("olga", &["operator"]));
    let ada = client(&server, &server.token("ada", &["admin"]));
    olga.create_key(
        &CreateKey::new(ferrohsm_api::Algorithm::Aes256Gcm).name("prod").tag("env", "prod"),
    )
    .await
    .unwrap();
    let request = EncryptRequest { plaintext: b"hello".to_vec().into(), aad: None };
    let encrypted = olga
        .with_dual_control(
            |c| {
                let request = request.clone();
                async move { c.encrypt("prod", &request).await }
            },
            |approval| {
                let ada = ada.clone();
                async move {
                    assert_eq!(approval.state, ApprovalState::Pending);
                    let voted = ada.approve(approval.id, &VoteRequest::default()).await?;
                    assert_eq!(voted.state, ApprovalState::Approved);
                    Ok(())
                }
            },
        )
        .await
        .unwrap();
    assert!(encrypted.ciphertext.starts_with("fhsm:v1:"));

    // The bucket holds 4 and refills 1/s: a burst of creates is refused without retrying; an
    // encryption is retried after Retry-After and succeeds.
    let patient = Client::builder(server.url.clone())
        .ca_pem(server.ca_pem.as_bytes().to_vec())
        .token(server.token("ivy", &["operator"]))
        .retry(RetryPolicy { max_retries: 4, ..RetryPolicy::default() })
        .build()
        .unwrap();
    let mut refused = None;
    for i in 0..8 {
        match patient
            .create_key(
                &CreateKey::new(ferrohsm_api::Algorithm::Aes256Gcm).name(format!("burst-{i}")),
            )
            .await
        {
            Ok(_) => {}
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    let refused = refused.expect("a burst of creates is rate limited");
    assert_eq!(refused.code(), ErrorCode::RateLimited, "{refused}");
    assert!(matches!(refused, ClientError::Api { retry_after: Some(_), .. }));
    let out = patient.encrypt("burst-0", &request).await;
    assert!(out.is_ok(), "the encryption was retried until the bucket refilled: {out:?}");
}

/// Pages follow `next_cursor` to the end, and a list call reads every key once.
#[tokio::test]
async fn key_pages_follow_the_cursor() {
    let server = TestServer::start().await;
    let ada = client(&server, &server.token("ada", &["admin"]));
    for i in 0..5 {
        let request = CreateKey::new(ferrohsm_api::Algorithm::Aes256Gcm)
            .name(format!("paged-{i}"))
            .tag("set", "paged");
        ada.create_key(&request).await.unwrap();
    }
    let query = ListKeys {
        limit: Some(2),
        tags: vec![("set".into(), "paged".into())],
        ..ListKeys::default()
    };
    let mut pages = ada.key_pages(query);
    let mut names = Vec::new();
    let mut count = 0;
    while let Some(page) = pages.next().await {
        count += 1;
        names.extend(page.unwrap().keys.into_iter().filter_map(|k| k.name));
    }
    assert_eq!(count, 3);
    assert_eq!(names, (0..5).map(|i| format!("paged-{i}")).collect::<Vec<_>>());
}
