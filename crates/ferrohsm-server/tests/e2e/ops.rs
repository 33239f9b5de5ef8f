//! Health, readiness, metrics, the OpenAPI document, and graceful shutdown.

use serde_json::{Value, json};

use crate::harness::{TestServer, aes, b64};

#[tokio::test]
async fn health_readiness_and_metrics() {
    let server = TestServer::start().await;
    let get = |path: &str| server.client().get(format!("{}{path}", server.url)).send();
    let r = get("/healthz").await.unwrap();
    assert_eq!(r.status(), 200);
    let health: Value = r.json().await.unwrap();
    assert_eq!(health["status"], "ok");
    let expected = match crate::harness::backend_kind() {
        ferrohsm_core::BackendKind::Sqlite => ("sqlite", "sqlite"),
        ferrohsm_core::BackendKind::Postgres => ("postgres", "postgres"),
        _ => ("filesystem", "file"),
    };
    assert_eq!(
        (health["store"]["detail"].as_str(), health["audit"]["detail"].as_str()),
        (Some(expected.0), Some(expected.1))
    );
    assert!(health["version"].as_str().is_some() && health["seal"]["status"] == "ok");
    assert_eq!(get("/readyz").await.unwrap().status(), 200);

    let api = server.api(&server.token("ada", &["admin"]));
    api.create(aes("m")).await;
    api.post("/v1/keys/m/encrypt", json!({"plaintext": b64(b"x")})).await;
    let _ = server.client().get(format!("{}/v1/keys", server.url)).send().await;
    let text = get("/metrics").await.unwrap().text().await.unwrap();
    for family in [
        "ferrohsm_http_requests_total",
        "ferrohsm_http_request_duration_seconds_bucket",
        "ferrohsm_crypto_operations_total",
        "ferrohsm_auth_failures_total",
        "ferrohsm_key_cache_hits_total",
        "ferrohsm_audit_records_total",
        "ferrohsm_keys",
    ] {
        assert!(text.contains(family), "{family} missing from:\n{text}");
    }
    assert!(text.contains(r#"route="/v1/keys/{key}/encrypt""#), "{text}");
    assert!(text.contains(r#"ferrohsm_keys{state="active"} 1"#), "{text}");
}

#[tokio::test]
async fn the_openapi_document_validates_and_lists_every_route() {
    let server = TestServer::start().await;
    let doc: Value = server
        .client()
        .get(format!("{}/openapi.json", server.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let expected = [
        ("post", "/v1/keys"),
        ("get", "/v1/keys"),
        ("get", "/v1/keys/{key}"),
        ("post", "/v1/keys/{key}/rotate"),
        ("post", "/v1/keys/{key}/rollback"),
        ("post", "/v1/keys/{key}/revoke"),
        ("post", "/v1/keys/{key}/destroy"),
        ("post", "/v1/keys/{key}/cancel-destroy"),
        ("post", "/v1/keys/{key}/encrypt"),
        ("post", "/v1/keys/{key}/decrypt"),
        ("post", "/v1/keys/{key}/sign"),
        ("post", "/v1/keys/{key}/verify"),
        ("post", "/v1/keys/{key}/wrap"),
        ("post", "/v1/keys/{key}/unwrap"),
        ("get", "/v1/keys/{key}/public"),
        ("get", "/v1/approvals"),
        ("get", "/v1/approvals/{id}"),
        ("post", "/v1/approvals/{id}/approve"),
        ("post", "/v1/approvals/{id}/deny"),
        ("get", "/v1/audit"),
        ("get", "/v1/audit/verify"),
        ("get", "/v1/audit/checkpoint"),
        ("post", "/v1/audit/checkpoint"),
        ("get", "/v1/audit/export"),
        ("post", "/v1/auth/token"),
        ("post", "/v1/auth/revoke"),
        ("get", "/healthz"),
        ("get", "/readyz"),
        ("get", "/metrics"),
        ("get", "/openapi.json"),
        ("get", "/.well-known/jwks.json"),
    ];
    let paths = doc["paths"].as_object().unwrap();
    for (method, path) in expected {
        assert!(paths.get(path).and_then(|p| p.get(method)).is_some(), "{method} {path} missing");
    }
    let listed: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
    assert_eq!(listed, expected.len(), "the document lists routes the test does not know");

    // Validate with an independent validator (installed by `cargo xtask test`).
    let file = server.dir.path().join("openapi.json");
    std::fs::write(&file, doc.to_string()).unwrap();
    let out = std::process::Command::new("python3")
        .args(["-m", "openapi_spec_validator"])
        .arg(&file)
        .output()
        .expect("python3 is needed to validate the OpenAPI document");
    assert!(
        out.status.success(),
        "openapi-spec-validator refused the document (install it with `cargo xtask test`):\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `sdks/openapi.json`, from which the SDKs are checked, is the document the server serves.
#[tokio::test]
async fn the_committed_openapi_document_is_the_one_served() {
    let server = TestServer::start().await;
    let served: Value = server
        .client()
        .get(format!("{}/openapi.json", server.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../sdks/openapi.json");
    let committed: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert!(
        served == committed,
        "sdks/openapi.json differs from the served document: run `cargo xtask codegen` and commit it"
    );
    // Typed: enumerations are listed, and every body schema has properties.
    let schemas = &served["components"]["schemas"];
    assert!(schemas["Algorithm"]["enum"].as_array().is_some_and(|v| v.len() >= 10));
    assert_eq!(schemas["KeyInfo"]["properties"]["state"]["$ref"], "#/components/schemas/KeyState");
    assert!(schemas["AuditRecord"]["properties"]["hash"]["pattern"].is_string());
    for (name, schema) in schemas.as_object().unwrap() {
        let untyped = schema["type"] == "object" && schema.get("properties").is_none();
        assert!(!untyped, "{name} is an untyped object");
    }
    let limit = served["paths"]["/v1/keys"]["get"]["parameters"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["name"] == "limit"))
        .map(|p| p["schema"]["maximum"].clone());
    assert_eq!(limit, Some(json!(1000)));
}

#[tokio::test]
async fn shutdown_drains_and_checkpoints_the_audit_log() {
    let mut server = TestServer::start().await;
    let api = server.api(&server.token("ada", &["admin"]));
    api.create(aes("before-shutdown")).await;
    let data = server.dir.path().join("data");
    server.stop().await;
    // The last line of the log is a checkpoint written at shutdown (read back offline, from
    // whichever backend the suite runs on).
    let provider = ferrohsm_core::default_provider();
    let master = ferrohsm_core::MasterKey::from_bytes(&[42u8; 32]).unwrap();
    let keys =
        std::sync::Arc::new(ferrohsm_core::derive_audit_keys(provider.as_ref(), &master).unwrap());
    let backends = crate::harness::backend(&data).open(provider, keys).await.unwrap();
    let mut export = Vec::new();
    backends.audit.export(&mut export).await.unwrap();
    let text = String::from_utf8(export).unwrap();
    assert!(text.lines().last().unwrap().starts_with(r#"{"type":"checkpoint""#), "{text}");
    // And the server no longer accepts connections.
    assert!(api.client.get(format!("{}/healthz", api.url)).send().await.is_err());
}
