//! The dashboard (`/ui`) over real TLS without a browser: sessions, CSRF, same-origin checks,
//! security headers, a lower role, revocation, certificate-bound tokens, escaping, floods and
//! oversized forms. The browser journeys are in `ui-tests/` (run by `cargo xtask test`).

use std::time::Duration;

use ferrohsm_server::{ClientAuth, TokenSpec};
use serde_json::json;

use crate::harness::{AUDIENCE, ISSUER, Options, TestServer, aes};

/// A browser-like client of one person: keeps the session cookie, follows no redirects.
struct Person {
    client: reqwest::Client,
    url: String,
    cookie: Option<String>,
}

struct Page {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Page {
    /// The value of the first hidden `_csrf` field.
    fn csrf(&self) -> String {
        let at = self.body.find("name=\"_csrf\" value=\"").expect("a form with a CSRF token");
        let rest = &self.body[at + "name=\"_csrf\" value=\"".len()..];
        rest[..rest.find('"').unwrap()].to_owned()
    }

    fn location(&self) -> &str {
        self.headers.get("location").map(|v| v.to_str().unwrap()).unwrap_or("")
    }
}

impl Person {
    fn new(server: &TestServer, identity: Option<(&str, &str)>) -> Person {
        let ca = reqwest::Certificate::from_pem(server.ca_pem.as_bytes()).unwrap();
        let mut builder = reqwest::Client::builder()
            .tls_certs_only([ca])
            .redirect(reqwest::redirect::Policy::none());
        if let Some((cert, key)) = identity {
            let pem = format!("{cert}{key}");
            builder = builder.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
        }
        Person { client: builder.build().unwrap(), url: server.url.clone(), cookie: None }
    }

    async fn send(&mut self, request: reqwest::RequestBuilder) -> Page {
        let request = match &self.cookie {
            Some(c) => request.header("cookie", c.clone()),
            None => request,
        };
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        for set in headers.get_all("set-cookie") {
            let set = set.to_str().unwrap();
            let pair = set.split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            let others: Vec<String> = self
                .cookie
                .iter()
                .flat_map(|c| c.split("; "))
                .filter(|c| !c.starts_with(&format!("{name}=")))
                .map(str::to_owned)
                .collect();
            let mut all = others;
            if !value.is_empty() {
                all.push(pair.to_owned());
            }
            self.cookie = (!all.is_empty()).then(|| all.join("; "));
        }
        Page { status, headers, body: response.text().await.unwrap() }
    }

    async fn get(&mut self, path: &str) -> Page {
        let request = self.client.get(format!("{}{path}", self.url));
        self.send(request).await
    }

    /// Posts a form as the dashboard's own page would (same origin).
    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let request = self
            .client
            .post(format!("{}{path}", self.url))
            .header("origin", self.url.clone())
            .header("sec-fetch-site", "same-origin")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(serde_urlencoded::to_string(form).unwrap());
        self.send(request).await
    }

    /// Signs in with `token`; returns the answer to the form.
    async fn sign_in(&mut self, token: &str) -> Page {
        let form = self.get("/ui/sign-in").await;
        assert_eq!(form.status, 200);
        let csrf = form.csrf();
        self.post("/ui/sign-in", &[("_csrf", &csrf), ("token", token)]).await
    }

    fn session(&self) -> String {
        self.cookie
            .as_deref()
            .and_then(|c| c.split("; ").find(|c| c.starts_with("__Host-ferrohsm-session=")))
            .expect("a session cookie")
            .to_owned()
    }
}

async fn signed_in(server: &TestServer, token: &str) -> Person {
    let mut person = Person::new(server, None);
    let answer = person.sign_in(token).await;
    assert_eq!((answer.status, answer.location()), (303, "/ui/keys"), "{}", answer.body);
    person
}

#[tokio::test]
async fn every_answer_carries_the_security_headers_and_the_session_cookie_is_locked_down() {
    let server = TestServer::start().await;
    let key = server.api(&server.token("olive", &["operator"])).create(aes("headers")).await;
    let mut anonymous = Person::new(&server, None);
    for path in ["/ui", "/ui/keys", "/ui/sign-in", "/ui/nothing-here", "/ui/static/app.css"] {
        let page = anonymous.get(path).await;
        let csp = page.headers["content-security-policy"].to_str().unwrap();
        for directive in [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(directive), "{path}: {csp}");
        }
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
        assert_eq!(page.headers["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(page.headers["referrer-policy"], "same-origin", "{path}");
        assert_eq!(page.headers["x-frame-options"], "DENY", "{path}");
        assert_eq!(page.headers["strict-transport-security"], "max-age=3600", "localhost: an hour");
    }
    assert_eq!(anonymous.get("/ui/keys").await.location(), "/ui/sign-in");
    assert_eq!(anonymous.get("/ui/nothing-here").await.status, 404);
    // No inline script or style in any page the server renders.
    let mut olive = Person::new(&server, None);
    let token = server.token("olive", &["operator"]);
    let answer = olive.sign_in(&token).await;
    let cookie = answer.headers["set-cookie"].to_str().unwrap().to_owned();
    for attribute in ["__Host-ferrohsm-session=", "Path=/", "Secure", "HttpOnly", "SameSite=Strict"]
    {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    // The session ends no later than the token (600 s).
    let max_age: u64 = cookie.split("Max-Age=").nth(1).unwrap().parse().unwrap();
    assert!((590..=600).contains(&max_age), "{cookie}");
    for path in ["/ui/keys", &format!("/ui/keys/{key}"), "/ui/approvals", "/ui/health"] {
        let page = olive.get(path).await;
        assert_eq!(page.status, 200, "{path}: {}", page.body);
        assert!(!page.body.contains("<script>") && !page.body.contains("style="), "{path}");
        assert!(!page.body.contains(&token), "{path} shows the token");
        assert_eq!(page.headers["cache-control"], "no-store", "{path}");
    }
}

#[tokio::test]
async fn forms_need_the_session_csrf_token_and_the_same_origin() {
    let server = TestServer::start().await;
    let key = server.api(&server.token("olive", &["operator"])).create(aes("csrf")).await;
    let mut olive = signed_in(&server, &server.token("olive", &["operator"])).await;
    let csrf = olive.get(&format!("/ui/keys/{key}")).await.csrf();
    let rotate = format!("/ui/keys/{key}/rotate");

    assert_eq!(olive.post(&rotate, &[]).await.status, 403, "no token");
    assert_eq!(olive.post(&rotate, &[("_csrf", "guessed")]).await.status, 403, "a wrong token");
    for (header, value) in
        [("origin", "https://evil.example"), ("origin", "null"), ("sec-fetch-site", "cross-site")]
    {
        let request = olive
            .client
            .post(format!("{}{rotate}", server.url))
            .header(header, value)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("_csrf={csrf}"));
        let page = olive.send(request).await;
        assert_eq!(page.status, 403, "{header}: {value}");
        assert!(page.body.contains("another site"), "{}", page.body);
    }
    let info =
        server.api(&server.token("olive", &["operator"])).get(&format!("/v1/keys/{key}")).await;
    assert_eq!(info.body["current_version"], 1, "nothing above rotated the key");

    // The sign-in form has its own double-submit token (login CSRF).
    let mut stranger = Person::new(&server, None);
    let token = server.token("olive", &["operator"]);
    let page = stranger.post("/ui/sign-in", &[("_csrf", "x"), ("token", &token)]).await;
    assert_eq!(page.status, 403);

    let page = olive.post(&rotate, &[("_csrf", &csrf)]).await;
    assert_eq!(
        (page.status, page.location()),
        (303, format!("/ui/keys/{key}?notice=rotated").as_str())
    );
}

#[tokio::test]
async fn a_lower_role_is_refused_by_the_core_and_the_refusal_is_audited() {
    let server = TestServer::start().await;
    let key = server.api(&server.token("olive", &["operator"])).create(aes("lower")).await;
    let mut audrey = signed_in(&server, &server.token("audrey", &["auditor"])).await;
    let detail = audrey.get(&format!("/ui/keys/{key}")).await;
    assert_eq!(detail.status, 200);
    assert!(!detail.body.contains(">Rotate<"), "no buttons the role cannot use");
    let csrf = audrey.get("/ui/keys").await.csrf();
    let page = audrey.post(&format!("/ui/keys/{key}/rotate"), &[("_csrf", &csrf)]).await;
    assert_eq!(page.status, 403, "{}", page.body);
    assert!(page.body.contains("forbidden"));
    let mut service = Person::new(&server, None);
    let landed = service.sign_in(&server.token("svc", &["service"])).await;
    assert_eq!(landed.location(), "/ui/health", "a service cannot list keys");
    let health = service.get("/ui/health").await;
    assert!(
        !health.body.contains("href=\"/ui/audit\"") && !health.body.contains("href=\"/ui/keys\"")
    );
    assert_eq!(service.get("/ui/audit").await.status, 403);
    let operator =
        signed_in(&server, &server.token("olive", &["operator"])).await.get("/ui/keys").await;
    assert!(!operator.body.contains("href=\"/ui/audit\""), "no Audit section for an operator");
    let auditor = server.api(&server.token("audrey", &["auditor"]));
    let records = auditor.get("/v1/audit?action=rotate_key&outcome=denied").await;
    assert_eq!(records.body["records"][0]["actor"], "audrey", "{}", records.body);
}

#[tokio::test]
async fn signing_out_or_revoking_the_token_ends_the_session_at_once() {
    let server = TestServer::start().await;
    let admin = server.api(&server.token("root", &["admin"]));
    let token = admin.post("/v1/auth/token", json!({"sub": "olive", "roles": ["operator"]})).await;
    let (token, jti) = (
        token.body["token"].as_str().unwrap().to_owned(),
        token.body["jti"].as_str().unwrap().to_owned(),
    );

    let mut olive = signed_in(&server, &token).await;
    let stolen = olive.session();
    let csrf = olive.get("/ui/keys").await.csrf();
    let out = olive.post("/ui/sign-out", &[("_csrf", &csrf)]).await;
    assert_eq!((out.status, out.location()), (303, "/ui/sign-in"));
    let mut thief = Person::new(&server, None);
    thief.cookie = Some(stolen);
    assert_eq!(thief.get("/ui/keys").await.location(), "/ui/sign-in");
    assert_eq!(thief.post("/ui/sign-out", &[("_csrf", &csrf)]).await.status, 401);

    let mut olive = signed_in(&server, &token).await;
    assert_eq!(olive.get("/ui/keys").await.status, 200);
    // Signing in again from the same browser ends the session it had.
    let before = olive.session();
    assert_eq!(olive.sign_in(&token).await.status, 303);
    assert_ne!(olive.session(), before);
    let mut old = Person::new(&server, None);
    old.cookie = Some(before);
    assert_eq!(old.get("/ui/keys").await.location(), "/ui/sign-in");
    admin.post("/v1/auth/revoke", json!({"jti": jti})).await;
    assert_eq!(olive.get("/ui/keys").await.location(), "/ui/sign-in", "revoked: signed out");
    let again = olive.sign_in(&token).await;
    assert_eq!(again.status, 401, "a revoked token cannot sign in");
}

#[tokio::test]
async fn a_certificate_bound_token_signs_in_only_from_a_browser_presenting_that_certificate() {
    let server =
        TestServer::start_with(Options { client_auth: ClientAuth::Optional, ..Options::default() })
            .await;
    let (cert, key, fingerprint) = server.client_pki.issue(&["approver"]);
    let bound = server.token_spec(TokenSpec {
        sub: "approver".into(),
        roles: vec!["operator".into()],
        ttl: Duration::from_secs(300),
        issuer: ISSUER.into(),
        audience: AUDIENCE.into(),
        cert_sha256: Some(fingerprint),
        minted_by: Vec::new(),
        max_ttl: Duration::from_secs(86_400),
    });
    let mut without = Person::new(&server, None);
    let page = without.sign_in(&bound).await;
    assert_eq!(page.status, 401);
    assert!(page.body.contains("bound to a client certificate"), "{}", page.body);

    let mut with = Person::new(&server, Some((&cert, &key)));
    let page = with.sign_in(&bound).await;
    assert_eq!(page.status, 303, "{}", page.body);
    assert_eq!(with.get("/ui/keys").await.status, 200);
    // The session cookie alone, from a connection without the certificate, is not enough.
    let mut thief = Person::new(&server, None);
    thief.cookie = with.cookie.clone();
    assert_eq!(thief.get("/ui/keys").await.location(), "/ui/sign-in");
}

#[tokio::test]
async fn names_tags_and_comments_are_escaped_never_run() {
    let server = TestServer::start().await;
    let olive = server.api(&server.token("olive", &["operator"]));
    let hostile = "<script>alert(1)</script>";
    let key = olive
        .create(json!({
            "algorithm": "aes-256-gcm",
            "name": "quoted",
            "description": "\"><img src=x onerror=alert(1)>",
            "tags": {"owner": hostile},
        }))
        .await;
    let mut person = signed_in(&server, &server.token("olive", &["operator"])).await;
    for path in ["/ui/keys", &format!("/ui/keys/{key}"), "/ui/keys?tag=owner%3A%3Cscript%3E"] {
        let page = person.get(path).await;
        assert!(!page.body.contains(hostile), "{path}: raw markup");
        assert!(!page.body.contains("<img src=x"), "{path}: raw markup");
    }
    let page = person.get(&format!("/ui/keys/{key}")).await;
    assert!(page.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    // A notice is chosen from a fixed list; the query string is never shown.
    let page = person.get(&format!("/ui/keys/{key}?notice=%3Cb%3Ehi%3C/b%3E")).await;
    assert!(!page.body.contains("<b>hi</b>") && !page.body.contains("&lt;b&gt;hi"));
}

#[tokio::test]
async fn oversized_and_malformed_forms_get_typed_errors_and_change_nothing() {
    let server = TestServer::start().await;
    let key = server.api(&server.token("olive", &["operator"])).create(aes("sizes")).await;
    let mut olive = signed_in(&server, &server.token("olive", &["operator"])).await;
    let csrf = olive.get("/ui/keys").await.csrf();
    let huge = "x".repeat(70 * 1024);
    let page = olive
        .post(&format!("/ui/keys/{key}/revoke"), &[("_csrf", &csrf), ("comment", &huge)])
        .await;
    assert_eq!(page.status, 413, "{}", page.body);
    let page = olive.post(&format!("/ui/keys/{key}/revoke"), &[("_csrf", &csrf)]).await;
    assert_eq!(page.status, 400, "unconfirmed");
    let page = olive
        .post(
            &format!("/ui/keys/{key}/revoke"),
            &[("_csrf", &csrf), ("confirm", "yes"), ("reason", "bored")],
        )
        .await;
    assert_eq!(page.status, 400, "{}", page.body);
    let page = olive
        .post(
            &format!("/ui/keys/{key}/destroy"),
            &[("_csrf", &csrf), ("confirm", "yes"), ("grace_days", "-1")],
        )
        .await;
    assert_eq!(page.status, 400);
    let page = olive.post(&format!("/ui/keys/{key}/explode"), &[("_csrf", &csrf)]).await;
    assert_eq!(page.status, 404);
    let page = olive.post("/ui/approvals/not-a-uuid/approve", &[("_csrf", &csrf)]).await;
    assert_eq!(page.status, 400);
    let request = olive
        .client
        .post(format!("{}/ui/keys/{key}/rotate", server.url))
        .header("content-type", "application/json")
        .body("{}");
    assert_eq!(olive.send(request).await.status, 400, "not a form");
    for bad in
        ["/ui/keys?state=melting", "/ui/keys?tag=nocolon", "/ui/keys?cursor=zzz", "/ui/keys?x=1"]
    {
        assert_eq!(olive.get(bad).await.status, 400, "{bad}");
    }
    let mut audrey = signed_in(&server, &server.token("audrey", &["auditor"])).await;
    assert_eq!(audrey.get("/ui/audit?since=yesterday").await.status, 400);
    assert_eq!(audrey.get("/ui/audit?outcome=maybe").await.status, 400);
    let info =
        server.api(&server.token("olive", &["operator"])).get(&format!("/v1/keys/{key}")).await;
    assert_eq!(info.body["state"], "active");
    // A bad token at sign-in is a 401 page and an audited refusal.
    let mut stranger = Person::new(&server, None);
    assert_eq!(stranger.sign_in("garbage").await.status, 401);
    let r = server
        .api(&server.token("audrey", &["auditor"]))
        .get("/v1/audit?action=authenticate")
        .await;
    assert!(!r.body["records"].as_array().unwrap().is_empty(), "{}", r.body);
    // CSP reports are bounded like forms.
    let report = olive.client.post(format!("{}/ui/csp-report", server.url)).body(huge.clone());
    assert_eq!(olive.send(report).await.status, 413);
}

#[tokio::test]
async fn dashboard_requests_spend_the_same_rate_limit_as_rest() {
    let policy = "version = 1\n[rate_limit]\ncapacity = 5\nrefill_per_second = 0.01\n";
    let server =
        TestServer::start_with(Options { policy: Some(policy.into()), ..Options::default() }).await;
    let mut olive = signed_in(&server, &server.token("olive", &["operator"])).await;
    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.push(olive.get("/ui/keys").await);
    }
    let limited = statuses.iter().find(|p| p.status == 429).expect("rate limited");
    assert!(limited.headers.contains_key("retry-after"));
    assert!(limited.body.contains("rate_limited"), "{}", limited.body);
    let health = olive.get("/ui/health").await;
    assert_eq!(health.status, 200, "the health page reads no key, so it is not limited");
    assert!(!health.body.contains("rate limits</dt><dd>0<"), "the counter moved");
}

#[tokio::test]
async fn the_keys_list_pages_through_every_match_with_its_filters() {
    let policy = "version = 1\n[rate_limit]\ncapacity = 10000\nrefill_per_second = 1000\n";
    let server =
        TestServer::start_with(Options { policy: Some(policy.into()), ..Options::default() }).await;
    let olive = server.api(&server.token("olive", &["operator"]));
    for i in 0..55 {
        olive
            .create(json!({"algorithm": "aes-256-gcm", "name": format!("paged-{i:02}"), "tags": {"batch": "p"}}))
            .await;
    }
    olive.create(json!({"algorithm": "ec-p256", "name": "other", "tags": {"batch": "q"}})).await;
    let mut person = signed_in(&server, &server.token("olive", &["operator"])).await;
    let first = person.get("/ui/keys?tag=batch%3Ap&algorithm=aes-256-gcm&name_prefix=paged-").await;
    assert_eq!(first.body.matches("<tr><th scope=\"row\">").count(), 50, "{}", first.body);
    assert!(first.body.contains("paged-00") && !first.body.contains("paged-50"));
    let at = first.body.find("rel=\"next\" href=\"").expect("a next page link");
    let rest = &first.body[at + "rel=\"next\" href=\"".len()..];
    let next = rest[..rest.find('"').unwrap()].replace("&amp;", "&");
    assert!(next.contains("tag=batch%3Ap") && next.contains("cursor="), "{next}");
    let second = person.get(&next).await;
    assert_eq!(second.status, 200);
    assert_eq!(second.body.matches("<tr><th scope=\"row\">").count(), 5);
    assert!(second.body.contains("paged-54") && !second.body.contains(">other<"));
    assert!(!second.body.contains("rel=\"next\""), "the last page");
    let ec = person.get("/ui/keys?algorithm=ec-p256&state=active").await;
    assert_eq!(ec.body.matches("<tr><th scope=\"row\">").count(), 1);
}

#[tokio::test]
async fn an_approver_denies_with_a_comment_and_the_request_cannot_run() {
    let policy = r#"
version = 1
[[tag_policy]]
name = "guarded"
match = { guard = "yes" }
[tag_policy.dual_control]
operations = ["rotate_key"]
quorum = 1
approver_roles = ["admin"]
expires_after = "1h"
"#;
    let server =
        TestServer::start_with(Options { policy: Some(policy.into()), ..Options::default() }).await;
    let olive_token = server.token("olive", &["operator"]);
    let key = server
        .api(&olive_token)
        .create(json!({"algorithm": "aes-256-gcm", "name": "guarded", "tags": {"guard": "yes"}}))
        .await;
    let mut olive = signed_in(&server, &olive_token).await;
    let csrf = olive.get(&format!("/ui/keys/{key}")).await.csrf();
    let asked = olive.post(&format!("/ui/keys/{key}/rotate"), &[("_csrf", &csrf)]).await;
    assert_eq!(asked.status, 303);
    let approval = asked.location().split('?').next().unwrap().to_owned();
    assert!(approval.starts_with("/ui/approvals/"), "{approval}");
    let own = olive.get(&approval).await;
    assert!(!own.body.contains(">Approve<"), "the requester cannot vote");
    let mut other = signed_in(&server, &server.token("oscar", &["operator"])).await;
    let page = other.get(&approval).await;
    assert!(!page.body.contains(">Approve<"), "an operator is not an approver of this policy");
    // The requester cannot run it before it is approved.
    let early = olive.post(&format!("{approval}/execute"), &[("_csrf", &csrf)]).await;
    assert_eq!(early.status, 409, "{}", early.body);
    assert!(early.body.contains("the approval is pending"));

    let mut root = signed_in(&server, &server.token("root", &["admin"])).await;
    let page = root.get(&approval).await;
    assert!(page.body.contains("rotate_key") && page.body.contains(&key));
    let csrf_root = page.csrf();
    let denied = root
        .post(
            &format!("{approval}/deny"),
            &[("_csrf", &csrf_root), ("comment", "not during the freeze")],
        )
        .await;
    assert_eq!(denied.status, 303, "{}", denied.body);
    let page = root.get(&approval).await;
    assert!(page.body.contains("not during the freeze") && page.body.contains("approval-denied"));
    let late = olive.post(&format!("{approval}/execute"), &[("_csrf", &csrf)]).await;
    assert_eq!(late.status, 409, "{}", late.body);
    assert!(late.body.contains("the approval is denied"), "{}", late.body);
    let info = server.api(&olive_token).get(&format!("/v1/keys/{key}")).await;
    assert_eq!(info.body["current_version"], 1);
}

#[tokio::test]
async fn a_read_under_dual_control_answers_with_its_approval() {
    let policy = r#"
version = 1
[[tag_policy]]
name = "sealed-public"
match = { public = "guarded" }
[tag_policy.dual_control]
operations = ["export_public_key"]
quorum = 1
approver_roles = ["admin"]
expires_after = "1h"
"#;
    let server =
        TestServer::start_with(Options { policy: Some(policy.into()), ..Options::default() }).await;
    let olive_token = server.token("olive", &["operator"]);
    let key = server
        .api(&olive_token)
        .create(
            json!({"algorithm": "ec-p256", "name": "guarded-pub", "tags": {"public": "guarded"}}),
        )
        .await;
    let mut olive = signed_in(&server, &olive_token).await;
    let page = olive.get(&format!("/ui/keys/{key}/public.pem")).await;
    assert_eq!(page.status, 202, "{}", page.body);
    assert!(page.body.contains("href=\"/ui/approvals/"), "{}", page.body);
    assert_eq!(page.headers["content-type"], "text/html; charset=utf-8");
    assert!(page.headers.contains_key("content-security-policy"));
}
