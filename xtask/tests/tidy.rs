//! Tidy checks: the structural rules of the workspace, as tests (run by `cargo xtask test`).
//!
//! - frontends (the server and the CLI) depend on the core and the API contract only, never on
//!   a backend or a lower crate directly;
//! - no concrete backend is named in production code outside the backend crates and the one
//!   crate that maps configuration to a backend (`ferrohsm-backends`);
//! - library code cannot `unwrap`/`expect`: every crate inherits the workspace lints that deny
//!   them, and only test-support modules allow them;
//! - every crate states its contract in a `//!` comment, including what it must never do;
//! - each module of the core's `Hsm` reaches only the groups of its state that its concern
//!   needs;
//! - relative links in the documentation resolve.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Every workspace member's directory.
fn members() -> Vec<PathBuf> {
    let manifest: toml::Table =
        std::fs::read_to_string(root().join("Cargo.toml")).unwrap().parse().unwrap();
    manifest["workspace"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| root().join(m.as_str().unwrap()))
        .collect()
}

fn manifest(dir: &Path) -> toml::Table {
    std::fs::read_to_string(dir.join("Cargo.toml")).unwrap().parse().unwrap()
}

/// The `.rs` files under `dir`, recursively.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

#[test]
fn frontends_depend_only_on_the_core() {
    for frontend in ["crates/ferrohsm-server", "crates/ferrohsm-cli"] {
        let deps = manifest(&root().join(frontend))["dependencies"].as_table().unwrap().clone();
        let internal: Vec<&String> = deps.keys().filter(|k| k.starts_with("ferrohsm-")).collect();
        assert_eq!(
            internal,
            ["ferrohsm-api", "ferrohsm-core"],
            "{frontend} depends on {internal:?}"
        );
    }
}

/// The CLI reaches the server only through the typed client of `ferrohsm-api`: no HTTP
/// library of its own, no hand-written route, no request body built from `json!`.
#[test]
fn the_cli_speaks_only_through_the_typed_client() {
    let cli = root().join("crates/ferrohsm-cli");
    let deps = manifest(&cli)["dependencies"].as_table().unwrap().clone();
    assert!(!deps.contains_key("reqwest"), "the CLI depends on reqwest directly");
    let api = deps["ferrohsm-api"].as_table().and_then(|t| t.get("features")).cloned();
    assert!(
        api.is_some_and(|f| f.as_array().unwrap().iter().any(|v| v.as_str() == Some("client"))),
        "the CLI uses ferrohsm-api's client"
    );
    for file in rust_files(&cli.join("src")) {
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(!text.contains("\"/v1/"), "{} writes a route by hand", file.display());
        for (i, line) in text.lines().enumerate() {
            // `json!` only shapes what the CLI prints (the offline verifier's report).
            let printing = line.contains("print_json(")
                || text.lines().nth(i.wrapping_sub(1)).is_some_and(|l| l.contains("print_json("));
            assert!(
                !line.contains("json!(") || printing,
                "{}:{}: json! builds a body",
                file.display(),
                i + 1
            );
        }
    }
}

#[test]
fn no_backend_is_named_outside_the_backend_crates() {
    const BACKENDS: &[&str] = &[
        "MemoryKeyStore",
        "FileKeyStore",
        "MemoryApprovalStore",
        "FileApprovalStore",
        "MemoryTokenRevocationStore",
        "FileTokenRevocationStore",
        "MemoryAuditSink",
        "FileAuditSink",
        "FileAuditConfig",
        "SqliteBackend",
        "SqliteKeyStore",
        "SqliteApprovalStore",
        "SqliteTokenRevocationStore",
        "SqliteAuditSink",
        "ferrohsm_sqlite",
        "PostgresBackend",
        "PostgresKeyStore",
        "PostgresApprovalStore",
        "PostgresTokenRevocationStore",
        "PostgresAuditSink",
        "ferrohsm_postgres",
        "Pkcs11Vault",
        "ferrohsm_pkcs11",
    ];
    const ALLOWED: &[&str] = &[
        "ferrohsm-store",
        "ferrohsm-audit",
        "ferrohsm-sqlite",
        "ferrohsm-postgres",
        "ferrohsm-pkcs11",
        "ferrohsm-backends",
    ];
    let mut found = Vec::new();
    for member in members() {
        let name = member.file_name().unwrap().to_string_lossy().into_owned();
        if ALLOWED.contains(&name.as_str()) {
            continue;
        }
        for file in rust_files(&member.join("src")) {
            let text = std::fs::read_to_string(&file).unwrap();
            for backend in BACKENDS {
                if text.contains(backend) {
                    found.push(format!("{} names {backend}", file.display()));
                }
            }
        }
    }
    assert!(found.is_empty(), "backends named outside the backend crates:\n{}", found.join("\n"));
}

#[test]
fn library_code_cannot_unwrap() {
    let workspace: toml::Table =
        std::fs::read_to_string(root().join("Cargo.toml")).unwrap().parse().unwrap();
    let clippy = workspace["workspace"]["lints"]["clippy"].as_table().unwrap();
    for lint in ["unwrap_used", "expect_used", "panic"] {
        assert_eq!(clippy[lint].as_str(), Some("deny"), "workspace lint {lint}");
    }
    for member in members() {
        let lints = manifest(&member).get("lints").cloned();
        assert_eq!(
            lints.and_then(|l| l.get("workspace").and_then(toml::Value::as_bool)),
            Some(true),
            "{} must inherit the workspace lints",
            member.display()
        );
        // Only test support may allow them: conformance suites, and the fuzz and xtask tools.
        let tool = member.ends_with("fuzz") || member.ends_with("xtask");
        for file in rust_files(&member.join("src")) {
            let text = std::fs::read_to_string(&file).unwrap();
            let allows =
                text.contains("clippy::unwrap_used") || text.contains("clippy::expect_used");
            let support = file.file_name().is_some_and(|n| n == "conformance.rs");
            assert!(
                !allows || support || tool,
                "{} allows unwrap/expect outside test support",
                file.display()
            );
        }
    }
}

#[test]
fn every_crate_states_its_contract() {
    for member in members() {
        let src = member.join("src");
        let entry = ["lib.rs", "main.rs"].iter().map(|f| src.join(f)).find(|p| p.exists()).unwrap();
        let text = std::fs::read_to_string(&entry).unwrap();
        let doc: String = text
            .lines()
            .take_while(|l| l.starts_with("//!") || l.trim().is_empty())
            .collect::<Vec<_>>()
            .join("\n");
        assert!(doc.starts_with("//!"), "{} has no //! contract", entry.display());
        assert!(
            doc.contains("never"),
            "{}'s //! contract does not say what it must never do",
            entry.display()
        );
    }
}

#[test]
fn documentation_links_resolve() {
    // Every Markdown file under docs/ (decision records included) and the top-level ones.
    let mut docs = Vec::new();
    let mut dirs = vec![root().join("docs")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                docs.push(path);
            }
        }
    }
    for top in ["README.md", "SECURITY.md", "CONTRIBUTING.md"] {
        docs.push(root().join(top));
    }
    let mut broken = Vec::new();
    for doc in docs {
        let text = std::fs::read_to_string(&doc).unwrap();
        let mut rest = text.as_str();
        while let Some(at) = rest.find("](") {
            rest = &rest[at + 2..];
            let Some(end) = rest.find(')') else { break };
            let target = &rest[..end];
            rest = &rest[end..];
            if target.contains("://") || target.starts_with('#') || target.starts_with("mailto:") {
                continue;
            }
            let path = target.split('#').next().unwrap_or_default();
            if !doc.parent().unwrap().join(path).exists() {
                broken.push(format!("{}: {target}", doc.display()));
            }
        }
    }
    assert!(broken.is_empty(), "broken documentation links:\n{}", broken.join("\n"));
}

/// The groups of the `Hsm`'s state (`Inner` in `crates/ferrohsm-core/src/hsm/mod.rs`) that each
/// module may reach. Adding a group to a module is a design decision: change it here, with the
/// reason in the commit.
const HSM_STATE: &[(&str, &[&str])] = &[
    // The request pipeline: authorize (policy), load (keys), audit every request.
    ("mod.rs", &["provider", "sealer", "keys", "audit", "control"]),
    // Builds every group, and checks the store at start.
    ("builder.rs", &["provider", "sealer", "keys", "audit", "control", "tokens", "retention"]),
    ("lifecycle.rs", &["provider", "sealer", "keys", "control"]),
    ("crypto_ops.rs", &["provider", "sealer", "keys"]),
    // Approvals are tagged by the sealer and their changes recorded.
    ("dual_control.rs", &["provider", "sealer", "control", "audit"]),
    ("audit_reads.rs", &["provider", "audit"]),
    ("maintenance.rs", &["keys", "control"]),
    // Revocations are tagged by the sealer; tokens never see keys, policy or the audit log.
    ("tokens.rs", &["sealer", "tokens"]),
    // Health reports on every component.
    ("health.rs", &["provider", "sealer", "keys", "audit", "control", "retention"]),
];

#[test]
fn each_hsm_module_reaches_only_its_state() {
    let dir = root().join("crates/ferrohsm-core/src/hsm");
    let mut problems = Vec::new();
    let mut seen = Vec::new();
    for path in rust_files(&dir) {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        seen.push(name.clone());
        let Some((_, allowed)) = HSM_STATE.iter().find(|(file, _)| *file == name) else {
            problems.push(format!("{name}: a new module; list the state groups it may reach"));
            continue;
        };
        let text = std::fs::read_to_string(&path).unwrap();
        for (i, _) in text.match_indices("inner") {
            // `inner`, then (across line breaks, as rustfmt splits chains) `.` and a field.
            let before = text[..i].chars().next_back();
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                continue;
            }
            let rest = text[i + "inner".len()..].trim_start();
            let Some(rest) = rest.strip_prefix('.') else { continue };
            let field: String = rest
                .trim_start()
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            // `inner.clone()` hands the whole state to a task the module starts.
            if field == "clone" || allowed.contains(&field.as_str()) {
                continue;
            }
            let line = text[..i].lines().count();
            problems.push(format!("{name}:{line}: reaches `inner.{field}`"));
        }
    }
    for (file, _) in HSM_STATE {
        if !seen.iter().any(|s| s == file) {
            problems.push(format!("{file}: listed but gone; remove it from HSM_STATE"));
        }
    }
    assert!(problems.is_empty(), "hsm modules beyond their state:\n{}", problems.join("\n"));
}
