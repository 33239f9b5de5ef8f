"""What the synchronous and the asyncio client share: configuration, request building,
response parsing, error mapping, the retry rule, pagination and the approval rule.

The two clients only send the requests built here and sleep between attempts, each in its
own way.
"""

from __future__ import annotations

import dataclasses
import email.utils
import json
import os
import random
import ssl
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx

from ._version import __version__
from .errors import (
    APIError,
    ApprovalNotGrantedError,
    ApprovalRequiredError,
    ConfigurationError,
    ConflictError,
    ForbiddenError,
    InvalidRequestError,
    NotFoundError,
    ProtocolError,
    RateLimitedError,
    ServerError,
    UnauthenticatedError,
    UnavailableError,
)
from .models import (
    Algorithm,
    ApprovalInfo,
    ApprovalList,
    ApprovalState,
    AuditFilter,
    AuditPage,
    AuditVerification,
    CheckpointInfo,
    Custody,
    Encrypted,
    ErrorCode,
    Health,
    JwkSet,
    KeyInfo,
    KeyList,
    KeyMaterial,
    KeyState,
    Plaintext,
    PublicKeyInfo,
    ResponseFormatError,
    RevocationReason,
    SignatureScheme,
    Signed,
    TokenResponse,
    TokenRevocationInfo,
    Usage,
    Verified,
    Wrapped,
    b64encode,
)

T = TypeVar("T")

TokenSource = str | Callable[[], str]
"""A bearer token, or a callable that returns the token to use; the callable is invoked for
every request (every attempt), so it can rotate tokens."""

Tags = Mapping[str, str] | Sequence[tuple[str, str]]

USER_AGENT = f"ferrohsm-python/{__version__}"


# ----- Configuration -------------------------------------------------------------------------


def tls_context(
    ca_cert: str | os.PathLike[str] | None = None,
    client_cert: str | os.PathLike[str] | None = None,
    client_key: str | os.PathLike[str] | None = None,
) -> ssl.SSLContext:
    """An SSL context that trusts ``ca_cert`` (a PEM file; the system store when ``None``)
    and, for mutual TLS, presents ``client_cert`` with ``client_key`` (PEM files; the key may
    be inside the certificate file)."""
    try:
        ctx = ssl.create_default_context(cafile=os.fspath(ca_cert) if ca_cert else None)
        if client_cert is not None:
            ctx.load_cert_chain(
                os.fspath(client_cert), os.fspath(client_key) if client_key else None
            )
        elif client_key is not None:
            raise ConfigurationError("client_key needs client_cert")
    except (OSError, ssl.SSLError) as e:
        raise ConfigurationError(f"TLS configuration: {e}") from e
    return ctx


def env_settings(
    server: str | None, token: TokenSource | None, ca_cert: str | os.PathLike[str] | None
) -> tuple[str, TokenSource, str | os.PathLike[str] | None]:
    """Fills what the caller left out from FERROHSM_SERVER, FERROHSM_TOKEN and
    FERROHSM_CA_CERT."""
    server = server or os.environ.get("FERROHSM_SERVER")
    token = token or os.environ.get("FERROHSM_TOKEN")
    ca_cert = ca_cert or os.environ.get("FERROHSM_CA_CERT") or None
    if not server:
        raise ConfigurationError("FERROHSM_SERVER is not set")
    if not token:
        raise ConfigurationError("FERROHSM_TOKEN is not set")
    return server, token, ca_cert


@dataclass(frozen=True)
class RetryPolicy:
    """When and how long to wait before repeating a call the server refused with 429 or 503.

    Only calls that a repeat cannot turn into a second side effect are ever retried: reads
    (every GET) and the cryptographic computations (encrypt, decrypt, sign, verify, wrap,
    unwrap). Creating, rotating, rolling back, revoking, destroying or cancelling destruction
    of keys, voting on approvals, issuing or revoking tokens and writing checkpoints are never
    retried, and neither is any call that carries an approval id (its approval runs once).

    The wait before retry ``n`` (from 0) is drawn uniformly from
    ``[0, min(max_backoff, initial_backoff * 2**n)]``; when the answer carries
    ``Retry-After`` the wait is at least that long. A ``Retry-After`` longer than
    ``max_retry_after`` is not waited for: the error is raised at once.
    """

    max_retries: int = 3
    initial_backoff: float = 0.25
    max_backoff: float = 8.0
    max_retry_after: float = 60.0
    statuses: frozenset[int] = frozenset({429, 503})
    jitter: Callable[[float, float], float] = field(default=random.uniform, repr=False)

    def delay(self, attempt: int, response: httpx.Response) -> float | None:
        """The wait before repeating after ``response`` (attempt ``attempt``, from 0), or
        ``None`` when the call must not be repeated."""
        if response.status_code not in self.statuses or attempt >= self.max_retries:
            return None
        backoff = self.jitter(0.0, min(self.max_backoff, self.initial_backoff * 2**attempt))
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        if retry_after is None:
            return backoff
        if retry_after > self.max_retry_after:
            return None
        return max(retry_after, backoff)


NO_RETRIES = RetryPolicy(max_retries=0)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP date."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(int(value)))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


# ----- Calls ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Call(Generic[T]):
    """One REST call: how to send it and how to read its answer."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    retryable: bool
    params: list[tuple[str, str]] = field(default_factory=list)
    body: Any = None
    has_body: bool = False
    request_id: str | None = None
    approval_id: str | None = None
    ok_statuses: frozenset[int] = frozenset({200, 201})

    @property
    def may_retry(self) -> bool:
        return self.retryable and self.approval_id is None


def build_request(
    http: httpx.Client | httpx.AsyncClient, call: Call[Any], token: str
) -> httpx.Request:
    """The HTTP request of ``call`` with ``token``."""
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    if call.request_id is not None:
        headers["X-Request-Id"] = call.request_id
    if call.approval_id is not None:
        headers["X-Approval-Id"] = call.approval_id
    content: bytes | None = None
    if call.has_body:
        headers["Content-Type"] = "application/json"
        content = json.dumps(call.body, separators=(",", ":")).encode()
    return http.build_request(
        call.method, call.path, params=tuple(call.params) or None, content=content, headers=headers
    )


def resolve_token(token: TokenSource) -> str:
    value = token() if callable(token) else token
    if not isinstance(value, str) or not value:
        raise ConfigurationError("the token source returned no token")
    return value


def handle(call: Call[T], response: httpx.Response) -> T:
    """The typed result of ``call``, or the exception its answer means."""
    status = response.status_code
    if status == 202:
        raise approval_required(response)
    if status in call.ok_statuses:
        try:
            return call.parse(response)
        except ResponseFormatError as e:
            raise ProtocolError(
                f"{call.method} {call.path}: {e}",
                status=status,
                request_id=response.headers.get("x-request-id"),
            ) from None
    raise api_error(response)


def json_body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ResponseFormatError(f"the body is not JSON ({e})") from None


def parser(model: Callable[[Any], T]) -> Callable[[httpx.Response], T]:
    return lambda response: model(json_body(response))


def approval_required(response: httpx.Response) -> ApprovalRequiredError:
    request_id = response.headers.get("x-request-id")
    try:
        approval = ApprovalInfo.from_json(json_body(response))
    except ResponseFormatError as e:
        raise ProtocolError(
            f"202 without an approval: {e}", status=202, request_id=request_id
        ) from None
    header_id = response.headers.get("x-approval-id")
    if header_id is not None and header_id.strip() != approval.id:
        raise ProtocolError(
            f"X-Approval-Id {header_id!r} differs from the approval's id {approval.id!r}",
            status=202,
            request_id=request_id,
        )
    return ApprovalRequiredError(
        approval=approval, request_id=request_id, location=response.headers.get("location")
    )


_ERROR_CLASSES: dict[str, type[APIError]] = {
    "invalid_request": InvalidRequestError,
    "invalid_usage": InvalidRequestError,
    "unsupported": InvalidRequestError,
    "invalid_ciphertext": InvalidRequestError,
    "payload_too_large": InvalidRequestError,
    "unauthenticated": UnauthenticatedError,
    "forbidden": ForbiddenError,
    "not_found": NotFoundError,
    "conflict": ConflictError,
    "invalid_state": ConflictError,
    "unavailable": UnavailableError,
    "integrity": ServerError,
    "internal": ServerError,
}


def error_class(code: ErrorCode) -> type[APIError]:
    """The exception class of an error code (``APIError`` for codes without their own)."""
    if code == ErrorCode.RATE_LIMITED:
        return RateLimitedError
    return _ERROR_CLASSES.get(code.value, APIError)


def api_error(response: httpx.Response) -> APIError:
    """The exception of an error answer. A body that is not the contract's error body (a
    proxy's page, say) still gives an ``APIError`` with code ``unknown`` and its status."""
    status = response.status_code
    request_id = response.headers.get("x-request-id")
    code = ErrorCode.UNKNOWN
    message = response.reason_phrase or f"HTTP {status}"
    try:
        detail = response.json()["error"]
        code = ErrorCode(str(detail["code"]))
        message = str(detail["message"])
        request_id = str(detail.get("request_id") or request_id or "") or None
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        text = response.text.strip()
        if text:
            message = f"{message}: {text[:200]}"
    cls = error_class(code)
    if cls is RateLimitedError:
        return RateLimitedError(
            code=code,
            status=status,
            message=message,
            request_id=request_id,
            retry_after=parse_retry_after(response.headers.get("retry-after")),
        )
    return cls(code=code, status=status, message=message, request_id=request_id)


# ----- Operations ----------------------------------------------------------------------------
#
# One builder per operation. `retryable` marks the calls a repeat cannot turn into a second
# side effect (RetryPolicy): every GET, and the computations encrypt, decrypt, sign, verify,
# wrap and unwrap.


def _key(key: str) -> str:
    if not key:
        raise ValueError("key must not be empty")
    return quote(key, safe="")


def _approval(approval_id: str) -> str:
    if not approval_id:
        raise ValueError("approval id must not be empty")
    return quote(approval_id, safe="")


def _tags(tags: Tags | None) -> list[tuple[str, str]]:
    if tags is None:
        return []
    items: Iterable[tuple[str, str]] = tags.items() if isinstance(tags, Mapping) else tags
    return [("tag", f"{k}:{v}") for k, v in items]


def _opt(pairs: Iterable[tuple[str, object]]) -> list[tuple[str, str]]:
    return [(k, str(v)) for k, v in pairs if v is not None]


def _body(**fields: object) -> dict[str, Any]:
    """A JSON body of the fields that are not ``None``, bytes as standard base64."""
    out: dict[str, Any] = {}
    for name, value in fields.items():
        if value is None:
            continue
        if isinstance(value, (bytes, bytearray, memoryview)):
            value = b64encode(bytes(value))
        out[name] = value
    return out


def _get(
    path: str,
    model: Callable[[Any], T],
    request_id: str | None,
    params: list[tuple[str, str]] | None = None,
    approval_id: str | None = None,
) -> Call[T]:
    return Call(
        "GET",
        path,
        parser(model),
        retryable=True,
        params=params or [],
        request_id=request_id,
        approval_id=approval_id,
    )


def _post(
    path: str,
    model: Callable[[Any], T],
    body: dict[str, Any] | None,
    *,
    retryable: bool,
    request_id: str | None,
    approval_id: str | None = None,
) -> Call[T]:
    """A POST; ``body=None`` sends no body (for the routes whose body is optional)."""
    return Call(
        "POST",
        path,
        parser(model),
        retryable=retryable,
        body=body,
        has_body=body is not None,
        request_id=request_id,
        approval_id=approval_id,
    )


def create_key(
    algorithm: Algorithm | str,
    name: str | None,
    description: str | None,
    usages: Iterable[Usage | str] | None,
    tags: Mapping[str, str] | None,
    custody: Custody | str | None,
    request_id: str | None,
) -> Call[KeyInfo]:
    body = _body(
        name=name,
        description=description,
        algorithm=str(algorithm),
        usages=None if usages is None else [str(u) for u in usages],
        tags=None if tags is None else dict(tags),
        custody=None if custody is None else str(custody),
    )
    call = _post("/v1/keys", KeyInfo.from_json, body, retryable=False, request_id=request_id)
    return dataclasses.replace(call, ok_statuses=frozenset({201}))


def list_keys(
    limit: int | None,
    cursor: str | None,
    algorithm: Algorithm | str | None,
    state: KeyState | str | None,
    tags: Tags | None,
    name_prefix: str | None,
    request_id: str | None,
) -> Call[KeyList]:
    params = _opt([("limit", limit), ("cursor", cursor), ("algorithm", algorithm)])
    params += _opt([("state", state)]) + _tags(tags) + _opt([("name_prefix", name_prefix)])
    return _get("/v1/keys", KeyList.from_json, request_id, params)


def describe_key(key: str, request_id: str | None) -> Call[KeyInfo]:
    return _get(f"/v1/keys/{_key(key)}", KeyInfo.from_json, request_id)


def _key_change(
    key: str,
    action: str,
    body: dict[str, Any] | None,
    request_id: str | None,
    approval_id: str | None,
) -> Call[KeyInfo]:
    return _post(
        f"/v1/keys/{_key(key)}/{action}",
        KeyInfo.from_json,
        body,
        retryable=False,
        request_id=request_id,
        approval_id=approval_id,
    )


def rotate_key(key: str, request_id: str | None, approval_id: str | None) -> Call[KeyInfo]:
    return _key_change(key, "rotate", None, request_id, approval_id)


def rollback_key(
    key: str, version: int, request_id: str | None, approval_id: str | None
) -> Call[KeyInfo]:
    return _key_change(key, "rollback", {"version": version}, request_id, approval_id)


def revoke_key(
    key: str,
    reason: RevocationReason | str,
    comment: str | None,
    request_id: str | None,
    approval_id: str | None,
) -> Call[KeyInfo]:
    body = _body(reason=str(reason), comment=comment)
    return _key_change(key, "revoke", body, request_id, approval_id)


def destroy_key(
    key: str, grace_seconds: int | None, request_id: str | None, approval_id: str | None
) -> Call[KeyInfo]:
    body = _body(grace_seconds=grace_seconds) or None
    return _key_change(key, "destroy", body, request_id, approval_id)


def cancel_destroy(key: str, request_id: str | None, approval_id: str | None) -> Call[KeyInfo]:
    return _key_change(key, "cancel-destroy", None, request_id, approval_id)


def _compute(
    key: str,
    action: str,
    model: Callable[[Any], T],
    body: dict[str, Any],
    request_id: str | None,
    approval_id: str | None,
) -> Call[T]:
    return _post(
        f"/v1/keys/{_key(key)}/{action}",
        model,
        body,
        retryable=True,
        request_id=request_id,
        approval_id=approval_id,
    )


def encrypt(
    key: str,
    plaintext: bytes,
    aad: bytes | None,
    request_id: str | None,
    approval_id: str | None,
) -> Call[Encrypted]:
    body = _body(plaintext=plaintext, aad=aad)
    return _compute(key, "encrypt", Encrypted.from_json, body, request_id, approval_id)


def decrypt(
    key: str,
    ciphertext: str,
    aad: bytes | None,
    request_id: str | None,
    approval_id: str | None,
) -> Call[Plaintext]:
    body = _body(ciphertext=ciphertext, aad=aad)
    return _compute(key, "decrypt", Plaintext.from_json, body, request_id, approval_id)


def sign(
    key: str,
    message: bytes | None,
    digest: bytes | None,
    algorithm: SignatureScheme | str | None,
    request_id: str | None,
    approval_id: str | None,
) -> Call[Signed]:
    # Exactly one of message and digest: the server refuses both or neither (400).
    scheme = None if algorithm is None else str(algorithm)
    body = _body(message=message, digest=digest, algorithm=scheme)
    return _compute(key, "sign", Signed.from_json, body, request_id, approval_id)


def verify(
    key: str,
    signature: bytes,
    message: bytes | None,
    digest: bytes | None,
    algorithm: SignatureScheme | str | None,
    key_version: int | None,
    request_id: str | None,
    approval_id: str | None,
) -> Call[Verified]:
    scheme = None if algorithm is None else str(algorithm)
    body = _body(
        message=message,
        digest=digest,
        signature=signature,
        algorithm=scheme,
        key_version=key_version,
    )
    return _compute(key, "verify", Verified.from_json, body, request_id, approval_id)


def wrap(
    key: str, key_material: bytes, request_id: str | None, approval_id: str | None
) -> Call[Wrapped]:
    body = _body(key_material=key_material)
    return _compute(key, "wrap", Wrapped.from_json, body, request_id, approval_id)


def unwrap(
    key: str, wrapped: str, request_id: str | None, approval_id: str | None
) -> Call[KeyMaterial]:
    body = _body(wrapped=wrapped)
    return _compute(key, "unwrap", KeyMaterial.from_json, body, request_id, approval_id)


def public_key(
    key: str, version: int | None, request_id: str | None, approval_id: str | None
) -> Call[PublicKeyInfo]:
    path = f"/v1/keys/{_key(key)}/public"
    params = _opt([("version", version)])
    return _get(path, PublicKeyInfo.from_json, request_id, params, approval_id)


def list_approvals(
    limit: int | None, cursor: str | None, request_id: str | None
) -> Call[ApprovalList]:
    params = _opt([("limit", limit), ("cursor", cursor)])
    return _get("/v1/approvals", ApprovalList.from_json, request_id, params)


def describe_approval(approval_id: str, request_id: str | None) -> Call[ApprovalInfo]:
    return _get(f"/v1/approvals/{_approval(approval_id)}", ApprovalInfo.from_json, request_id)


def vote(
    approval_id: str, approve: bool, comment: str | None, request_id: str | None
) -> Call[ApprovalInfo]:
    path = f"/v1/approvals/{_approval(approval_id)}/{'approve' if approve else 'deny'}"
    body = _body(comment=comment) or None
    return _post(path, ApprovalInfo.from_json, body, retryable=False, request_id=request_id)


def audit_records(
    limit: int | None, cursor: str | None, where: AuditFilter | None, request_id: str | None
) -> Call[AuditPage]:
    params = _opt([("limit", limit), ("cursor", cursor)])
    if where is not None:
        params += where.query()
    return _get("/v1/audit", AuditPage.from_json, request_id, params)


def audit_verify(request_id: str | None) -> Call[AuditVerification]:
    return _get("/v1/audit/verify", AuditVerification.from_json, request_id)


def audit_checkpoint(request_id: str | None) -> Call[CheckpointInfo]:
    return _get("/v1/audit/checkpoint", CheckpointInfo.from_json, request_id)


def checkpoint_audit(request_id: str | None) -> Call[CheckpointInfo]:
    path = "/v1/audit/checkpoint"
    return _post(path, CheckpointInfo.from_json, None, retryable=False, request_id=request_id)


def audit_export(request_id: str | None) -> Call[None]:
    """The export streams its body; the clients read it themselves after checking the
    status."""
    return Call("GET", "/v1/audit/export", lambda response: None, True, request_id=request_id)


def issue_token(
    sub: str,
    roles: Sequence[str],
    ttl_seconds: int | None,
    cert_sha256: str | None,
    request_id: str | None,
    approval_id: str | None,
) -> Call[TokenResponse]:
    body = _body(sub=sub, roles=list(roles), ttl_seconds=ttl_seconds, cert_sha256=cert_sha256)
    return _post(
        "/v1/auth/token",
        TokenResponse.from_json,
        body,
        retryable=False,
        request_id=request_id,
        approval_id=approval_id,
    )


def revoke_token(
    jti: str | None,
    sid: str | None,
    reason: str | None,
    request_id: str | None,
    approval_id: str | None,
) -> Call[TokenRevocationInfo]:
    # Exactly one of jti and sid: the server refuses both or neither (400).
    return _post(
        "/v1/auth/revoke",
        TokenRevocationInfo.from_json,
        _body(jti=jti, sid=sid, reason=reason),
        retryable=False,
        request_id=request_id,
        approval_id=approval_id,
    )


def health(request_id: str | None) -> Call[Health]:
    # A degraded server answers 503 with the same body: an answer, not a refusal, so it is
    # parsed and never retried.
    return Call(
        "GET",
        "/healthz",
        parser(Health.from_json),
        retryable=False,
        request_id=request_id,
        ok_statuses=frozenset({200, 503}),
    )


def jwks(request_id: str | None) -> Call[JwkSet]:
    return _get("/.well-known/jwks.json", JwkSet.from_json, request_id)


# ----- Pagination ----------------------------------------------------------------------------


class CursorLoopError(ProtocolError):
    """The server answered a cursor it had already answered (following it would never end)."""


class Pager(Generic[T]):
    """Follows ``next_cursor`` from page to page: ``make(cursor)`` builds the call of a page,
    ``cursor_of`` reads a page's ``next_cursor``."""

    def __init__(
        self,
        make: Callable[[str | None], Call[Any]],
        items: Callable[[Any], Sequence[T]],
        cursor_of: Callable[[Any], str | None],
        start: str | None = None,
    ) -> None:
        self._make = make
        self._items = items
        self._cursor_of = cursor_of
        self._next: Call[Any] | None = make(start)
        self._seen: set[str] = set() if start is None else {start}

    def next_call(self) -> Call[Any] | None:
        return self._next

    def page(self, page: Any) -> Sequence[T]:
        """Takes a page's answer; returns its items and prepares the next call."""
        cursor = self._cursor_of(page)
        if cursor is None:
            self._next = None
        elif cursor in self._seen:
            raise CursorLoopError(
                f"the server answered cursor {cursor!r} twice", status=200, request_id=None
            )
        else:
            self._seen.add(cursor)
            self._next = self._make(cursor)
        return self._items(page)


# ----- Dual control --------------------------------------------------------------------------


def approval_ready(approval: ApprovalInfo) -> bool:
    """Whether an approval lets the requester repeat the call now; raises when it never will."""
    if approval.state == ApprovalState.APPROVED:
        return True
    if approval.state == ApprovalState.PENDING:
        if approval.expires_at <= datetime.now(timezone.utc):
            raise ApprovalNotGrantedError(approval)
        return False
    raise ApprovalNotGrantedError(approval)


def now() -> datetime:
    return datetime.now(timezone.utc)
