//! OCSP stapling (issue 16): responses made by `openssl ocsp` for a PKI made by `openssl` are
//! checked (fresh, good, for the served certificate), stapled (`openssl s_client -status`
//! shows them), replaced when the file changes, and refused with a log line and a metric when
//! they are stale, revoked, unknown or for another certificate.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ferrohsm_server::ocsp;
use time::OffsetDateTime;

use crate::harness::{Options, TestServer};

/// A CA and two leaf certificates for `localhost` (serials 0x1001 and 0x1002), made with the
/// `openssl` command, and OCSP responses for them.
struct OpensslPki {
    dir: tempfile::TempDir,
}

fn openssl(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("openssl").current_dir(dir).args(args).output().unwrap();
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

impl OpensslPki {
    fn new(ca_name: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
        let subject = format!("/CN={ca_name}");
        let mut ca = vec!["req", "-x509", "-keyout", "ca.key", "-out", "ca.crt"];
        ca.extend(ec);
        ca.extend(["-subj", &subject, "-days", "30"]);
        openssl(d, &ca);
        std::fs::write(d.join("san.ext"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n").unwrap();
        for serial in ["1001", "1002"] {
            let (key, csr, crt) =
                (format!("{serial}.key"), format!("{serial}.csr"), format!("{serial}.crt"));
            let mut req = vec!["req", "-keyout", &key, "-out", &csr, "-subj", "/CN=localhost"];
            req.extend(ec);
            openssl(d, &req);
            let serial = format!("0x{serial}");
            openssl(
                d,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &csr,
                    "-CA",
                    "ca.crt",
                    "-CAkey",
                    "ca.key",
                    "-set_serial",
                    &serial,
                    "-extfile",
                    "san.ext",
                    "-days",
                    "30",
                    "-out",
                    &crt,
                ],
            );
        }
        OpensslPki { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The DER of a PEM file of this PKI.
    fn der(&self, name: &str) -> Vec<u8> {
        openssl(self.dir.path(), &["x509", "-in", name, "-outform", "DER", "-out", "der.tmp"]);
        std::fs::read(self.path("der.tmp")).unwrap()
    }

    /// A response about `serial` saying `status` (`V` valid, `R` revoked), from the CA's own
    /// key; `validity` are `openssl ocsp` options such as `-ndays 1`; `hash` names the CertID
    /// hash (`-sha1`, `-sha256`).
    fn response(&self, serial: &str, status: char, validity: &[&str], hash: &str) -> Vec<u8> {
        let d = self.dir.path();
        let revoked = if status == 'R' { "251201000000Z" } else { "" };
        let index =
            format!("{status}\t301231000000Z\t{revoked}\t{serial}\tunknown\t/CN=localhost\n");
        std::fs::write(d.join("index.txt"), index).unwrap();
        let serial = format!("0x{serial}");
        openssl(d, &["ocsp", "-issuer", "ca.crt", hash, "-serial", &serial, "-reqout", "req.der"]);
        let mut respond = vec![
            "ocsp",
            "-index",
            "index.txt",
            "-rsigner",
            "ca.crt",
            "-rkey",
            "ca.key",
            "-CA",
            "ca.crt",
            "-reqin",
            "req.der",
            "-respout",
            "resp.der",
        ];
        respond.extend(validity);
        openssl(d, &respond);
        std::fs::read(d.join("resp.der")).unwrap()
    }
}

#[test]
fn responses_are_checked_against_the_served_certificate_and_the_clock() {
    let pki = OpensslPki::new("OCSP test CA");
    let (leaf, issuer) = (pki.der("1001.crt"), pki.der("ca.crt"));
    let now = OffsetDateTime::now_utc();
    let day = ["-ndays", "1"];
    let check =
        |response: &[u8], at: OffsetDateTime| ocsp::check(response, &leaf, Some(&issuer), at);

    for hash in ["-sha1", "-sha256"] {
        let good = pki.response("1001", 'V', &day, hash);
        let fresh = check(&good, now).unwrap_or_else(|e| panic!("{hash}: {e}"));
        assert!(fresh.next_update > now + time::Duration::hours(23), "{fresh:?}");
        // Past its nextUpdate it is stale; before its thisUpdate (beyond the skew), in the future.
        let stale = check(&good, now + time::Duration::days(2)).unwrap_err();
        assert_eq!(stale.reason, "stale", "{stale}");
        let early = check(&good, now - time::Duration::hours(1)).unwrap_err();
        assert_eq!(early.reason, "future", "{early}");
        // Without the issuer certificate in the chain, the name hash and serial still match.
        assert!(ocsp::check(&good, &leaf, None, now).is_ok());
    }
    let refused = |response: Vec<u8>| check(&response, now).unwrap_err().reason;
    assert_eq!(refused(pki.response("1002", 'V', &day, "-sha1")), "mismatch", "another serial");
    assert_eq!(refused(pki.response("1001", 'R', &day, "-sha1")), "revoked");
    assert_eq!(refused(pki.response("1001", 'V', &[], "-sha1")), "stale", "no nextUpdate");
    // The same serial from another CA: the issuer's name and key hashes differ.
    let other = OpensslPki::new("Another CA");
    assert_eq!(refused(other.response("1001", 'V', &day, "-sha1")), "mismatch");
    // Bytes that are not a response, cut or with trailing bytes.
    let good = pki.response("1001", 'V', &day, "-sha256");
    for bad in [&good[..good.len() / 2], b"not der", &[good.as_slice(), &[0]].concat()] {
        assert_eq!(check(bad, now).unwrap_err().reason, "malformed");
    }
}

/// What `openssl s_client -status` says about the stapled response.
fn stapled(port: u16) -> String {
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}"), "-servername", "localhost"])
        .args(["-status", "-tls1_3"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let start = text.find("OCSP response:").unwrap_or(0);
    let end = text[start..].find("---").map_or(text.len(), |e| start + e);
    text[start..end].to_owned()
}

/// Waits (the server reloads every 100 ms) until the stapled response satisfies `ok`.
async fn until_stapled(port: u16, what: &str, ok: impl Fn(&str) -> bool) -> String {
    let mut last = String::new();
    for _ in 0..50 {
        last = tokio::task::spawn_blocking(move || stapled(port)).await.unwrap();
        if ok(&last) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}: s_client last showed {last}");
}

fn this_update(stapled: &str) -> Option<String> {
    stapled.lines().find_map(|l| l.trim().strip_prefix("This Update: ").map(str::to_owned))
}

#[tokio::test]
async fn a_fresh_response_is_stapled_replaced_on_change_and_refused_when_wrong() {
    let server = TestServer::start_with(Options { ocsp: true, ..Options::default() }).await;
    let port = server.server.as_ref().unwrap().local_addr().port();
    // No response file yet: served without stapling.
    until_stapled(port, "no response at first", |s| s.contains("no response sent")).await;

    // The server's certificate becomes one of an openssl PKI, with a response for it.
    let pki = OpensslPki::new("Stapling CA");
    let ocsp_file = server.dir.path().join("ocsp.der");
    std::fs::copy(pki.path("1001.key"), &server.key_path).unwrap();
    std::fs::copy(pki.path("1001.crt"), &server.cert_path).unwrap();
    std::fs::write(&ocsp_file, pki.response("1001", 'V', &["-ndays", "1"], "-sha1")).unwrap();
    let first =
        until_stapled(port, "the first response", |s| s.contains("Cert Status: good")).await;
    assert!(first.contains("OCSP Response Status: successful"), "{first}");

    // A newer response replaces it (thisUpdate has one-second resolution).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    std::fs::write(&ocsp_file, pki.response("1001", 'V', &["-ndays", "1"], "-sha256")).unwrap();
    let was = this_update(&first);
    let second = until_stapled(port, "the replaced response", |s| {
        s.contains("Cert Status: good") && this_update(s) != was
    })
    .await;
    assert!(this_update(&second).is_some(), "{second}");

    // A response for another certificate, a revoked one, or an oversized file is not stapled,
    // and is counted.
    let ca = reqwest::Certificate::from_pem(&std::fs::read(pki.path("ca.crt")).unwrap());
    let client = reqwest::Client::builder().tls_certs_only([ca.unwrap()]).build().unwrap();
    let oversized = vec![0u8; 65 * 1024];
    for (response, reason) in [
        (pki.response("1002", 'V', &["-ndays", "1"], "-sha1"), "mismatch"),
        (pki.response("1001", 'R', &["-ndays", "1"], "-sha1"), "revoked"),
        (oversized, "oversized"),
    ] {
        std::fs::write(&ocsp_file, response).unwrap();
        let line = format!("ferrohsm_tls_ocsp_refused_total{{reason=\"{reason}\"}}");
        let mut counted = false;
        for _ in 0..50 {
            let metrics = client.get(format!("{}/metrics", server.url)).send().await;
            if metrics.unwrap().text().await.unwrap().contains(&line) {
                counted = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(counted, "the {reason} refusal is counted");
        until_stapled(port, reason, |s| s.contains("no response sent")).await;
    }
}
