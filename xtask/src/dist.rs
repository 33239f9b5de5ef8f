//! `cargo xtask dist`: release archives of the two binaries, one `.tar.gz` each (the binary,
//! README, LICENSE, SECURITY.md; the server's also carries the systemd unit), a CycloneDX 1.5
//! SBOM (`.cdx.json`) per binary, and `SHA256SUMS` over all of them, in `target/dist/`.
//! Each archive is unpacked again and its binary run (the server's as a dev server answering
//! its own `healthcheck`), and each SBOM is validated against the CycloneDX schema, before
//! the task succeeds. `cargo xtask test` packages the debug binaries the same way, so the
//! packaging is checked on every run without a second (release) build.
//!
//! The SBOM lists the crates each binary links, as `cargo tree` resolves them for the release
//! build of both binaries on the host platform: the binary's package and everything it
//! reaches through normal dependencies (not build scripts', dev or proc-macro ones, which do
//! not ship), with the SHA-256 that Cargo.lock records for each crates.io package and the
//! license and description from `cargo metadata`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::dev::DevServer;

/// The binaries released, with their packages and the extra files each archive carries.
const BINARIES: &[(&str, &str, &[&str])] = &[
    ("ferrohsm-server", "ferrohsm-server", &["deploy/systemd/ferrohsm.service"]),
    ("ferrohsm-cli", "ferrohsm", &[]),
];
/// Files every archive carries, from the repository root.
const DOCUMENTS: &[&str] = &["README.md", "LICENSE", "SECURITY.md"];

/// Builds the release binaries and packages them into `target/dist`.
pub(crate) fn release(root: &Path) -> Result<()> {
    let build = ["build", "--release", "--locked", "-p", "ferrohsm-server", "-p", "ferrohsm-cli"];
    crate::run(root, "cargo", &build)?;
    let out = root.join("target/dist");
    let files = package(root, &root.join("target/release"), &out)?;
    eprintln!("xtask: release files in {}:", out.display());
    for file in files {
        eprintln!("  {}", file.display());
    }
    Ok(())
}

/// Packages the binaries found in `bins` into `out` (emptied first), then checks what it
/// wrote: the sums, each unpacked binary, each SBOM. Returns the files written.
pub(crate) fn package(root: &Path, bins: &Path, out: &Path) -> Result<Vec<PathBuf>> {
    if out.exists() {
        std::fs::remove_dir_all(out).with_context(|| format!("emptying {}", out.display()))?;
    }
    let stage = out.join("stage");
    std::fs::create_dir_all(&stage).with_context(|| format!("creating {}", stage.display()))?;
    let triple = host_triple()?;
    let metadata = cargo_metadata(root, &triple)?;
    let checksums = lock_checksums(root)?;
    let graphs = dependency_graphs(root, &triple)?;
    let epoch = source_date_epoch(root);
    let mut written = Vec::new();
    for (package, binary, extra) in BINARIES {
        let version = package_version(&metadata, package)?;
        let name = format!("{binary}-{version}-{triple}");
        let dir = stage.join(&name);
        std::fs::create_dir_all(&dir)?;
        let program = bins.join(binary);
        std::fs::copy(&program, dir.join(binary))
            .with_context(|| format!("copying {} (was it built?)", program.display()))?;
        for file in DOCUMENTS.iter().chain(extra.iter()) {
            let from = root.join(file);
            let to = dir.join(Path::new(file).file_name().context("a file name")?);
            std::fs::copy(&from, &to).with_context(|| format!("copying {}", from.display()))?;
        }
        let archive = out.join(format!("{name}.tar.gz"));
        let mtime = format!("--mtime=@{epoch}");
        let tar = [
            "--format=gnu",
            "--mode=u=rwX,go=rX",
            "--sort=name",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            &mtime,
            "-czf",
            &archive.to_string_lossy(),
            "-C",
            &stage.to_string_lossy(),
            &name,
        ];
        run_quiet("tar", &tar, root)?;
        written.push(archive);
        let sbom = out.join(format!("{name}.cdx.json"));
        let graph = graphs.get(*package).with_context(|| format!("cargo tree has no {package}"))?;
        let document = sbom_document(&metadata, &checksums, graph, binary, epoch)?;
        std::fs::write(&sbom, serde_json::to_vec_pretty(&document)?)
            .with_context(|| format!("writing {}", sbom.display()))?;
        written.push(sbom);
    }
    std::fs::remove_dir_all(&stage)?;
    let names: Vec<String> = written
        .iter()
        .filter_map(|f| f.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    let mut args = vec!["--"];
    args.extend(names.iter().map(String::as_str));
    let sums = Command::new("sha256sum").args(&args).current_dir(out).output()?;
    if !sums.status.success() {
        bail!("sha256sum failed: {}", String::from_utf8_lossy(&sums.stderr));
    }
    std::fs::write(out.join("SHA256SUMS"), &sums.stdout)?;
    written.push(out.join("SHA256SUMS"));
    let names: Vec<String> = BINARIES
        .iter()
        .map(|(package, binary, _)| {
            Ok(format!("{binary}-{}-{triple}", package_version(&metadata, package)?))
        })
        .collect::<Result<_>>()?;
    check(root, out, &names)?;
    Ok(written)
}

/// Verifies the sums, runs each unpacked binary (each archive's top folder is one of `names`,
/// in the order of [`BINARIES`]), and validates each SBOM.
fn check(root: &Path, out: &Path, names: &[String]) -> Result<()> {
    run_quiet("sha256sum", &["--check", "--strict", "--quiet", "SHA256SUMS"], out)?;
    let unpacked = out.join("check");
    std::fs::create_dir_all(&unpacked)?;
    let mut sboms = Vec::new();
    for entry in std::fs::read_dir(out)? {
        let path = entry?.path();
        let file = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if file.ends_with(".tar.gz") {
            run_quiet(
                "tar",
                &["-xzf", &path.to_string_lossy(), "-C", &unpacked.to_string_lossy()],
                root,
            )?;
        } else if file.ends_with(".cdx.json") {
            sboms.push(path);
        }
    }
    for ((_, binary, _), name) in BINARIES.iter().zip(names) {
        let program = unpacked.join(name).join(binary);
        if !program.is_file() {
            bail!("the archive {name}.tar.gz holds no {name}/{binary}");
        }
        let version = Command::new(&program).arg("--version").output()?;
        let said = String::from_utf8_lossy(&version.stdout);
        if !version.status.success() || !said.starts_with(binary) {
            bail!("the packaged {binary} --version failed: {said}");
        }
        if *binary == "ferrohsm-server" {
            // The packaged server runs: a dev server in a scratch directory answers the
            // packaged healthcheck.
            let data = out.join("check/dev");
            std::fs::create_dir_all(&data)?;
            let server = DevServer::start(&program, &data, &[], Stdio::null())?;
            let url = format!("https://localhost:{}/healthz", server.port);
            let args = ["healthcheck", "--url", &url, "--ca-cert", &server.ca];
            let health = Command::new(&program).args(args).output()?;
            if !health.status.success() {
                bail!(
                    "the packaged server is not healthy: {}{}",
                    String::from_utf8_lossy(&health.stdout),
                    String::from_utf8_lossy(&health.stderr)
                );
            }
        }
    }
    std::fs::remove_dir_all(&unpacked)?;
    validate_sboms(root, &sboms)
}

/// Validates each SBOM against the CycloneDX 1.5 JSON schema with the CycloneDX project's own
/// Python library (installed from PyPI when absent).
fn validate_sboms(root: &Path, sboms: &[PathBuf]) -> Result<()> {
    let validation = "cyclonedx-python-lib[json-validation]>=8,<12";
    crate::python_package(root, "cyclonedx, jsonschema", validation)?;
    const VALIDATE: &str = "import sys
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
validator = JsonStrictValidator(SchemaVersion.V1_5)
failed = False
for path in sys.argv[1:]:
    error = validator.validate_str(open(path).read())
    if error is not None:
        print(f'{path}: {error}')
        failed = True
sys.exit(1 if failed else 0)
";
    let out = Command::new("python3")
        .arg("-c")
        .arg(VALIDATE)
        .args(sboms)
        .output()
        .context("running python3")?;
    if !out.status.success() {
        bail!(
            "an SBOM is not valid CycloneDX 1.5:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// `name version` of a crate in `cargo tree` output.
type Crate = (String, String);

/// The dependency graph of each released package, as the release build resolves it:
/// `package` → (its root crate, each crate's direct dependencies).
fn dependency_graphs(root: &Path, triple: &str) -> Result<BTreeMap<String, Graph>> {
    let mut args = vec!["tree", "--locked", "-e", "normal,no-proc-macro", "--target", triple];
    // Without dedupe: cargo prints a crate's subtree once across all roots, so the second
    // binary's tree would lose what the first one already showed (13k lines, 0.2 s).
    args.extend(["--prefix", "depth", "--format", "{p}", "--no-dedupe"]);
    for (package, _, _) in BINARIES {
        args.extend(["-p", package]);
    }
    let out = Command::new("cargo").args(&args).current_dir(root).output()?;
    if !out.status.success() {
        bail!("cargo tree failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let mut graphs = BTreeMap::new();
    let mut current: Option<(String, Graph)> = None;
    let mut path: Vec<Crate> = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.trim().is_empty()) {
        let digits = line.chars().take_while(char::is_ascii_digit).count();
        let depth: usize = line[..digits].parse().context("cargo tree printed no depth")?;
        let mut words = line[digits..].split_whitespace();
        let name = words.next().context("cargo tree printed no name")?.to_owned();
        let version = words.next().and_then(|v| v.strip_prefix('v'));
        let krate = (name, version.context("cargo tree printed no version")?.to_owned());
        if depth == 0 {
            if let Some((package, graph)) = current.take() {
                graphs.insert(package, graph);
            }
            current =
                Some((krate.0.clone(), Graph { root: krate.clone(), edges: BTreeMap::new() }));
        }
        let (_, graph) = current.as_mut().context("cargo tree printed no root")?;
        path.truncate(depth);
        if let Some(parent) = path.last() {
            graph.edges.entry(parent.clone()).or_default().insert(krate.clone());
        }
        graph.edges.entry(krate.clone()).or_default();
        path.push(krate);
    }
    if let Some((package, graph)) = current {
        graphs.insert(package, graph);
    }
    Ok(graphs)
}

/// One package's crates and their direct dependencies.
struct Graph {
    root: Crate,
    edges: BTreeMap<Crate, BTreeSet<Crate>>,
}

/// The CycloneDX document for `binary`, from its package's `graph`.
fn sbom_document(
    metadata: &Value,
    checksums: &BTreeMap<Crate, String>,
    graph: &Graph,
    binary: &str,
    epoch: u64,
) -> Result<Value> {
    let packages: BTreeMap<Crate, &Value> = metadata["packages"]
        .as_array()
        .context("cargo metadata has no packages")?
        .iter()
        .filter_map(|p| Some(((p["name"].as_str()?.into(), p["version"].as_str()?.into()), p)))
        .collect();
    let purl = |(name, version): &Crate| format!("pkg:cargo/{name}@{version}");
    let component = |krate: &Crate, kind: &str| -> Result<Value> {
        let p =
            packages.get(krate).with_context(|| format!("{krate:?} is not in cargo metadata"))?;
        let mut c = json!({
            "type": kind,
            "bom-ref": purl(krate),
            "name": krate.0,
            "version": krate.1,
            "purl": purl(krate),
        });
        if let Some(description) = p["description"].as_str() {
            c["description"] = json!(description.trim());
        }
        if let Some(license) = p["license"].as_str() {
            // Old manifests write `MIT/Apache-2.0`; SPDX says `MIT OR Apache-2.0`.
            c["licenses"] = json!([{ "expression": license.replace('/', " OR ") }]);
        }
        if let Some(sum) = checksums.get(krate) {
            c["hashes"] = json!([{ "alg": "SHA-256", "content": sum }]);
        }
        if p["source"].is_null() {
            c["properties"] = json!([{ "name": "ferrohsm:source", "value": "this repository" }]);
        }
        Ok(c)
    };
    let mut components = Vec::new();
    let mut dependencies = Vec::new();
    for (krate, deps) in &graph.edges {
        if *krate != graph.root {
            components.push(component(krate, "library")?);
        }
        let depends: Vec<String> = deps.iter().map(purl).collect();
        dependencies.push(json!({ "ref": purl(krate), "dependsOn": depends }));
    }
    let timestamp = Command::new("date")
        .args(["-u", "-d", &format!("@{epoch}"), "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|t| !t.is_empty())
        .context("formatting the SBOM timestamp")?;
    let mut main = component(&graph.root, "application")?;
    main["name"] = json!(binary);
    Ok(json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "version": 1,
        "metadata": {
            "timestamp": timestamp,
            "tools": { "components": [{ "type": "application", "name": "cargo xtask dist" }] },
            "component": main,
        },
        "components": components,
        "dependencies": dependencies,
    }))
}

/// `(name, version)` → the SHA-256 Cargo.lock records for each registry package.
fn lock_checksums(root: &Path) -> Result<BTreeMap<Crate, String>> {
    let text = std::fs::read_to_string(root.join("Cargo.lock")).context("reading Cargo.lock")?;
    let lock: toml::Table = toml::from_str(&text).context("parsing Cargo.lock")?;
    let mut sums = BTreeMap::new();
    for p in lock.get("package").and_then(|p| p.as_array()).into_iter().flatten() {
        let field = |k: &str| p.get(k).and_then(|v| v.as_str()).map(str::to_owned);
        if let (Some(name), Some(version), Some(sum)) =
            (field("name"), field("version"), field("checksum"))
        {
            sums.insert((name, version), sum);
        }
    }
    Ok(sums)
}

fn cargo_metadata(root: &Path, triple: &str) -> Result<Value> {
    let out = Command::new("cargo")
        .args(["metadata", "--format-version", "1", "--locked", "--filter-platform", triple])
        .current_dir(root)
        .output()
        .context("running cargo metadata")?;
    if !out.status.success() {
        bail!("cargo metadata failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    serde_json::from_slice(&out.stdout).context("parsing cargo metadata")
}

fn package_version(metadata: &Value, package: &str) -> Result<String> {
    metadata["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == package && p["source"].is_null())
        .and_then(|p| p["version"].as_str().map(str::to_owned))
        .with_context(|| format!("{package} is not a workspace package"))
}

fn host_triple() -> Result<String> {
    let out = Command::new("rustc").arg("-vV").output().context("running rustc -vV")?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_owned))
        .context("rustc -vV printed no host")
}

/// The time of the last commit (archive entries and the SBOM carry it), or
/// `SOURCE_DATE_EPOCH` when set.
fn source_date_epoch(root: &Path) -> u64 {
    if let Some(epoch) = std::env::var("SOURCE_DATE_EPOCH").ok().and_then(|e| e.parse().ok()) {
        return epoch;
    }
    let epoch = Command::new("git")
        .args(["log", "-1", "--format=%ct"])
        .current_dir(root)
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok());
    epoch.unwrap_or_else(|| {
        eprintln!("xtask: no commit time from git and no SOURCE_DATE_EPOCH: dating entries 1970");
        0
    })
}

/// Runs a command, failing with what it printed.
fn run_quiet(program: &str, args: &[&str], dir: &Path) -> Result<()> {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .with_context(|| format!("starting {program}"))?;
    if !out.status.success() {
        bail!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}
