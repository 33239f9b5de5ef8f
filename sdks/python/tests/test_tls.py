"""TLS and mutual TLS against a local HTTPS server that demands a client certificate."""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import ferrohsm
from conftest import Flavour
from ferrohsm import AsyncClient, Client, ConfigurationError, TransportError
from samples import key


@dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _issue(
    subject: str,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    is_ca: bool,
    san: list[x509.GeneralName] | None = None,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    private = ec.generate_private_key(ec.SECP256R1())
    issuer_name, issuer_key = issuer if issuer else (_name(subject), private)
    now = datetime.now(timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
    )
    if is_ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        ).add_extension(
            x509.SubjectKeyIdentifier.from_public_key(private.public_key()), critical=False
        )
    else:
        assert issuer is not None
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer[1].public_key()),
            critical=False,
        )
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return builder.sign(issuer_key, hashes.SHA256()), private


def _write(
    path: Path, cert: x509.Certificate, private: ec.EllipticCurvePrivateKey | None = None
) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if private is not None:
        path.with_suffix(".key").write_bytes(
            private.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca, ca_key = _issue("test ca", None, True)
    other, _ = _issue("other ca", None, True)
    server, server_key = _issue(
        "localhost", (ca.subject, ca_key), False,
        [x509.DNSName("localhost"), x509.IPAddress(IPv4Address("127.0.0.1"))],
    )
    client, client_key = _issue("ci-runner", (ca.subject, ca_key), False)
    _write(d / "ca.pem", ca)
    _write(d / "other-ca.pem", other)
    _write(d / "server.pem", server, server_key)
    _write(d / "client.pem", client, client_key)
    return Pki(
        ca=d / "ca.pem",
        server_cert=d / "server.pem",
        server_key=d / "server.key",
        client_cert=d / "client.pem",
        client_key=d / "client.key",
        other_ca=d / "other-ca.pem",
    )


@dataclass
class Peers:
    subjects: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def mtls_server(pki: Pki) -> Iterator[tuple[str, Peers]]:
    peers = Peers()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            assert isinstance(self.connection, ssl.SSLSocket)
            der = self.connection.getpeercert(binary_form=True)
            if der:
                subject = x509.load_der_x509_certificate(der).subject
                names = subject.get_attributes_for_oid(NameOID.COMMON_NAME)
                peers.subjects.append(",".join(str(n.value) for n in names))
            body = json.dumps(key()).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki.server_cert, pki.server_key)
    ctx.load_verify_locations(pki.ca)
    ctx.verify_mode = ssl.CERT_REQUIRED
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://localhost:{httpd.server_address[1]}", peers
    finally:
        httpd.shutdown()
        httpd.server_close()


def _client(
    flavour: Flavour,
    url: str,
    ca_cert: Path,
    client_cert: Path | None = None,
    client_key: Path | None = None,
) -> Client | AsyncClient:
    cls = Client if flavour.name == "sync" else AsyncClient
    return cls(
        url,
        "tok",
        ca_cert=ca_cert,
        client_cert=client_cert,
        client_key=client_key,
        retry=ferrohsm.NO_RETRIES,
    )


async def test_a_client_certificate_is_presented(
    flavour: Flavour, pki: Pki, mtls_server: tuple[str, Peers]
) -> None:
    url, peers = mtls_server
    client = _client(
        flavour, url, ca_cert=pki.ca, client_cert=pki.client_cert, client_key=pki.client_key
    )
    info = await flavour.run(client.describe_key("k"))
    assert info.name == "orders"
    assert peers.subjects[-1] == "ci-runner"
    await flavour.close(client)


async def test_without_a_client_certificate_the_handshake_fails(
    flavour: Flavour, pki: Pki, mtls_server: tuple[str, Peers]
) -> None:
    url, _ = mtls_server
    client = _client(flavour, url, ca_cert=pki.ca)
    with pytest.raises(TransportError):
        await flavour.run(client.describe_key("k"))
    await flavour.close(client)


async def test_a_server_signed_by_another_ca_is_refused(
    flavour: Flavour, pki: Pki, mtls_server: tuple[str, Peers]
) -> None:
    url, _ = mtls_server
    client = _client(
        flavour, url, ca_cert=pki.other_ca, client_cert=pki.client_cert, client_key=pki.client_key
    )
    with pytest.raises(TransportError, match="CERTIFICATE_VERIFY_FAILED"):
        await flavour.run(client.describe_key("k"))
    await flavour.close(client)


def test_bad_tls_files_are_configuration_errors(pki: Pki) -> None:
    with pytest.raises(ConfigurationError, match="TLS configuration"):
        ferrohsm.tls_context(ca_cert=pki.ca, client_cert=pki.client_cert, client_key=pki.server_key)
    with pytest.raises(ConfigurationError, match="needs client_cert"):
        ferrohsm.tls_context(ca_cert=pki.ca, client_key=pki.client_key)
    with pytest.raises(ConfigurationError):
        Client("https://localhost:1", "t", ca_cert=pki.ca.parent / "absent.pem")
    ctx = ferrohsm.tls_context(pki.ca, pki.client_cert, pki.client_key)
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
