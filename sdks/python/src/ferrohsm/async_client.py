"""The asyncio client: the methods of :class:`ferrohsm.Client`, as coroutines."""

from __future__ import annotations

import asyncio
import inspect
import os
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import IO, Any, Self, TypeVar

import httpx

from . import _core
from ._core import Call, Pager, RetryPolicy, Tags, TokenSource
from .errors import ApprovalRequiredError, ApprovalTimeoutError, TransportError
from .models import (
    Algorithm,
    ApprovalInfo,
    ApprovalList,
    AuditFilter,
    AuditPage,
    AuditRecord,
    AuditVerification,
    CheckpointInfo,
    Custody,
    Encrypted,
    Health,
    JwkSet,
    KeyInfo,
    KeyList,
    KeyMaterial,
    KeyState,
    Plaintext,
    PublicKeyInfo,
    RevocationReason,
    SignatureScheme,
    Signed,
    TokenResponse,
    TokenRevocationInfo,
    Usage,
    Verified,
    Wrapped,
)

__all__ = ["AsyncClient"]

T = TypeVar("T")

_sleep = asyncio.sleep
_monotonic = time.monotonic


class AsyncClient:
    """An asyncio FerroHSM client: the methods of :class:`ferrohsm.Client` as coroutines, and
    its ``iter_*`` methods as async iterators. Use it as ``async with AsyncClient(...)`` or
    call :meth:`aclose`.

    ``server`` is the base URL (``https://host:port``); ``token`` a bearer token or a callable
    returning one, invoked for every request. ``ca_cert`` is the PEM file of the CA that
    signed the server's certificate (the system store when omitted); ``client_cert`` and
    ``client_key`` present a client certificate (mutual TLS). ``ssl_context`` replaces all
    three. ``retry`` says how 429 and 503 answers of calls that are safe to repeat are
    retried (see :class:`ferrohsm.RetryPolicy`); ``transport`` replaces the HTTP transport
    (tests).

    Every method takes ``request_id`` (sent as ``X-Request-Id``, recorded in the audit log)
    and the operations a policy can put under dual control take ``approval_id`` (sent as
    ``X-Approval-Id`` when repeating an approved call). Failures raise
    :class:`ferrohsm.FerroHSMError` subclasses; a call under dual control raises
    :class:`ferrohsm.ApprovalRequiredError`.
    """

    def __init__(
        self,
        server: str,
        token: TokenSource,
        *,
        ca_cert: str | os.PathLike[str] | None = None,
        client_cert: str | os.PathLike[str] | None = None,
        client_key: str | os.PathLike[str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        timeout: float | httpx.Timeout = 30.0,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        verify: ssl.SSLContext | bool = True
        if transport is None:
            verify = ssl_context or _core.tls_context(ca_cert, client_cert, client_key)
        self._token = token
        self._retry = retry if retry is not None else RetryPolicy()
        self._http = httpx.AsyncClient(
            base_url=server,
            verify=verify,
            timeout=timeout,
            transport=transport,
            headers={"User-Agent": _core.USER_AGENT},
        )

    @classmethod
    def from_env(
        cls,
        *,
        server: str | None = None,
        token: TokenSource | None = None,
        ca_cert: str | os.PathLike[str] | None = None,
        **kwargs: Any,
    ) -> Self:
        """A client configured from ``FERROHSM_SERVER``, ``FERROHSM_TOKEN`` and
        ``FERROHSM_CA_CERT`` (arguments given win; other keyword arguments go to the
        constructor)."""
        server, token, ca_cert = _core.env_settings(server, token, ca_cert)
        return cls(server, token, ca_cert=ca_cert, **kwargs)

    async def aclose(self) -> None:
        """Closes the connections."""
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # ----- Transport ---------------------------------------------------------------------------

    async def _send(self, call: Call[Any], *, stream: bool = False) -> httpx.Response:
        attempt = 0
        while True:
            request = _core.build_request(self._http, call, _core.resolve_token(self._token))
            try:
                response = await self._http.send(request, stream=stream)
            except (httpx.TransportError, ssl.SSLError) as e:
                # httpcore's anyio backend lets TLS alerts read after the handshake (a refused
                # client certificate under TLS 1.3) escape as ssl.SSLError.
                raise TransportError(f"{call.method} {call.path}: {e}") from e
            delay = self._retry.delay(attempt, response) if call.may_retry else None
            if delay is None:
                return response
            await response.aclose()
            await _sleep(delay)
            attempt += 1

    async def _run(self, call: Call[T]) -> T:
        return _core.handle(call, await self._send(call))

    async def _iterate(self, pager: Pager[T]) -> AsyncIterator[T]:
        while (call := pager.next_call()) is not None:
            for item in pager.page(await self._run(call)):
                yield item

    # ----- Keys --------------------------------------------------------------------------------

    async def create_key(
        self,
        algorithm: Algorithm | str,
        *,
        name: str | None = None,
        description: str | None = None,
        usages: Iterable[Usage | str] | None = None,
        tags: Mapping[str, str] | None = None,
        custody: Custody | str | None = None,
        request_id: str | None = None,
    ) -> KeyInfo:
        """Creates a key (``POST /v1/keys``). Never retried. ``custody`` is where the material
        is kept (``PKCS11`` needs a server with a PKCS#11 token); the server's default when
        omitted."""
        call = _core.create_key(algorithm, name, description, usages, tags, custody, request_id)
        return await self._run(call)

    async def list_keys(
        self,
        *,
        limit: int | None = None,
        cursor: str | None = None,
        algorithm: Algorithm | str | None = None,
        state: KeyState | str | None = None,
        tags: Tags | None = None,
        name_prefix: str | None = None,
        request_id: str | None = None,
    ) -> KeyList:
        """One page of keys, oldest first (``GET /v1/keys``); every tag given must match."""
        return await self._run(
            _core.list_keys(limit, cursor, algorithm, state, tags, name_prefix, request_id)
        )

    def iter_keys(
        self,
        *,
        page_size: int | None = None,
        algorithm: Algorithm | str | None = None,
        state: KeyState | str | None = None,
        tags: Tags | None = None,
        name_prefix: str | None = None,
        request_id: str | None = None,
    ) -> AsyncIterator[KeyInfo]:
        """Every key matching the filters, following ``next_cursor`` page by page."""
        return self._iterate(
            Pager(
                lambda cursor: _core.list_keys(
                    page_size, cursor, algorithm, state, tags, name_prefix, request_id
                ),
                lambda page: page.keys,
                lambda page: page.next_cursor,
            )
        )

    async def describe_key(self, key: str, *, request_id: str | None = None) -> KeyInfo:
        """A key by id or name (``GET /v1/keys/{key}``)."""
        return await self._run(_core.describe_key(key, request_id))

    async def rotate_key(
        self, key: str, *, request_id: str | None = None, approval_id: str | None = None
    ) -> KeyInfo:
        """Adds a version and makes it current. Never retried."""
        return await self._run(_core.rotate_key(key, request_id, approval_id))

    async def rollback_key(
        self,
        key: str,
        version: int,
        *,
        request_id: str | None = None,
        approval_id: str | None = None,
    ) -> KeyInfo:
        """Makes an earlier (or later) version current. Never retried."""
        return await self._run(_core.rollback_key(key, version, request_id, approval_id))

    async def revoke_key(
        self,
        key: str,
        reason: RevocationReason | str,
        *,
        comment: str | None = None,
        request_id: str | None = None,
        approval_id: str | None = None,
    ) -> KeyInfo:
        """Revokes a key. Never retried."""
        return await self._run(_core.revoke_key(key, reason, comment, request_id, approval_id))

    async def destroy_key(
        self,
        key: str,
        *,
        grace_seconds: int | None = None,
        request_id: str | None = None,
        approval_id: str | None = None,
    ) -> KeyInfo:
        """Schedules destruction after a grace period (the policy's or the server's default
        when ``None``). Never retried."""
        return await self._run(_core.destroy_key(key, grace_seconds, request_id, approval_id))

    async def cancel_destroy(
        self, key: str, *, request_id: str | None = None, approval_id: str | None = None
    ) -> KeyInfo:
        """Cancels a scheduled destruction. Never retried."""
        return await self._run(_core.cancel_destroy(key, request_id, approval_id))

    # ----- Cryptographic operations --------------------------------------------------------------

    async def encrypt(
        self,
        key: str,
        plaintext: bytes,
        *,
        aad: bytes | None = None,
        request_id: str | None = None,
        approval_id: str | None = None,
    ) -> Encrypted:
        """AES-256-GCM encryption with the key's current version."""
        return await self._run(_core.encrypt(key, plaintext, aad, request_id, approval_id))

    async def decrypt(
        self,
        key: str,
        ciphertext: str,
        *,
        aad: bytes | None = None,
        request_id: str | None = None,
        approval_id: str | None = None,
    ) -> Plaintext:
        """Decrypts a ``fhsm:v<N>:…`` ciphertext."""
        return await self._run(_core.decrypt(key, ciphertext, aad, request_id, approval_id))

    async def sign(
        self,
        key: str,
        *,
        message: bytes | None = None,
        digest: bytes | None = None,
        algorithm: SignatureScheme | str | None = None,
        request_id: str | None = None,
        approval_id: str | None = None,
    ) -> Signed:
        """Signs a message or a pre-computed digest (exactly one) with the current version."""
        return await self._run(_core.sign(key, message, digest, algorithm, request_id, approval_id))

    async def verify(
        self,
        key: str,
        signature: bytes,
        *,
        message: bytes | None = None,
        digest: bytes | None = None,
        algorithm: SignatureScheme | str | None = None,
        key_version: int | None = None,
        request_id: str | None = None,
        approval_id: str | None = None,
    ) -> Verified:
        """Verifies a signature over a message or a digest (exactly one); ``valid`` says
        whether it holds."""
        return await self._run(
            _core.verify(
                key, signature, message, digest, algorithm, key_version, request_id, approval_id
            )
        )

    async def wrap(
        self,
        key: str,
        key_material: bytes,
        *,
        request_id: str | None = None,
        approval_id: str | None = None,
    ) -> Wrapped:
        """Wraps key material (RFC 5649) with the current version."""
        return await self._run(_core.wrap(key, key_material, request_id, approval_id))

    async def unwrap(
        self,
        key: str,
        wrapped: str,
        *,
        request_id: str | None = None,
        approval_id: str | None = None,
    ) -> KeyMaterial:
        """Unwraps a ``fhsm:v<N>:…`` wrapped key."""
        return await self._run(_core.unwrap(key, wrapped, request_id, approval_id))

    async def public_key(
        self,
        key: str,
        *,
        version: int | None = None,
        request_id: str | None = None,
        approval_id: str | None = None,
    ) -> PublicKeyInfo:
        """The public key of the current version (or ``version``) as PEM, DER and JWK."""
        return await self._run(_core.public_key(key, version, request_id, approval_id))

    # ----- Approvals -----------------------------------------------------------------------------

    async def list_approvals(
        self, *, limit: int | None = None, cursor: str | None = None, request_id: str | None = None
    ) -> ApprovalList:
        """Approvals, newest first (``GET /v1/approvals``). ``cursor`` is only for a server
        that answers ``next_cursor``."""
        return await self._run(_core.list_approvals(limit, cursor, request_id))

    def iter_approvals(
        self, *, page_size: int | None = None, request_id: str | None = None
    ) -> AsyncIterator[ApprovalInfo]:
        """Approvals, newest first, following ``next_cursor`` while the server sends one (the
        server of this version sends none: one page of at most ``page_size``, default 100)."""
        return self._iterate(
            Pager(
                lambda cursor: _core.list_approvals(page_size, cursor, request_id),
                lambda page: page.approvals,
                lambda page: page.next_cursor,
            )
        )

    async def describe_approval(
        self, approval_id: str, *, request_id: str | None = None
    ) -> ApprovalInfo:
        """One approval."""
        return await self._run(_core.describe_approval(approval_id, request_id))

    async def approve(
        self, approval_id: str, *, comment: str | None = None, request_id: str | None = None
    ) -> ApprovalInfo:
        """Votes for a pending approval. Never retried."""
        return await self._run(_core.vote(approval_id, True, comment, request_id))

    async def deny(
        self, approval_id: str, *, comment: str | None = None, request_id: str | None = None
    ) -> ApprovalInfo:
        """Votes against a pending approval. Never retried."""
        return await self._run(_core.vote(approval_id, False, comment, request_id))

    async def wait_for_approval(
        self, approval_id: str, *, poll_interval: float = 2.0, timeout: float | None = None
    ) -> ApprovalInfo:
        """Polls an approval until it is approved; raises
        :class:`ferrohsm.ApprovalNotGrantedError` when it is denied, expires or was executed,
        and :class:`ferrohsm.ApprovalTimeoutError` after ``timeout`` seconds."""
        deadline = None if timeout is None else _monotonic() + timeout
        while True:
            approval = await self.describe_approval(approval_id)
            if _core.approval_ready(approval):
                return approval
            if deadline is not None and _monotonic() + poll_interval > deadline:
                raise ApprovalTimeoutError(approval, _core.now())
            await _sleep(poll_interval)

    async def with_approval(
        self,
        request: Callable[[str | None], Awaitable[T]],
        *,
        on_approval_required: Callable[[ApprovalInfo], Awaitable[object] | object] | None = None,
        poll_interval: float = 2.0,
        timeout: float | None = None,
    ) -> T:
        """Runs an operation that may be under dual control.

        ``await request(approval_id)`` makes the call, passing ``approval_id`` on: it is ``None``
        the first time. When the server answers 202, the approval is handed to
        ``on_approval_required`` (a function or a coroutine function), which must return once
        the approval has its quorum; without a callback, the approval is polled
        (``wait_for_approval``) until it is approved. Then ``request`` runs again with the
        approval's id, and its result is returned::

            key = await client.with_approval(
                lambda aid: client.destroy_key("payments", grace_seconds=0, approval_id=aid)
            )
        """
        try:
            return await request(None)
        except ApprovalRequiredError as e:
            pending = e
        if on_approval_required is not None:
            outcome = on_approval_required(pending.approval)
            if inspect.isawaitable(outcome):
                await outcome
        else:
            await self.wait_for_approval(
                pending.approval_id, poll_interval=poll_interval, timeout=timeout
            )
        return await request(pending.approval_id)

    # ----- Audit ---------------------------------------------------------------------------------

    async def audit_records(
        self,
        *,
        limit: int | None = None,
        cursor: str | None = None,
        where: AuditFilter | None = None,
        request_id: str | None = None,
    ) -> AuditPage:
        """One page of audit records, oldest first, after ``cursor`` (``GET /v1/audit``)."""
        return await self._run(_core.audit_records(limit, cursor, where, request_id))

    def iter_audit_records(
        self,
        *,
        page_size: int | None = None,
        cursor: str | None = None,
        where: AuditFilter | None = None,
        request_id: str | None = None,
    ) -> AsyncIterator[AuditRecord]:
        """Every audit record matching ``where`` (after ``cursor``), following
        ``next_cursor``."""
        return self._iterate(
            Pager(
                lambda c: _core.audit_records(page_size, c, where, request_id),
                lambda page: page.records,
                lambda page: page.next_cursor,
                start=cursor,
            )
        )

    async def audit_verify(self, *, request_id: str | None = None) -> AuditVerification:
        """The server's verification of its whole audit log."""
        return await self._run(_core.audit_verify(request_id))

    async def audit_checkpoint(self, *, request_id: str | None = None) -> CheckpointInfo:
        """The latest signed checkpoint and the public key that verifies it."""
        return await self._run(_core.audit_checkpoint(request_id))

    async def checkpoint_audit(self, *, request_id: str | None = None) -> CheckpointInfo:
        """Writes a signed checkpoint now. Never retried."""
        return await self._run(_core.checkpoint_audit(request_id))

    async def export_audit(self, out: IO[bytes], *, request_id: str | None = None) -> int:
        """Streams the whole audit log (NDJSON) into ``out``; returns the bytes written."""
        call = _core.audit_export(request_id)
        response = await self._send(call, stream=True)
        try:
            if response.status_code != 200:
                await response.aread()
                _core.handle(call, response)
            written = 0
            try:
                async for chunk in response.aiter_bytes():
                    out.write(chunk)
                    written += len(chunk)
            except (httpx.TransportError, ssl.SSLError) as e:
                raise TransportError(f"GET /v1/audit/export: {e}") from e
            return written
        finally:
            await response.aclose()

    # ----- Tokens and operations -----------------------------------------------------------------

    async def issue_token(
        self,
        sub: str,
        roles: Sequence[str],
        *,
        ttl_seconds: int | None = None,
        cert_sha256: str | None = None,
        request_id: str | None = None,
        approval_id: str | None = None,
    ) -> TokenResponse:
        """Issues a token for ``sub`` (admin). Never retried."""
        return await self._run(
            _core.issue_token(sub, roles, ttl_seconds, cert_sha256, request_id, approval_id)
        )

    async def revoke_token(
        self,
        *,
        jti: str | None = None,
        sid: str | None = None,
        reason: str | None = None,
        request_id: str | None = None,
        approval_id: str | None = None,
    ) -> TokenRevocationInfo:
        """Revokes a token by ``jti`` or every token of a session by ``sid`` (exactly one;
        admin). Never retried."""
        return await self._run(_core.revoke_token(jti, sid, reason, request_id, approval_id))

    async def health(self, *, request_id: str | None = None) -> Health:
        """``GET /healthz``; a degraded server (503) answers a ``Health`` too."""
        return await self._run(_core.health(request_id))

    async def jwks(self, *, request_id: str | None = None) -> JwkSet:
        """The public key the server signs tokens with."""
        return await self._run(_core.jwks(request_id))
