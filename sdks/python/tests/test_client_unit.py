"""Unit tests of both clients over ``httpx.MockTransport``: requests, errors, retries,
pagination, token sources and the dual-control helper. Every test runs with ``Client`` and
with ``AsyncClient`` (the ``flavour`` fixture)."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

import ferrohsm
import ferrohsm._core
from conftest import AnyClient, Flavour, Mock, Sleeps, error_body, reply
from ferrohsm import (
    APIError,
    ApprovalInfo,
    ApprovalNotGrantedError,
    ApprovalRequiredError,
    ApprovalTimeoutError,
    AsyncClient,
    AuditFilter,
    Client,
    ComponentHealth,
    ConflictError,
    ErrorCode,
    ForbiddenError,
    InvalidRequestError,
    NotFoundError,
    ProtocolError,
    RateLimitedError,
    RetryPolicy,
    ServerError,
    TransportError,
    UnauthenticatedError,
    UnavailableError,
)
from samples import APPROVAL_ID, KEY_ID, approval, audit_record, key

NO_JITTER = RetryPolicy(jitter=lambda low, high: high)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# ----- Requests ------------------------------------------------------------------------------


async def test_create_key_sends_the_rest_body_and_parses_the_answer(flavour: Flavour) -> None:
    mock = Mock([reply(201, key(), {"Location": f"/v1/keys/{KEY_ID}"})])
    client = flavour.client(mock)
    info = await flavour.run(
        client.create_key(
            ferrohsm.Algorithm.AES_256_GCM,
            name="orders",
            usages=[ferrohsm.Usage.ENCRYPT, "decrypt"],
            tags={"team": "a"},
            request_id="my-req",
        )
    )
    request = mock.requests[0]
    assert (request.method, request.url.path) == ("POST", "/v1/keys")
    assert mock.body() == {
        "name": "orders",
        "algorithm": "aes-256-gcm",
        "usages": ["encrypt", "decrypt"],
        "tags": {"team": "a"},
    }
    assert request.headers["Authorization"] == "Bearer tok"
    assert request.headers["X-Request-Id"] == "my-req"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["User-Agent"].startswith("ferrohsm-python/")
    assert "X-Approval-Id" not in request.headers
    assert info.id == KEY_ID
    assert info.algorithm is ferrohsm.Algorithm.AES_256_GCM
    assert info.state is ferrohsm.KeyState.ACTIVE
    assert info.versions[0].created_at == datetime(2026, 12, 1, 18, 23, 15, 180959, timezone.utc)
    assert info.custody is ferrohsm.Custody.SEALED
    await flavour.close(client)


async def test_create_key_sends_custody_when_given(flavour: Flavour) -> None:
    mock = Mock([reply(201, key(custody="pkcs11")), reply(201, key(custody="pkcs11"))])
    client = flavour.client(mock)
    info = await flavour.run(client.create_key("ec-p256", custody=ferrohsm.Custody.PKCS11))
    await flavour.run(client.create_key("ec-p256", custody="pkcs11"))
    assert mock.body(0) == mock.body(1) == {"algorithm": "ec-p256", "custody": "pkcs11"}
    assert info.custody is ferrohsm.Custody.PKCS11
    await flavour.close(client)


async def test_binary_fields_travel_as_base64_and_come_back_as_bytes(flavour: Flavour) -> None:
    mock = Mock(
        [
            reply(200, {"key_id": KEY_ID, "key_version": 3, "ciphertext": "fhsm:v3:AAAA"}),
            reply(200, {"key_id": KEY_ID, "key_version": 3, "plaintext": b64(b"\x00secret")}),
        ]
    )
    client = flavour.client(mock)
    encrypted = await flavour.run(client.encrypt("orders", b"\x00secret", aad=b"ctx"))
    assert mock.body(0) == {"plaintext": b64(b"\x00secret"), "aad": b64(b"ctx")}
    assert encrypted.ciphertext == "fhsm:v3:AAAA"
    plain = await flavour.run(client.decrypt("orders", encrypted.ciphertext))
    assert mock.body(1) == {"ciphertext": "fhsm:v3:AAAA"}
    assert plain.plaintext == b"\x00secret"
    assert "secret" not in repr(plain)
    assert [r.url.path for r in mock.requests] == [
        "/v1/keys/orders/encrypt",
        "/v1/keys/orders/decrypt",
    ]
    await flavour.close(client)


async def test_sign_and_verify_bodies(flavour: Flavour) -> None:
    common = {"key_id": KEY_ID, "key_version": 1, "algorithm": "ecdsa-p256-sha256"}
    signed = {**common, "signature": b64(b"sig")}
    verified = {**common, "valid": True}
    mock = Mock([reply(200, signed), reply(200, verified)])
    client = flavour.client(mock)
    result = await flavour.run(client.sign("k", digest=b"\x01" * 32, algorithm="ecdsa-p256-sha256"))
    assert mock.body(0) == {"digest": b64(b"\x01" * 32), "algorithm": "ecdsa-p256-sha256"}
    assert result.signature == b"sig"
    assert result.algorithm is ferrohsm.SignatureScheme.ECDSA_P256_SHA256
    check = await flavour.run(client.verify("k", b"sig", message=b"m", key_version=1))
    assert mock.body(1) == {"message": b64(b"m"), "signature": b64(b"sig"), "key_version": 1}
    assert check.valid is True
    await flavour.close(client)


async def test_paths_escape_key_names_and_optional_bodies_are_left_out(flavour: Flavour) -> None:
    mock = Mock([reply(200, key())])
    client = flavour.client(mock)
    await flavour.run(client.destroy_key("a/b c"))
    await flavour.run(client.destroy_key("k", grace_seconds=0, approval_id=APPROVAL_ID))
    await flavour.run(client.rollback_key("k", 2))
    await flavour.run(client.revoke_key("k", ferrohsm.RevocationReason.SUPERSEDED))
    first, second, third, fourth = mock.requests
    assert first.url.raw_path == b"/v1/keys/a%2Fb%20c/destroy"
    assert first.content == b"" and "Content-Type" not in first.headers
    assert json.loads(second.content) == {"grace_seconds": 0}
    assert second.headers["X-Approval-Id"] == APPROVAL_ID
    assert json.loads(third.content) == {"version": 2}
    assert json.loads(fourth.content) == {"reason": "superseded"}
    await flavour.close(client)


async def test_votes_send_a_body_only_with_a_comment(flavour: Flavour) -> None:
    mock = Mock([reply(200, approval(approvals=1))])
    client = flavour.client(mock)
    await flavour.run(client.approve(APPROVAL_ID))
    await flavour.run(client.deny(APPROVAL_ID, comment="no"))
    assert mock.requests[0].url.path == f"/v1/approvals/{APPROVAL_ID}/approve"
    assert mock.requests[0].content == b""
    assert mock.requests[1].url.path == f"/v1/approvals/{APPROVAL_ID}/deny"
    assert mock.body(1) == {"comment": "no"}
    await flavour.close(client)


async def test_list_and_audit_queries(flavour: Flavour) -> None:
    mock = Mock([reply(200, {"keys": [], "next_cursor": None})])
    client = flavour.client(mock)
    await flavour.run(
        client.list_keys(
            limit=5,
            state=ferrohsm.KeyState.REVOKED,
            tags={"team": "a", "env": "p:x"},
            name_prefix="o",
        )
    )
    assert mock.requests[0].url.params.multi_items() == [
        ("limit", "5"),
        ("state", "revoked"),
        ("tag", "team:a"),
        ("tag", "env:p:x"),
        ("name_prefix", "o"),
    ]
    mock.answers = [reply(200, {"records": [], "next_cursor": None})]
    since = datetime(2026, 11, 1, tzinfo=timezone.utc)
    await flavour.run(
        client.audit_records(
            limit=10,
            where=AuditFilter(
                actor="ops", outcome=ferrohsm.AuditOutcome.DENIED, request_id="r9", since=since
            ),
            request_id="mine",
        )
    )
    request = mock.requests[1]
    assert request.url.params.multi_items() == [
        ("limit", "10"),
        ("actor", "ops"),
        ("outcome", "denied"),
        ("request_id", "r9"),
        ("since", "2026-11-01T00:00:00Z"),
    ]
    assert request.headers["X-Request-Id"] == "mine"
    await flavour.close(client)


async def test_export_streams_the_log(flavour: Flavour) -> None:
    lines = b'{"seq":1}\n{"seq":2}\n'
    mock = Mock([reply(200, lines, {"Content-Type": "application/x-ndjson"})])
    client = flavour.client(mock)
    out = io.BytesIO()
    written = await flavour.run(client.export_audit(out))
    assert (written, out.getvalue()) == (len(lines), lines)
    mock.answers = [reply(403, error_body("forbidden"))]
    with pytest.raises(ForbiddenError):
        await flavour.run(client.export_audit(io.BytesIO()))
    await flavour.close(client)


async def test_a_degraded_health_is_an_answer(flavour: Flavour) -> None:
    component = {"status": "ok", "detail": "x"}
    body = {"status": "degraded", "version": "1", "store": component, "audit": component,
            "seal": component, "policy": {"status": "error", "detail": "bad file"}}
    mock = Mock([reply(503, body)])
    client = flavour.client(mock)
    health = await flavour.run(client.health())
    assert health.status == "degraded" and health.policy.detail == "bad file"
    assert health.vault is None
    assert len(mock.requests) == 1
    await flavour.close(client)


async def test_health_reads_the_vault_when_present(flavour: Flavour) -> None:
    component = {"status": "ok", "detail": "x"}
    base = {"version": "1", "store": component, "audit": component, "seal": component,
            "policy": component}
    failing = {"status": "failing", "detail": "token unreachable"}
    mock = Mock([
        reply(503, {**base, "status": "degraded", "vault": failing}),
        reply(200, {**base, "status": "ok", "vault": {"status": "ok", "detail": "pkcs11"}}),
        reply(200, {**base, "status": "ok", "vault": None}),
    ])
    client = flavour.client(mock)
    health = await flavour.run(client.health())
    assert health.status == "degraded"
    assert health.vault == ComponentHealth(status="failing", detail="token unreachable")
    health = await flavour.run(client.health())
    assert health.vault == ComponentHealth(status="ok", detail="pkcs11")
    health = await flavour.run(client.health())
    assert health.vault is None
    await flavour.close(client)


async def test_health_reads_the_tls_certificate_state_when_present(flavour: Flavour) -> None:
    component = {"status": "ok", "detail": "x"}
    base = {"version": "1", "store": component, "audit": component, "seal": component,
            "policy": component, "status": "ok"}
    renewing = {"status": "error", "detail": "acme hsm.example; 3 consecutive renewal failures"}
    mock = Mock([reply(200, {**base, "tls": renewing}), reply(200, base)])
    client = flavour.client(mock)
    health = await flavour.run(client.health())
    assert health.status == "ok"
    assert health.tls == ComponentHealth(**renewing)
    health = await flavour.run(client.health())
    assert health.tls is None
    await flavour.close(client)


# ----- Errors --------------------------------------------------------------------------------

ERRORS: list[tuple[str, int, type[APIError]]] = [
    ("invalid_request", 400, InvalidRequestError),
    ("invalid_usage", 400, InvalidRequestError),
    ("unsupported", 400, InvalidRequestError),
    ("invalid_ciphertext", 400, InvalidRequestError),
    ("unauthenticated", 401, UnauthenticatedError),
    ("forbidden", 403, ForbiddenError),
    ("not_found", 404, NotFoundError),
    ("conflict", 409, ConflictError),
    ("invalid_state", 409, ConflictError),
    ("payload_too_large", 413, InvalidRequestError),
    ("rate_limited", 429, RateLimitedError),
    ("unavailable", 503, UnavailableError),
    ("integrity", 500, ServerError),
    ("internal", 500, ServerError),
]


@pytest.mark.parametrize(("code", "status", "cls"), ERRORS)
async def test_error_bodies_become_typed_errors(
    flavour: Flavour, code: str, status: int, cls: type[APIError]
) -> None:
    headers = {"Retry-After": "7"} if status == 429 else {}
    mock = Mock([reply(status, error_body(code, "what happened", "rid-9"), headers)])
    client = flavour.client(mock, retry=ferrohsm.NO_RETRIES)
    with pytest.raises(cls) as caught:
        await flavour.run(client.describe_key("k"))
    error = caught.value
    assert type(error) is cls
    assert (error.code, error.status, error.message, error.request_id) == (
        ErrorCode(code), status, "what happened", "rid-9",
    )
    assert error.code.is_known
    if isinstance(error, RateLimitedError):
        assert error.retry_after == 7.0
    await flavour.close(client)


async def test_an_unknown_code_is_still_an_api_error(flavour: Flavour) -> None:
    body = {
        "error": {"code": "quota_exceeded", "message": "m", "request_id": "r", "hint": "h"},
        "x": 1,
    }
    mock = Mock([reply(402, body)])
    client = flavour.client(mock)
    with pytest.raises(APIError) as caught:
        await flavour.run(client.describe_key("k"))
    assert type(caught.value) is APIError
    assert caught.value.code == "quota_exceeded"
    assert not caught.value.code.is_known
    assert caught.value.status == 402
    await flavour.close(client)


async def test_a_body_that_is_no_error_body_keeps_status_and_request_id(flavour: Flavour) -> None:
    mock = Mock([reply(502, "<html>bad gateway</html>", {"X-Request-Id": "proxy-1"})])
    client = flavour.client(mock)
    with pytest.raises(APIError) as caught:
        await flavour.run(client.describe_key("k"))
    assert caught.value.code is ErrorCode.UNKNOWN
    assert caught.value.status == 502
    assert caught.value.request_id == "proxy-1"
    assert "bad gateway" in caught.value.message
    await flavour.close(client)


async def test_a_success_that_breaks_the_contract_is_a_protocol_error(flavour: Flavour) -> None:
    broken = key()
    del broken["state"]
    mock = Mock([reply(200, broken)])
    client = flavour.client(mock)
    with pytest.raises(ProtocolError, match=r"KeyInfo\.state: missing"):
        await flavour.run(client.describe_key("k"))
    mock.answers = [reply(200, "not json")]
    with pytest.raises(ProtocolError, match="not JSON"):
        await flavour.run(client.describe_key("k"))
    await flavour.close(client)


async def test_transport_failures_are_ferrohsm_errors(flavour: Flavour) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    client = flavour.client(Mock([refuse]))
    with pytest.raises(TransportError) as caught:
        await flavour.run(client.describe_key("k"))
    assert isinstance(caught.value.__cause__, httpx.ConnectError)
    await flavour.close(client)


async def test_approval_required_carries_the_approval(flavour: Flavour) -> None:
    headers = {"Location": f"/v1/approvals/{APPROVAL_ID}", "X-Approval-Id": APPROVAL_ID}
    mock = Mock([reply(202, approval(), headers)])
    client = flavour.client(mock)
    with pytest.raises(ApprovalRequiredError) as caught:
        await flavour.run(client.destroy_key("k", grace_seconds=0))
    error = caught.value
    assert error.approval_id == APPROVAL_ID
    assert error.approval.state is ferrohsm.ApprovalState.PENDING
    assert error.approval.quorum == 2
    assert error.approval.parameters[2].name == "grace_seconds"
    assert (error.status, error.code) == (202, ErrorCode.APPROVAL_REQUIRED)
    assert error.location == f"/v1/approvals/{APPROVAL_ID}"
    assert error.request_id == "req-1"
    await flavour.close(client)


# ----- Retries -------------------------------------------------------------------------------


async def test_a_read_is_retried_after_retry_after(flavour: Flavour, sleeps: Sleeps) -> None:
    mock = Mock(
        [
            reply(429, error_body("rate_limited"), {"Retry-After": "2"}),
            reply(503, error_body("unavailable")),
            reply(200, key()),
        ]
    )
    client = flavour.client(mock, retry=NO_JITTER)
    info = await flavour.run(client.describe_key("k"))
    assert info.id == KEY_ID
    assert len(mock.requests) == 3
    # At least Retry-After after the 429; the jittered backoff (here its maximum) after the 503.
    assert sleeps.seconds == [2.0, NO_JITTER.initial_backoff * 2]
    await flavour.close(client)


async def test_retry_after_as_an_http_date(
    flavour: Flavour, sleeps: Sleeps, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The client's clock stands still 30 s before the date (whole seconds, as HTTP dates
    # are), so the wait is exact however long the test takes to get there.
    now = datetime(2026, 12, 1, 18, 0, 0, tzinfo=timezone.utc)
    monkeypatch.setattr(ferrohsm._core, "time", SimpleNamespace(time=now.timestamp))
    when = now + timedelta(seconds=30)
    retry_after = {"Retry-After": format_datetime(when, usegmt=True)}
    mock = Mock([reply(429, error_body("rate_limited"), retry_after), reply(200, key())])
    client = flavour.client(mock, retry=NO_JITTER)
    await flavour.run(client.describe_key("k"))
    assert sleeps.seconds == [30.0]
    await flavour.close(client)


async def test_backoff_grows_and_is_jittered_within_its_bound(
    flavour: Flavour, sleeps: Sleeps
) -> None:
    bounds: list[float] = []

    def jitter(low: float, high: float) -> float:
        bounds.append(high)
        return high / 2

    policy = RetryPolicy(max_retries=4, initial_backoff=1.0, max_backoff=3.0, jitter=jitter)
    mock = Mock([reply(503, error_body("unavailable"))])
    client = flavour.client(mock, retry=policy)
    with pytest.raises(UnavailableError):
        await flavour.run(client.encrypt("k", b"x"))
    assert len(mock.requests) == 5
    assert bounds[:4] == [1.0, 2.0, 3.0, 3.0]
    assert sleeps.seconds == [0.5, 1.0, 1.5, 1.5]
    await flavour.close(client)


async def test_retries_are_bounded(flavour: Flavour, sleeps: Sleeps) -> None:
    mock = Mock([reply(429, error_body("rate_limited"), {"Retry-After": "1"})])
    client = flavour.client(mock, retry=RetryPolicy(max_retries=2))
    with pytest.raises(RateLimitedError) as caught:
        await flavour.run(client.list_keys())
    assert len(mock.requests) == 3 and len(sleeps.seconds) == 2
    assert caught.value.retry_after == 1.0
    await flavour.close(client)


async def test_a_long_retry_after_is_not_waited_for(flavour: Flavour, sleeps: Sleeps) -> None:
    mock = Mock([reply(429, error_body("rate_limited"), {"Retry-After": "3600"})])
    client = flavour.client(mock, retry=RetryPolicy(max_retry_after=60))
    with pytest.raises(RateLimitedError) as caught:
        await flavour.run(client.sign("k", message=b"m"))
    assert len(mock.requests) == 1 and sleeps.seconds == []
    assert caught.value.retry_after == 3600.0
    await flavour.close(client)


async def test_other_errors_are_not_retried(flavour: Flavour, sleeps: Sleeps) -> None:
    mock = Mock([reply(500, error_body("internal"))])
    client = flavour.client(mock)
    with pytest.raises(ServerError):
        await flavour.run(client.describe_key("k"))
    assert len(mock.requests) == 1 and sleeps.seconds == []
    await flavour.close(client)


SIDE_EFFECTS: dict[str, Callable[[AnyClient], object]] = {
    "create_key": lambda c: c.create_key("aes-256-gcm"),
    "rotate_key": lambda c: c.rotate_key("k"),
    "rollback_key": lambda c: c.rollback_key("k", 1),
    "revoke_key": lambda c: c.revoke_key("k", "superseded"),
    "destroy_key": lambda c: c.destroy_key("k"),
    "cancel_destroy": lambda c: c.cancel_destroy("k"),
    "approve": lambda c: c.approve(APPROVAL_ID),
    "deny": lambda c: c.deny(APPROVAL_ID),
    "issue_token": lambda c: c.issue_token("bob", ["operator"]),
    "revoke_token": lambda c: c.revoke_token(jti="j"),
    "checkpoint_audit": lambda c: c.checkpoint_audit(),
    "encrypt with an approval id": lambda c: c.encrypt("k", b"x", approval_id=APPROVAL_ID),
}


@pytest.mark.parametrize("status", [429, 503])
@pytest.mark.parametrize("call", list(SIDE_EFFECTS))
async def test_calls_with_side_effects_are_never_retried(
    flavour: Flavour, sleeps: Sleeps, call: str, status: int
) -> None:
    code = "rate_limited" if status == 429 else "unavailable"
    mock = Mock([reply(status, error_body(code), {"Retry-After": "1"})])
    client = flavour.client(mock)
    with pytest.raises(RateLimitedError if status == 429 else UnavailableError):
        await flavour.run(SIDE_EFFECTS[call](client))
    assert len(mock.requests) == 1
    assert sleeps.seconds == []
    await flavour.close(client)


PURE: dict[str, Callable[[AnyClient], object]] = {
    "encrypt": lambda c: c.encrypt("k", b"x"),
    "decrypt": lambda c: c.decrypt("k", "fhsm:v1:AAAA"),
    "sign": lambda c: c.sign("k", message=b"m"),
    "verify": lambda c: c.verify("k", b"s", message=b"m"),
    "wrap": lambda c: c.wrap("k", b"\x00" * 32),
    "unwrap": lambda c: c.unwrap("k", "fhsm:v1:AAAA"),
    "public_key": lambda c: c.public_key("k"),
    "describe_key": lambda c: c.describe_key("k"),
    "list_keys": lambda c: c.list_keys(),
    "list_approvals": lambda c: c.list_approvals(),
    "describe_approval": lambda c: c.describe_approval(APPROVAL_ID),
    "audit_records": lambda c: c.audit_records(),
    "audit_verify": lambda c: c.audit_verify(),
}


@pytest.mark.parametrize("call", list(PURE))
async def test_reads_and_computations_are_retried(
    flavour: Flavour, sleeps: Sleeps, call: str
) -> None:
    mock = Mock([reply(503, error_body("unavailable")), reply(404, error_body("not_found"))])
    client = flavour.client(mock)
    with pytest.raises(NotFoundError):
        await flavour.run(PURE[call](client))
    assert len(mock.requests) == 2 and len(sleeps.seconds) == 1
    await flavour.close(client)


# ----- Token source --------------------------------------------------------------------------


async def test_a_token_callable_is_asked_for_every_request(
    flavour: Flavour, sleeps: Sleeps
) -> None:
    issued: list[str] = []

    def token() -> str:
        issued.append(f"t{len(issued)}")
        return issued[-1]

    mock = Mock([reply(503, error_body("unavailable")), reply(200, key())])
    client = flavour.client(mock, token=token)
    await flavour.run(client.describe_key("k"))
    await flavour.run(client.describe_key("k"))
    assert [r.headers["Authorization"] for r in mock.requests] == [
        "Bearer t0", "Bearer t1", "Bearer t2",
    ]
    await flavour.close(client)


async def test_a_token_source_that_gives_nothing_is_refused(flavour: Flavour) -> None:
    mock = Mock([reply(200, key())])
    client = flavour.client(mock, token=lambda: "")
    with pytest.raises(ferrohsm.ConfigurationError):
        await flavour.run(client.describe_key("k"))
    assert mock.requests == []
    await flavour.close(client)


# ----- Pagination ----------------------------------------------------------------------------


async def test_iter_keys_follows_next_cursor(flavour: Flavour) -> None:
    pages = {
        None: {"keys": [key("k1"), key("k2")], "next_cursor": "c1"},
        "c1": {"keys": [], "next_cursor": "c2"},  # a page the policy emptied
        "c2": {"keys": [key("k3")], "next_cursor": None},
    }

    def page(request: httpx.Request) -> httpx.Response:
        return reply(200, pages[request.url.params.get("cursor")])

    mock = Mock([page])
    client = flavour.client(mock)
    keys = await flavour.collect(client.iter_keys(page_size=2, tags=[("team", "a")]))
    assert [k.id for k in keys] == ["k1", "k2", "k3"]
    assert [r.url.params.get("cursor") for r in mock.requests] == [None, "c1", "c2"]
    assert all(r.url.params.get("limit") == "2" for r in mock.requests)
    assert all(r.url.params.get_list("tag") == ["team:a"] for r in mock.requests)
    await flavour.close(client)


async def test_iter_audit_records_starts_after_a_cursor(flavour: Flavour) -> None:
    mock = Mock(
        [
            reply(200, {"records": [audit_record(6), audit_record(7)], "next_cursor": "7"}),
            reply(200, {"records": [], "next_cursor": None}),
        ]
    )
    client = flavour.client(mock)
    records = await flavour.collect(
        client.iter_audit_records(cursor="5", page_size=2, where=AuditFilter(key_id=KEY_ID))
    )
    assert [r.seq for r in records] == [6, 7]
    assert records[0].outcome is ferrohsm.AuditOutcome.SUCCESS
    assert [r.url.params.get("cursor") for r in mock.requests] == ["5", "7"]
    assert mock.requests[0].url.params.get("key_id") == KEY_ID
    await flavour.close(client)


async def test_iter_approvals_reads_one_page_without_a_cursor(flavour: Flavour) -> None:
    mock = Mock([reply(200, {"approvals": [approval(), approval(state="executed")]})])
    client = flavour.client(mock)
    approvals = await flavour.collect(client.iter_approvals(page_size=50))
    assert [a.state.value for a in approvals] == ["pending", "executed"]
    assert len(mock.requests) == 1
    assert mock.requests[0].url.params.multi_items() == [("limit", "50")]
    # A server that pages approvals is followed.
    mock.answers = [
        reply(200, {"approvals": [approval()], "next_cursor": "a1"}),
        reply(200, {"approvals": [approval()], "next_cursor": None}),
    ]
    mock.requests.clear()
    assert len(await flavour.collect(client.iter_approvals())) == 2
    assert [r.url.params.get("cursor") for r in mock.requests] == [None, "a1"]
    await flavour.close(client)


async def test_a_cursor_that_comes_back_stops_the_iterator(flavour: Flavour) -> None:
    mock = Mock([reply(200, {"keys": [key()], "next_cursor": "same"})])
    client = flavour.client(mock)
    with pytest.raises(ferrohsm.CursorLoopError):
        await flavour.collect(client.iter_keys())
    assert len(mock.requests) == 2
    await flavour.close(client)


# ----- Dual control --------------------------------------------------------------------------


def dual_control_server(after_approval: list[httpx.Response]) -> Mock:
    """Answers 202 to a destroy without an approval id and 200 with one; approval reads get
    the answers of ``after_approval`` in turn."""
    reads = iter(after_approval)

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/destroy"):
            if request.headers.get("X-Approval-Id") == APPROVAL_ID:
                return reply(200, key(state="pending_destruction"))
            return reply(202, approval(), {"X-Approval-Id": APPROVAL_ID})
        if request.url.path == f"/v1/approvals/{APPROVAL_ID}":
            return next(reads)
        return reply(404, error_body("not_found"))

    return Mock([handle])


async def test_with_approval_hands_the_approval_to_the_callback(flavour: Flavour) -> None:
    mock = dual_control_server([])
    client = flavour.client(mock)
    seen: list[ApprovalInfo] = []

    if isinstance(client, AsyncClient):
        async def approve_async(info: ApprovalInfo) -> None:
            seen.append(info)

        result = await client.with_approval(
            lambda aid: client.destroy_key("k", grace_seconds=0, approval_id=aid),
            on_approval_required=approve_async,
        )
    else:
        sync_client = client
        result = sync_client.with_approval(
            lambda aid: sync_client.destroy_key("k", grace_seconds=0, approval_id=aid),
            on_approval_required=seen.append,
        )
    assert result.state is ferrohsm.KeyState.PENDING_DESTRUCTION
    assert [a.id for a in seen] == [APPROVAL_ID]
    first, repeat = mock.requests
    assert "X-Approval-Id" not in first.headers
    assert repeat.headers["X-Approval-Id"] == APPROVAL_ID
    assert first.content == repeat.content == b'{"grace_seconds":0}'
    await flavour.close(client)


async def test_with_approval_polls_until_approved(flavour: Flavour, sleeps: Sleeps) -> None:
    mock = dual_control_server(
        [
            reply(200, approval()),
            reply(200, approval(approvals=1)),
            reply(200, approval("approved", 2)),
        ]
    )
    client = flavour.client(mock)
    result = await flavour.with_approval(
        client,
        lambda c, aid: c.destroy_key("k", grace_seconds=0, approval_id=aid),
        poll_interval=0.5,
    )
    assert isinstance(result, ferrohsm.KeyInfo)
    assert [r.url.path.rsplit("/", 1)[-1] for r in mock.requests] == [
        "destroy", APPROVAL_ID, APPROVAL_ID, APPROVAL_ID, "destroy",
    ]
    assert sleeps.seconds == [0.5, 0.5]
    await flavour.close(client)


@pytest.mark.parametrize("state", ["denied", "expired", "executed"])
async def test_with_approval_stops_when_the_approval_is_refused(
    flavour: Flavour, sleeps: Sleeps, state: str
) -> None:
    mock = dual_control_server([reply(200, approval(state))])
    client = flavour.client(mock)
    with pytest.raises(ApprovalNotGrantedError) as caught:
        await flavour.with_approval(client, lambda c, aid: c.destroy_key("k", approval_id=aid))
    assert caught.value.approval.state == state
    assert [r.url.path.rsplit("/", 1)[-1] for r in mock.requests] == ["destroy", APPROVAL_ID]
    await flavour.close(client)


async def test_a_pending_approval_past_its_expiry_is_not_waited_for(
    flavour: Flavour, sleeps: Sleeps
) -> None:
    mock = dual_control_server([reply(200, approval(expires_at="2020-01-01T00:00:00Z"))])
    client = flavour.client(mock)
    with pytest.raises(ApprovalNotGrantedError):
        await flavour.run(client.wait_for_approval(APPROVAL_ID))
    assert sleeps.seconds == []
    await flavour.close(client)


async def test_waiting_for_an_approval_times_out(flavour: Flavour, sleeps: Sleeps) -> None:
    mock = dual_control_server([reply(200, approval())] * 10)
    client = flavour.client(mock)
    with pytest.raises(ApprovalTimeoutError) as caught:
        await flavour.run(client.wait_for_approval(APPROVAL_ID, poll_interval=1.0, timeout=0.5))
    assert caught.value.approval_id == APPROVAL_ID
    assert sleeps.seconds == []
    await flavour.close(client)


async def test_an_approval_required_again_on_the_repeat_is_raised(flavour: Flavour) -> None:
    mock = Mock([reply(202, approval())])
    client = flavour.client(mock)
    with pytest.raises(ApprovalRequiredError):
        await flavour.with_approval(
            client,
            lambda c, aid: c.rotate_key("k", approval_id=aid),
            on_approval_required=lambda info: None,
        )
    assert len(mock.requests) == 2
    await flavour.close(client)


# ----- Construction --------------------------------------------------------------------------


def test_from_env_reads_the_three_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.setenv("FERROHSM_SERVER", "https://hsm.test:8443")
    monkeypatch.setenv("FERROHSM_TOKEN", "env-token")
    monkeypatch.delenv("FERROHSM_CA_CERT", raising=False)
    mock = Mock([reply(200, key())])
    with Client.from_env(transport=httpx.MockTransport(mock)) as client:
        client.describe_key("k")
    assert str(mock.requests[0].url) == "https://hsm.test:8443/v1/keys/k"
    assert mock.requests[0].headers["Authorization"] == "Bearer env-token"

    monkeypatch.setenv("FERROHSM_CA_CERT", str(tmp_path / "missing.pem"))
    with pytest.raises(ferrohsm.ConfigurationError, match="TLS configuration"):
        AsyncClient.from_env()
    monkeypatch.delenv("FERROHSM_TOKEN")
    with pytest.raises(ferrohsm.ConfigurationError, match="FERROHSM_TOKEN"):
        Client.from_env()
    monkeypatch.delenv("FERROHSM_SERVER")
    with pytest.raises(ferrohsm.ConfigurationError, match="FERROHSM_SERVER"):
        Client.from_env(token="t")
