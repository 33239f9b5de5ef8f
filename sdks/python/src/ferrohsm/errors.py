"""The exceptions the SDK raises.

Every failure is a :class:`FerroHSMError`. An error answer of the server is an
:class:`APIError` carrying the body's ``code``, ``message`` and ``request_id`` and the HTTP
``status``; the codes with their own handling have subclasses. A code this version does not
know still parses: it is a plain :class:`APIError` whose ``code.is_known`` is false.
"""

from __future__ import annotations

from datetime import datetime

from .models import ApprovalInfo, ErrorCode

__all__ = [
    "APIError",
    "ApprovalNotGrantedError",
    "ApprovalRequiredError",
    "ApprovalTimeoutError",
    "ConfigurationError",
    "ConflictError",
    "FerroHSMError",
    "ForbiddenError",
    "InvalidRequestError",
    "NotFoundError",
    "ProtocolError",
    "RateLimitedError",
    "ServerError",
    "TransportError",
    "UnauthenticatedError",
    "UnavailableError",
]


class FerroHSMError(Exception):
    """The base of every exception of this SDK."""


class ConfigurationError(FerroHSMError):
    """The client cannot be built as asked (a missing environment variable, a bad file)."""


class TransportError(FerroHSMError):
    """The request did not get an answer: connection, TLS or timeout failure.

    The underlying ``httpx`` exception is the ``__cause__``.
    """


class ProtocolError(FerroHSMError):
    """The server answered something the contract does not allow (a body that is not JSON, a
    missing field). ``status`` and ``request_id`` identify the answer."""

    def __init__(self, message: str, *, status: int, request_id: str | None) -> None:
        super().__init__(message)
        self.status = status
        self.request_id = request_id


class APIError(FerroHSMError):
    """An error answer of the server: ``{"error": {"code", "message", "request_id"}}``."""

    def __init__(
        self, *, code: ErrorCode, status: int, message: str, request_id: str | None
    ) -> None:
        super().__init__(f"{status} {code.value}: {message}")
        self.code = code
        self.status = status
        self.message = message
        self.request_id = request_id

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(code={self.code.value!r}, status={self.status}, "
            f"message={self.message!r}, request_id={self.request_id!r})"
        )


class InvalidRequestError(APIError):
    """400 or 413: ``invalid_request``, ``invalid_usage``, ``unsupported``,
    ``invalid_ciphertext`` or ``payload_too_large``."""


class UnauthenticatedError(APIError):
    """401 ``unauthenticated``: the token is missing, invalid, expired or revoked."""


class ForbiddenError(APIError):
    """403 ``forbidden``: roles or the policy refuse the operation (or a vote does not count)."""


class NotFoundError(APIError):
    """404 ``not_found``: no such key, version, approval or route."""


class ConflictError(APIError):
    """409 ``conflict`` (a name is taken, a concurrent change won) or ``invalid_state`` (the
    key or approval is in a state that refuses the operation)."""


class RateLimitedError(APIError):
    """429 ``rate_limited``; ``retry_after`` is the server's ``Retry-After`` in seconds."""

    def __init__(
        self,
        *,
        code: ErrorCode,
        status: int,
        message: str,
        request_id: str | None,
        retry_after: float | None,
    ) -> None:
        super().__init__(code=code, status=status, message=message, request_id=request_id)
        self.retry_after = retry_after


class UnavailableError(APIError):
    """503 ``unavailable``: a dependency (the audit log, the store) is failing, or the request
    timed out; retrying later may work."""


class ServerError(APIError):
    """500 ``internal`` or ``integrity``."""


class ApprovalRequiredError(APIError):
    """202: the operation is under dual control and waits for approvals.

    ``approval`` is the approval the server opened (what will run, who may approve) and
    ``approval_id`` its id: once approved, repeat the same call with ``approval_id=…`` (see
    ``Client.with_approval``).
    """

    def __init__(
        self, *, approval: ApprovalInfo, request_id: str | None, location: str | None
    ) -> None:
        super().__init__(
            code=ErrorCode.APPROVAL_REQUIRED,
            status=202,
            message=(
                f"approval {approval.id} required: {approval.approvals} of {approval.quorum} "
                f"approvals (policy {approval.policy}) for {approval.summary or approval.operation}"
            ),
            request_id=request_id,
        )
        self.approval = approval
        self.approval_id = approval.id
        self.location = location


class ApprovalNotGrantedError(FerroHSMError):
    """An approval the dual-control helper waited for ended without being granted (denied,
    expired, or already executed)."""

    def __init__(self, approval: ApprovalInfo) -> None:
        super().__init__(f"approval {approval.id} is {approval.state.value}, not approved")
        self.approval = approval
        self.approval_id = approval.id


class ApprovalTimeoutError(FerroHSMError):
    """The dual-control helper stopped waiting before the approval reached its quorum."""

    def __init__(self, approval: ApprovalInfo, waited_until: datetime) -> None:
        super().__init__(
            f"approval {approval.id} still {approval.state.value} "
            f"({approval.approvals} of {approval.quorum}) at {waited_until.isoformat()}"
        )
        self.approval = approval
        self.approval_id = approval.id
