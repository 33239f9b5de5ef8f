//! The route contract: for every operation, what besides its success can happen to it, and the
//! statuses that follow. The OpenAPI document's failure answers come from this table alone
//! ([`Statuses`] adds them), so the handlers' attributes list only their successes, and a test
//! compares the document with the table.
//!
//! Every authenticated route (`/v1/…`) can answer 400 (a malformed `X-Approval-Id`, query or
//! path), 401, 403, 429 (the caller's rate limit or the failed-authentication budget, with
//! `Retry-After`) and 503 (the audit log or the store is unavailable, or the request timed
//! out). The flags add the rest.

use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::schema::{Object, Ref, Type};
use utoipa::openapi::{ContentBuilder, OpenApi, ResponseBuilder};

/// The route names a key (`{key}`): 404 when it does not exist.
pub(crate) const KEY: u8 = 1;
/// The route names an approval (`{id}`): 404 when it does not exist.
pub(crate) const APPROVAL: u8 = 1 << 1;
/// The route takes a JSON body: 413 when it is larger than the limit.
pub(crate) const BODY: u8 = 1 << 2;
/// The target's state or a concurrent change can refuse it: 409.
pub(crate) const STATE: u8 = 1 << 3;
/// Policy can put it under dual control: 202 with the approval.
pub(crate) const DUAL: u8 = 1 << 4;

/// One operation of the REST API.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Route {
    /// The HTTP method, lower case.
    pub(crate) method: &'static str,
    /// The path as the document writes it.
    pub(crate) path: &'static str,
    /// What can happen to it (the constants above).
    pub(crate) flags: u8,
}

const fn route(method: &'static str, path: &'static str, flags: u8) -> Route {
    Route { method, path, flags }
}

/// Every operation the server serves. Dual control applies to every operation on one key
/// (`Operation::targets_key`) and, through global rules, to issuing and revoking tokens
/// (docs/policy.md); creating a key names no existing key.
pub(crate) const ROUTES: &[Route] = &[
    route("post", "/v1/keys", BODY | STATE),
    route("get", "/v1/keys", 0),
    route("get", "/v1/keys/{key}", KEY | DUAL),
    route("post", "/v1/keys/{key}/rotate", KEY | STATE | DUAL),
    route("post", "/v1/keys/{key}/rollback", KEY | BODY | STATE | DUAL),
    route("post", "/v1/keys/{key}/revoke", KEY | BODY | STATE | DUAL),
    route("post", "/v1/keys/{key}/destroy", KEY | BODY | STATE | DUAL),
    route("post", "/v1/keys/{key}/cancel-destroy", KEY | STATE | DUAL),
    route("post", "/v1/keys/{key}/encrypt", KEY | BODY | STATE | DUAL),
    route("post", "/v1/keys/{key}/decrypt", KEY | BODY | STATE | DUAL),
    route("post", "/v1/keys/{key}/sign", KEY | BODY | STATE | DUAL),
    route("post", "/v1/keys/{key}/verify", KEY | BODY | STATE | DUAL),
    route("post", "/v1/keys/{key}/wrap", KEY | BODY | STATE | DUAL),
    route("post", "/v1/keys/{key}/unwrap", KEY | BODY | STATE | DUAL),
    route("get", "/v1/keys/{key}/public", KEY | STATE | DUAL),
    route("get", "/v1/approvals", 0),
    route("get", "/v1/approvals/{id}", APPROVAL),
    route("post", "/v1/approvals/{id}/approve", APPROVAL | BODY | STATE),
    route("post", "/v1/approvals/{id}/deny", APPROVAL | BODY | STATE),
    route("get", "/v1/audit", 0),
    route("get", "/v1/audit/verify", 0),
    route("get", "/v1/audit/checkpoint", 0),
    route("post", "/v1/audit/checkpoint", 0),
    route("get", "/v1/audit/export", 0),
    route("post", "/v1/auth/token", BODY | DUAL),
    route("post", "/v1/auth/revoke", BODY | DUAL),
    route("get", "/healthz", 0),
    route("get", "/readyz", 0),
    route("get", "/metrics", 0),
    route("get", "/openapi.json", 0),
    route("get", "/.well-known/jwks.json", 0),
];

impl Route {
    /// Whether the route needs a bearer token.
    pub(crate) fn authenticated(&self) -> bool {
        self.path.starts_with("/v1/")
    }

    /// The failure (and 202) statuses of the route, ascending.
    pub(crate) fn failure_statuses(&self) -> Vec<u16> {
        let has = |flag: u8| self.flags & flag != 0;
        let mut statuses = Vec::new();
        if has(DUAL) {
            statuses.push(202);
        }
        if self.authenticated() {
            statuses.extend([400, 401, 403]);
        }
        if has(KEY) || has(APPROVAL) {
            statuses.push(404);
        }
        if has(STATE) {
            statuses.push(409);
        }
        if has(BODY) {
            statuses.push(413);
        }
        if self.authenticated() {
            statuses.extend([429, 503]);
        }
        statuses
    }
}

/// Adds each route's failure statuses to the document.
pub(crate) struct Statuses;

impl utoipa::Modify for Statuses {
    fn modify(&self, openapi: &mut OpenApi) {
        for route in ROUTES {
            let Some(item) = openapi.paths.paths.get_mut(route.path) else { continue };
            let operation = match route.method {
                "get" => item.get.as_mut(),
                "post" => item.post.as_mut(),
                _ => None,
            };
            let Some(operation) = operation else { continue };
            if route.flags & KEY != 0 {
                describe_key_parameter(operation);
            }
            for status in route.failure_statuses() {
                operation
                    .responses
                    .responses
                    .entry(status.to_string())
                    .or_insert_with(|| response(status).into());
            }
        }
    }
}

/// Links the answers that name a resource (a created key, an approval) to the operations on
/// it, so clients and fuzzers can follow them (`$response.body#/id` into `{key}` or `{id}`).
pub(crate) struct Links;

impl utoipa::Modify for Links {
    fn modify(&self, openapi: &mut OpenApi) {
        use utoipa::openapi::RefOr;
        use utoipa::openapi::link::LinkBuilder;
        let targets = |flag: u8, param: &str| -> Vec<(String, String)> {
            ROUTES
                .iter()
                .filter(|r| r.flags & flag != 0)
                .filter_map(|r| {
                    let item = openapi.paths.paths.get(r.path)?;
                    let op = if r.method == "get" { item.get.as_ref() } else { item.post.as_ref() };
                    op?.operation_id.clone().map(|id| (id, param.to_owned()))
                })
                .collect()
        };
        let keys = targets(KEY, "key");
        let approvals = targets(APPROVAL, "id");
        for route in ROUTES {
            let Some(item) = openapi.paths.paths.get_mut(route.path) else { continue };
            let op = if route.method == "get" { item.get.as_mut() } else { item.post.as_mut() };
            let Some(op) = op else { continue };
            for (status, links) in [("201", &keys), ("202", &approvals)] {
                let Some(RefOr::T(response)) = op.responses.responses.get_mut(status) else {
                    continue;
                };
                for (operation_id, param) in links {
                    let link = LinkBuilder::new()
                        .operation_id(operation_id)
                        .parameter(param, "$response.body#/id")
                        .build();
                    response.links.insert(operation_id.clone(), link.into());
                }
            }
        }
    }
}

/// Bodies that take exactly one of two fields: (schema, field, field).
const EXACTLY_ONE: &[(&str, &str, &str)] = &[
    ("SignRequest", "message", "digest"),
    ("VerifyRequest", "message", "digest"),
    ("RevokeTokenRequest", "jti", "sid"),
];

/// States the "exactly one of two fields" rule of some bodies: the schema becomes `allOf` the
/// derived object and a `oneOf` requiring either field as a string (both match both, which
/// `oneOf` refuses; a null field counts as absent, as the server reads it).
pub(crate) struct ExactlyOne;

impl utoipa::Modify for ExactlyOne {
    fn modify(&self, openapi: &mut OpenApi) {
        use utoipa::openapi::RefOr;
        use utoipa::openapi::schema::{AllOfBuilder, ObjectBuilder, OneOfBuilder, Schema};
        let Some(components) = openapi.components.as_mut() else { return };
        for (name, a, b) in EXACTLY_ONE {
            let Some(derived) = components.schemas.remove(*name) else { continue };
            // Present and not null (a null field is an absent one).
            let required = |field: &str| {
                ObjectBuilder::new()
                    .property(field, ObjectBuilder::new().schema_type(Type::String))
                    .required(field)
                    .build()
            };
            let one = OneOfBuilder::new().item(required(a)).item(required(b)).build();
            let all = AllOfBuilder::new().item(derived).item(Schema::OneOf(one)).build();
            let both: RefOr<Schema> = Schema::AllOf(all).into();
            components.schemas.insert((*name).to_owned(), both);
        }
    }
}

/// States what the `{key}` path segment accepts: a canonical (lower-case, hyphenated) UUID, or a
/// key name, which can never read as a UUID.
fn describe_key_parameter(operation: &mut utoipa::openapi::path::Operation) {
    use utoipa::openapi::schema::ObjectBuilder;
    for parameter in operation.parameters.iter_mut().flatten() {
        let utoipa::openapi::RefOr::T(parameter) = parameter else { continue };
        if parameter.name == "key" {
            parameter.description = Some("The key's id (a canonical UUID) or its name".into());
            let schema = ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(r"^(?![0-9a-f]{32}$)[a-z0-9][a-z0-9._-]{0,127}$"))
                .build();
            parameter.schema = Some(schema.into());
        }
    }
}

/// The documented answer of one failure status.
fn response(status: u16) -> utoipa::openapi::Response {
    let json =
        |schema: &str| ContentBuilder::new().schema(Some(Ref::from_schema_name(schema))).build();
    let header = |kind: Type, description: &str| {
        HeaderBuilder::new()
            .schema(Some(Object::with_type(kind)))
            .description(Some(description))
            .build()
    };
    let error = |description: &str| {
        ResponseBuilder::new()
            .description(description)
            .content("application/json", json("ErrorBody"))
    };
    match status {
        202 => ResponseBuilder::new()
            .description("Accepted: policy puts the operation under dual control. The body is the approval; once it reaches its quorum, repeat the same request with `X-Approval-Id`.")
            .content("application/json", json("ApprovalInfo"))
            .header("Location", header(Type::String, "The approval: /v1/approvals/{id}"))
            .header("X-Approval-Id", header(Type::String, "The approval's id")),
        400 => error("Invalid request (`invalid_request`, `invalid_usage`, `unsupported`, `invalid_ciphertext`)"),
        401 => error("Unauthenticated: no valid bearer token (`unauthenticated`)")
            .header("WWW-Authenticate", header(Type::String, "Bearer")),
        403 => error("Forbidden by the caller's roles or the policy (`forbidden`)"),
        404 => error("Not found (`not_found`)"),
        409 => error("Conflict, or the target's state refuses it (`conflict`, `invalid_state`)"),
        413 => error("Payload too large (`payload_too_large`)"),
        429 => error("Rate limited (`rate_limited`); retry after `Retry-After` seconds")
            .header("Retry-After", header(Type::Integer, "Seconds to wait")),
        503 => error("Unavailable (`unavailable`): the audit log or the store cannot be written, or the request timed out"),
        _ => error("Error"),
    }
    .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The document lists exactly the table's operations, and each operation's failure
    /// statuses are the table's.
    #[test]
    fn the_document_lists_every_status_of_the_table() {
        let doc = crate::openapi_document();
        let mut operations = 0;
        for (path, item) in &doc.paths.paths {
            for (method, operation) in [("get", &item.get), ("post", &item.post)] {
                let Some(operation) = operation else { continue };
                operations += 1;
                let route = ROUTES.iter().find(|r| r.method == method && r.path == path);
                let Some(route) = route else {
                    panic!("{method} {path} is served but missing from the route table")
                };
                let documented: Vec<u16> = operation
                    .responses
                    .responses
                    .keys()
                    .filter_map(|s| s.parse().ok())
                    .filter(|s| !matches!(s, 200 | 201 | 304))
                    // Health checks answer 503 when unhealthy: their handlers document it.
                    .filter(|s| !(matches!(route.path, "/healthz" | "/readyz") && *s == 503))
                    .collect();
                assert_eq!(documented, route.failure_statuses(), "{method} {path}");
            }
        }
        assert_eq!(operations, ROUTES.len());
    }

    #[test]
    fn a_dual_controlled_key_operation_documents_the_whole_contract() {
        let encrypt = ROUTES.iter().find(|r| r.path == "/v1/keys/{key}/encrypt");
        assert_eq!(
            encrypt.map(Route::failure_statuses),
            Some(vec![202, 400, 401, 403, 404, 409, 413, 429, 503])
        );
    }
}
