//! Every route: its success path and its documented errors.

use serde_json::{Value, json};

use crate::harness::{TestServer, aes, b64, unb64};

#[tokio::test]
async fn key_lifecycle_routes() {
    let server = TestServer::start().await;
    let api = server.api(&server.token("olga", &["operator"]));

    // Create: 201 with Location; bad input is 400; a taken name is 409.
    let r = api
        .post(
            "/v1/keys",
            json!({"algorithm": "aes-256-gcm", "name": "orders", "tags": {"team": "a"}}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.body["id"].as_str().unwrap().to_owned();
    assert_eq!(r.headers["location"], format!("/v1/keys/{id}").as_str());
    assert_eq!(api.post("/v1/keys", aes("orders")).await.code(), "conflict");
    let r = api.post("/v1/keys", json!({"algorithm": "des"})).await;
    assert_eq!((r.status, r.code()), (400, "invalid_request"), "{}", r.body);
    let r = api.post("/v1/keys", json!({"algorithm": "aes-256-gcm", "colour": "red"})).await;
    assert_eq!((r.status, r.code()), (400, "invalid_request"));
    assert!(r.body["error"]["message"].as_str().unwrap().contains("colour"));
    let r = api.post("/v1/keys", json!({"algorithm": "aes-256-gcm", "name": "Bad Name"})).await;
    assert_eq!(r.status, 400);
    let big = "x".repeat(100 * 1024);
    let r = api.post("/v1/keys", json!({"algorithm": "aes-256-gcm", "description": big})).await;
    assert_eq!((r.status, r.code()), (413, "payload_too_large"), "{}", r.body);
    let r = api.send("POST", "/v1/keys", None, &[("content-type", "application/json")]).await;
    assert_eq!(r.status, 400);
    let r = api.post("/v1/keys/orders/destroy", json!({"grace_seconds": 1, "pad": big})).await;
    assert_eq!((r.status, r.code()), (413, "payload_too_large"), "optional bodies are limited too");

    // Describe by id and by name; unknown is 404; a malformed reference is 400.
    assert_eq!(api.get(&format!("/v1/keys/{id}")).await.body["name"], "orders");
    assert_eq!(api.get("/v1/keys/orders").await.body["id"], id.as_str());
    assert_eq!(api.get("/v1/keys/missing").await.code(), "not_found");
    assert_eq!(api.get("/v1/keys/NOT%20A%20NAME").await.status, 400);

    // Rotate, roll back, revoke, schedule and cancel destruction.
    let r = api.post("/v1/keys/orders/rotate", json!({})).await;
    assert_eq!((r.status, r.body["current_version"].as_u64()), (200, Some(2)));
    let r = api.post("/v1/keys/orders/rollback", json!({"version": 1})).await;
    assert_eq!((r.status, r.body["current_version"].as_u64()), (200, Some(1)));
    let r = api.post("/v1/keys/orders/rollback", json!({"version": 9})).await;
    assert_eq!((r.status, r.code()), (404, "not_found"));
    let r = api.post("/v1/keys/orders/rollback", json!({})).await;
    assert_eq!(r.status, 400);
    let r = api
        .post("/v1/keys/orders/revoke", json!({"reason": "superseded", "comment": "replaced"}))
        .await;
    assert_eq!((r.status, r.body["state"].as_str()), (200, Some("revoked")));
    let r = api.post("/v1/keys/orders/revoke", json!({"reason": "superseded"})).await;
    assert_eq!((r.status, r.code()), (409, "invalid_state"));
    let r = api.post("/v1/keys/orders/revoke", json!({"reason": "bored"})).await;
    assert_eq!(r.status, 400);
    let r = api.send("POST", "/v1/keys/orders/destroy", None, &[]).await;
    assert_eq!(
        (r.status, r.body["state"].as_str()),
        (200, Some("pending_destruction")),
        "{}",
        r.body
    );
    let r = api.post("/v1/keys/orders/destroy", json!({"grace_seconds": -5})).await;
    assert_eq!((r.status, r.code()), (400, "invalid_request"));
    let r = api.send("POST", "/v1/keys/orders/cancel-destroy", None, &[]).await;
    assert_eq!((r.status, r.body["state"].as_str()), (200, Some("revoked")));
    let r = api.send("POST", "/v1/keys/orders/cancel-destroy", None, &[]).await;
    assert_eq!((r.status, r.code()), (409, "invalid_state"));
}

#[tokio::test]
async fn listing_filters_pages_and_etags() {
    let server = TestServer::start().await;
    let api = server.api(&server.token("olga", &["operator"]));
    for i in 0..5 {
        let team = if i % 2 == 0 { "a" } else { "b" };
        api.create(json!({"algorithm": "aes-256-gcm", "name": format!("k{i}"), "tags": {"team": team, "env": "dev"}})).await;
    }
    api.create(json!({"algorithm": "ec-p256", "name": "signer"})).await;

    let r = api.get("/v1/keys?tag=team:a&tag=env:dev").await;
    let names: Vec<_> = r.body["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["k0", "k2", "k4"]);
    assert_eq!(
        api.get("/v1/keys?algorithm=ec-p256").await.body["keys"].as_array().unwrap().len(),
        1
    );
    assert_eq!(
        api.get("/v1/keys?name_prefix=k&state=active").await.body["keys"].as_array().unwrap().len(),
        5
    );

    // Pages of two, by cursor.
    let mut seen = Vec::new();
    let mut path = "/v1/keys?limit=2".to_owned();
    loop {
        let r = api.get(&path).await;
        for k in r.body["keys"].as_array().unwrap() {
            seen.push(k["name"].as_str().unwrap().to_owned());
        }
        match r.body["next_cursor"].as_str() {
            Some(c) => path = format!("/v1/keys?limit=2&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 6);

    for bad in [
        "limit=0",
        "limit=5000",
        "limit=x",
        "state=sleepy",
        "tag=novalue",
        "cursor=zz",
        "colour=red",
    ] {
        let r = api.get(&format!("/v1/keys?{bad}")).await;
        assert_eq!((r.status, r.code()), (400, "invalid_request"), "{bad}: {}", r.body);
    }

    // ETag: unchanged list answers 304; any acknowledged write changes it.
    let r = api.get("/v1/keys").await;
    let etag = r.headers["etag"].to_str().unwrap().to_owned();
    let r = api.send("GET", "/v1/keys", None, &[("if-none-match", &etag)]).await;
    assert_eq!(r.status, 304);
    api.post("/v1/keys/k0/rotate", json!({})).await;
    let r = api.send("GET", "/v1/keys", None, &[("if-none-match", &etag)]).await;
    assert_eq!(r.status, 200);
    assert_ne!(r.headers["etag"].to_str().unwrap(), etag);
}

#[tokio::test]
async fn crypto_routes() {
    let server = TestServer::start().await;
    let api = server.api(&server.token("svc", &["operator"]));
    api.create(aes("data")).await;
    api.create(json!({"algorithm": "ec-p256", "name": "ec"})).await;
    api.create(json!({"algorithm": "ed25519", "name": "ed"})).await;
    api.create(json!({"algorithm": "rsa-2048", "name": "rsa"})).await;

    // Encrypt and decrypt, with associated data.
    let r = api
        .post("/v1/keys/data/encrypt", json!({"plaintext": b64(b"top secret"), "aad": b64(b"ctx")}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let ct = r.body["ciphertext"].as_str().unwrap().to_owned();
    assert!(ct.starts_with("fhsm:v1:"));
    let r = api.post("/v1/keys/data/decrypt", json!({"ciphertext": ct, "aad": b64(b"ctx")})).await;
    assert_eq!(unb64(r.body["plaintext"].as_str().unwrap()), b"top secret");
    let r =
        api.post("/v1/keys/data/decrypt", json!({"ciphertext": ct, "aad": b64(b"other")})).await;
    assert_eq!((r.status, r.code()), (400, "invalid_ciphertext"));
    let r = api.post("/v1/keys/data/decrypt", json!({"ciphertext": "fhsm:v1:!!"})).await;
    assert_eq!((r.status, r.code()), (400, "invalid_ciphertext"));
    let r = api.post("/v1/keys/data/encrypt", json!({"plaintext": "not base64!"})).await;
    assert_eq!((r.status, r.code()), (400, "invalid_request"));
    let r = api.post("/v1/keys/ec/encrypt", json!({"plaintext": b64(b"x")})).await;
    assert_eq!((r.status, r.code()), (400, "unsupported"));

    // Sign and verify: messages and digests, every signing algorithm.
    for key in ["ec", "ed", "rsa"] {
        let r =
            api.post(&format!("/v1/keys/{key}/sign"), json!({"message": b64(b"artefact")})).await;
        assert_eq!(r.status, 200, "{key}: {}", r.body);
        let sig = r.body["signature"].as_str().unwrap().to_owned();
        let r = api
            .post(
                &format!("/v1/keys/{key}/verify"),
                json!({"message": b64(b"artefact"), "signature": sig}),
            )
            .await;
        assert_eq!(r.body["valid"], true, "{key}");
        let r = api
            .post(
                &format!("/v1/keys/{key}/verify"),
                json!({"message": b64(b"tampered"), "signature": sig}),
            )
            .await;
        assert_eq!((r.status, &r.body["valid"]), (200, &json!(false)), "{key}");
    }
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b"artefact");
    let r = api
        .post(
            "/v1/keys/ec/sign",
            json!({"digest": b64(digest.as_ref()), "algorithm": "ecdsa-p256-sha256"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = api.post("/v1/keys/ec/verify", json!({"message": b64(b"artefact"), "signature": r.body["signature"], "key_version": 1})).await;
    assert_eq!(r.body["valid"], true);
    let r = api
        .post("/v1/keys/ec/sign", json!({"message": b64(b"a"), "digest": b64(digest.as_ref())}))
        .await;
    assert_eq!((r.status, r.code()), (400, "invalid_request"));
    let r = api.post("/v1/keys/ec/sign", json!({})).await;
    assert_eq!(r.status, 400);
    let r = api.post("/v1/keys/data/sign", json!({"message": b64(b"x")})).await;
    assert_eq!((r.status, r.code()), (400, "unsupported"));

    // Wrap and unwrap.
    let material = [7u8; 32];
    let r = api.post("/v1/keys/data/wrap", json!({"key_material": b64(&material)})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let wrapped = r.body["wrapped"].as_str().unwrap().to_owned();
    let r = api.post("/v1/keys/data/unwrap", json!({"wrapped": wrapped})).await;
    assert_eq!(unb64(r.body["key_material"].as_str().unwrap()), material);
    let r = api.post("/v1/keys/data/unwrap", json!({"wrapped": "fhsm:v1:AAAA"})).await;
    assert_eq!((r.status, r.code()), (400, "invalid_ciphertext"));
    let r = api.post("/v1/keys/data/wrap", json!({"key_material": ""})).await;
    assert_eq!(r.status, 400);

    // Public keys: PEM, DER and JWK, of a chosen version.
    let r = api.get("/v1/keys/ec/public").await;
    assert!(r.body["pem"].as_str().unwrap().starts_with("-----BEGIN PUBLIC KEY-----"));
    assert_eq!(
        (r.body["jwk"]["kty"].as_str(), r.body["jwk"]["crv"].as_str()),
        (Some("EC"), Some("P-256"))
    );
    assert_eq!(api.get("/v1/keys/rsa/public?version=1").await.body["jwk"]["kty"], "RSA");
    assert_eq!(api.get("/v1/keys/ed/public").await.body["jwk"]["crv"], "Ed25519");
    assert_eq!(api.get("/v1/keys/ec/public?version=7").await.code(), "not_found");
    assert_eq!(api.get("/v1/keys/ec/public?version=x").await.status, 400);
    assert_eq!(api.get("/v1/keys/data/public").await.code(), "unsupported");
}

#[tokio::test]
async fn approvals_audit_tokens_and_operations_routes() {
    let server = TestServer::start().await;
    let admin = server.api(&server.token("ada", &["admin"]));

    // Approvals: empty list; unknown and malformed ids.
    let r = admin.get("/v1/approvals").await;
    assert_eq!((r.status, r.body["approvals"].as_array().map(Vec::len)), (200, Some(0)));
    let missing = uuid::Uuid::now_v7();
    assert_eq!(admin.get(&format!("/v1/approvals/{missing}")).await.code(), "not_found");
    assert_eq!(admin.get("/v1/approvals/not-a-uuid").await.status, 400);
    assert_eq!(
        admin.send("POST", &format!("/v1/approvals/{missing}/approve"), None, &[]).await.status,
        404
    );
    assert_eq!(
        admin.post(&format!("/v1/approvals/{missing}/deny"), json!({"comment": "no"})).await.status,
        404
    );
    assert_eq!(
        admin.post(&format!("/v1/approvals/{missing}/deny"), json!({"bogus": 1})).await.status,
        400
    );

    // Journey 2: a correlation id reaches the audit record of the signature.
    admin.create(json!({"algorithm": "ec-p256", "name": "release"})).await;
    let r = admin
        .send(
            "POST",
            "/v1/keys/release/sign",
            Some(json!({"message": b64(b"build")})),
            &[("x-request-id", "ci-build-42")],
        )
        .await;
    assert_eq!(r.headers["x-request-id"], "ci-build-42");
    let r = admin.get("/v1/audit?request_id=ci-build-42").await;
    let records = r.body["records"].as_array().unwrap();
    assert_eq!(records.len(), 1, "{}", r.body);
    assert_eq!(
        (records[0]["action"].as_str(), records[0]["outcome"].as_str()),
        (Some("sign"), Some("success"))
    );
    assert_eq!(records[0]["source_ip"], "127.0.0.1");
    // A generated request id when none is given.
    let r = admin.get("/v1/keys").await;
    assert!(uuid::Uuid::parse_str(r.headers["x-request-id"].to_str().unwrap()).is_ok());

    // Audit pages, filters and errors.
    let r = admin.get("/v1/audit?action=create_key&limit=1").await;
    assert_eq!(r.body["records"].as_array().unwrap().len(), 1);
    assert_eq!(admin.get("/v1/audit?outcome=maybe").await.status, 400);
    assert_eq!(admin.get("/v1/audit?limit=0").await.status, 400);
    assert_eq!(admin.get("/v1/audit?cursor=abc").await.status, 400);
    let page1 = admin.get("/v1/audit?limit=2").await;
    let cursor = page1.body["next_cursor"].as_str().unwrap().to_owned();
    let page2 = admin.get(&format!("/v1/audit?limit=2&cursor={cursor}")).await;
    assert!(page2.body["records"][0]["seq"].as_u64() > page1.body["records"][1]["seq"].as_u64());

    let r = admin.send("POST", "/v1/audit/checkpoint", None, &[]).await;
    assert_eq!(r.status, 200);
    let seq = r.body["checkpoint"]["seq"].as_u64().unwrap();
    let r = admin.get("/v1/audit/checkpoint").await;
    assert_eq!(r.body["checkpoint"]["seq"].as_u64(), Some(seq));
    assert!(r.body["public_key_pem"].as_str().unwrap().contains("PUBLIC KEY"));
    let r = admin.get("/v1/audit/verify").await;
    assert_eq!(
        (r.body["valid"].as_bool(), r.body["partial"].as_bool()),
        (Some(true), Some(false)),
        "{}",
        r.body
    );
    assert!(r.body["signatures_checked"].as_u64().unwrap() >= 1);
    let r = admin.get("/v1/audit/export").await;
    let text = r.body.as_str().unwrap();
    assert_eq!(r.headers["content-type"], "application/x-ndjson");
    assert!(text.lines().count() > 5 && text.lines().all(|l| l.starts_with("{\"type\":")));

    // Tokens: the admin issues one; it works; the key is published.
    let r = admin
        .post("/v1/auth/token", json!({"sub": "robot", "roles": ["auditor"], "ttl_seconds": 60}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let robot = server.api(r.body["token"].as_str().unwrap());
    assert_eq!(robot.get("/v1/keys/release").await.status, 200);
    let kid = r.body["kid"].as_str().unwrap().to_owned();
    let jwks =
        server.client().get(format!("{}/.well-known/jwks.json", server.url)).send().await.unwrap();
    let jwks: serde_json::Value = jwks.json().await.unwrap();
    assert_eq!(
        (jwks["keys"][0]["kid"].as_str(), jwks["keys"][0]["alg"].as_str()),
        (Some(kid.as_str()), Some("EdDSA"))
    );
    for bad in [
        json!({"sub": "x", "roles": ["wizard"]}),
        json!({"sub": "", "roles": []}),
        json!({"sub": "x", "roles": [], "ttl_seconds": 999999}),
        json!({"sub": "x"}),
    ] {
        assert_eq!(admin.post("/v1/auth/token", bad.clone()).await.status, 400, "{bad}");
    }
    let operator = server.api(&server.token("olga", &["operator"]));
    assert_eq!(
        operator.post("/v1/auth/token", json!({"sub": "x", "roles": ["admin"]})).await.code(),
        "forbidden"
    );

    // Unknown routes answer the error shape too.
    let r = admin.get("/v1/nothing-here").await;
    assert_eq!((r.status, r.code()), (404, "not_found"));
    assert!(r.body["error"]["request_id"].as_str().is_some());
}

/// Bodies are JSON objects: an array of a struct's fields (which serde would read), a bare
/// value or a whole number written with a fraction of zero are treated as the contract says.
#[tokio::test]
async fn bodies_are_objects_and_whole_numbers_may_carry_a_zero_fraction() {
    let server = TestServer::start().await;
    let api = server.api(&server.token("ada", &["admin"]));
    api.create(aes("shapes")).await;
    for (path, body) in [
        ("/v1/keys/shapes/destroy", json!([])),
        ("/v1/keys/shapes/rollback", json!([1])),
        ("/v1/keys", json!(["aes-256-gcm"])),
        ("/v1/keys/shapes/encrypt", json!("aGVsbG8=")),
    ] {
        let r = api.post(path, body.clone()).await;
        assert_eq!((r.status, r.code()), (400, "invalid_request"), "{path} {body}: {}", r.body);
        assert!(r.body["error"]["message"].as_str().unwrap().contains("JSON object"), "{}", r.body);
    }
    // `null` is no body where the body is optional.
    let r = api.post("/v1/keys/shapes/destroy", Value::Null).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = api.post("/v1/keys/shapes/cancel-destroy", Value::Null).await;
    assert_eq!(r.status, 200, "{}", r.body);
    // 1.0 is the integer 1 (JSON Schema's reading); 1.5 is refused.
    let r = api.post("/v1/keys/shapes/rollback", json!({"version": 1.0})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = api.post("/v1/keys/shapes/rollback", json!({"version": 1.5})).await;
    assert_eq!((r.status, r.code()), (400, "invalid_request"), "{}", r.body);
}
