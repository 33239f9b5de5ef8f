"""Typed request values and responses of the FerroHSM REST API.

Responses are frozen dataclasses whose fields carry the REST names. Binary fields (standard
base64 on the wire) are ``bytes``, timestamps (RFC 3339 on the wire) are timezone-aware
``datetime`` values, and closed sets of names are string enums. Fields a newer server adds are
ignored, and an enum value this version does not know is kept as an *unknown member* of its
enum (``member.is_known`` is false, ``member.value`` is the server's string) instead of being
refused, so an older client keeps working against a newer server.

``to_json`` turns any response back into its REST JSON form.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import enum
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Self, TypeVar

__all__ = [
    "Algorithm",
    "ApprovalInfo",
    "ApprovalList",
    "ApprovalState",
    "AuditFilter",
    "AuditOutcome",
    "AuditPage",
    "AuditRecord",
    "AuditVerification",
    "CheckpointInfo",
    "ComponentHealth",
    "Custody",
    "Encrypted",
    "ErrorCode",
    "Health",
    "Jwk",
    "JwkSet",
    "KeyInfo",
    "KeyList",
    "KeyMaterial",
    "KeyState",
    "ParameterInfo",
    "Plaintext",
    "PublicKeyInfo",
    "Revocation",
    "RevocationReason",
    "SignatureScheme",
    "Signed",
    "TokenResponse",
    "TokenRevocationInfo",
    "Usage",
    "Verified",
    "VersionInfo",
    "VersionState",
    "VoteInfo",
    "Wrapped",
    "to_json",
]


class OpenEnum(enum.StrEnum):
    """A string enum that accepts values it does not know.

    ``Algorithm("future-alg")`` returns an unknown member whose ``value`` is ``"future-alg"``
    and whose ``is_known`` is false, so a newer server's names parse instead of failing.
    Members compare equal to their string values.
    """

    @classmethod
    def _missing_(cls, value: object) -> Any:
        if not isinstance(value, str):
            return None
        member = str.__new__(cls, value)
        member._name_ = "UNKNOWN"
        member._value_ = value
        return member

    @property
    def is_known(self) -> bool:
        """Whether this version of the SDK knows the value."""
        return self._value_ in type(self)._value2member_map_


class Algorithm(OpenEnum):
    """A key algorithm."""

    AES_256_GCM = "aes-256-gcm"
    RSA_2048 = "rsa-2048"
    RSA_3072 = "rsa-3072"
    RSA_4096 = "rsa-4096"
    EC_P256 = "ec-p256"
    EC_P384 = "ec-p384"
    ED25519 = "ed25519"
    ML_DSA_44 = "ml-dsa-44"
    ML_DSA_65 = "ml-dsa-65"
    ML_DSA_87 = "ml-dsa-87"


class Usage(OpenEnum):
    """What a key may be used for."""

    ENCRYPT = "encrypt"
    DECRYPT = "decrypt"
    SIGN = "sign"
    VERIFY = "verify"
    WRAP = "wrap"
    UNWRAP = "unwrap"


class KeyState(OpenEnum):
    """A key's lifecycle state."""

    ACTIVE = "active"
    REVOKED = "revoked"
    PENDING_DESTRUCTION = "pending_destruction"
    DESTROYED = "destroyed"


class Custody(OpenEnum):
    """Where a key's material is kept."""

    SEALED = "sealed"
    """Sealed under the master key in the server's own store."""
    PKCS11 = "pkcs11"
    """Generated and used inside the server's PKCS#11 token; never exported."""


class VersionState(OpenEnum):
    """Whether a key version's material exists."""

    ACTIVE = "active"
    DESTROYED = "destroyed"


class SignatureScheme(OpenEnum):
    """A complete signature scheme (padding, hash, curve)."""

    RSA_PKCS1_SHA256 = "rsa-pkcs1-sha256"
    RSA_PKCS1_SHA384 = "rsa-pkcs1-sha384"
    RSA_PKCS1_SHA512 = "rsa-pkcs1-sha512"
    RSA_PSS_SHA256 = "rsa-pss-sha256"
    RSA_PSS_SHA384 = "rsa-pss-sha384"
    RSA_PSS_SHA512 = "rsa-pss-sha512"
    ECDSA_P256_SHA256 = "ecdsa-p256-sha256"
    ECDSA_P384_SHA384 = "ecdsa-p384-sha384"
    ED25519 = "ed25519"
    ML_DSA_44 = "ml-dsa-44"
    ML_DSA_65 = "ml-dsa-65"
    ML_DSA_87 = "ml-dsa-87"


class RevocationReason(OpenEnum):
    """Why a key was revoked."""

    UNSPECIFIED = "unspecified"
    COMPROMISED = "compromised"
    SUPERSEDED = "superseded"
    CESSATION_OF_OPERATION = "cessation_of_operation"
    PRIVILEGE_WITHDRAWN = "privilege_withdrawn"


class ApprovalState(OpenEnum):
    """The state of an approval request (dual control)."""

    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    EXPIRED = "expired"
    EXECUTED = "executed"


class AuditOutcome(OpenEnum):
    """How an audited operation ended."""

    SUCCESS = "success"
    DENIED = "denied"
    ERROR = "error"


class ErrorCode(OpenEnum):
    """The stable machine code of an error body."""

    INVALID_REQUEST = "invalid_request"
    INVALID_USAGE = "invalid_usage"
    UNSUPPORTED = "unsupported"
    INVALID_CIPHERTEXT = "invalid_ciphertext"
    UNAUTHENTICATED = "unauthenticated"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    INVALID_STATE = "invalid_state"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    RATE_LIMITED = "rate_limited"
    APPROVAL_REQUIRED = "approval_required"
    UNAVAILABLE = "unavailable"
    INTEGRITY = "integrity"
    INTERNAL = "internal"
    UNKNOWN = "unknown"


# ----- Wire encodings ------------------------------------------------------------------------

_RFC3339 = re.compile(
    r"^(\d{4}-\d{2}-\d{2})[Tt](\d{2}:\d{2}:\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:\d{2})$"
)


def parse_time(text: str) -> datetime:
    """Parses an RFC 3339 timestamp (fractions beyond microseconds are truncated)."""
    m = _RFC3339.match(text)
    if m is None:
        raise ValueError(f"not an RFC 3339 timestamp: {text!r}")
    date, clock, fraction, offset = m.groups()
    micros = (fraction or "")[:6].ljust(6, "0")
    offset = "+00:00" if offset in ("Z", "z") else offset
    return datetime.fromisoformat(f"{date}T{clock}.{micros}{offset}")


def format_time(value: datetime) -> str:
    """Formats a datetime as RFC 3339 UTC (``…Z``); a naive datetime is taken as UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    value = value.astimezone(timezone.utc)
    text = value.strftime("%Y-%m-%dT%H:%M:%S")
    if value.microsecond:
        text += f".{value.microsecond:06d}".rstrip("0")
    return text + "Z"


def b64encode(data: bytes) -> str:
    """Standard, padded base64."""
    return base64.b64encode(data).decode("ascii")


def b64decode(text: str) -> bytes:
    """Decodes standard base64, refusing anything else."""
    return base64.b64decode(text.encode("ascii"), validate=True)


class ResponseFormatError(ValueError):
    """A response body that does not have the shape the contract gives."""


_E = TypeVar("_E", bound=OpenEnum)
_T = TypeVar("_T")


class _Reader:
    """Typed access to one JSON object of a response, naming the path of anything missing."""

    __slots__ = ("_data", "_path")

    def __init__(self, data: object, path: str) -> None:
        if not isinstance(data, dict):
            raise ResponseFormatError(f"{path}: expected an object, got {_kind(data)}")
        self._data: dict[str, Any] = data
        self._path = path

    def _get(self, name: str, optional: bool) -> Any:
        if name not in self._data:
            if optional:
                return None
            raise ResponseFormatError(f"{self._path}.{name}: missing")
        return self._data[name]

    def _bad(self, name: str, want: str, got: object) -> ResponseFormatError:
        return ResponseFormatError(f"{self._path}.{name}: expected {want}, got {_kind(got)}")

    def string(self, name: str, default: str | None = None) -> str:
        value = self._get(name, default is not None)
        if value is None and default is not None:
            return default
        if not isinstance(value, str):
            raise self._bad(name, "a string", value)
        return value

    def opt_string(self, name: str) -> str | None:
        value = self._get(name, True)
        if value is None or isinstance(value, str):
            return value
        raise self._bad(name, "a string or null", value)

    def integer(self, name: str, default: int | None = None) -> int:
        value = self._get(name, default is not None)
        if value is None and default is not None:
            return default
        if not isinstance(value, int) or isinstance(value, bool):
            raise self._bad(name, "an integer", value)
        return value

    def opt_integer(self, name: str) -> int | None:
        value = self._get(name, True)
        if value is None:
            return None
        if not isinstance(value, int) or isinstance(value, bool):
            raise self._bad(name, "an integer or null", value)
        return value

    def boolean(self, name: str, default: bool | None = None) -> bool:
        value = self._get(name, default is not None)
        if value is None and default is not None:
            return default
        if not isinstance(value, bool):
            raise self._bad(name, "a boolean", value)
        return value

    def timestamp(self, name: str) -> datetime:
        text = self.string(name)
        try:
            return parse_time(text)
        except ValueError as e:
            raise ResponseFormatError(f"{self._path}.{name}: {e}") from None

    def opt_timestamp(self, name: str) -> datetime | None:
        text = self.opt_string(name)
        return None if text is None else self.timestamp(name)

    def binary(self, name: str) -> bytes:
        text = self.string(name)
        try:
            return b64decode(text)
        except (binascii.Error, ValueError):
            raise ResponseFormatError(f"{self._path}.{name}: not standard base64") from None

    def enum(self, name: str, kind: type[_E], default: _E | None = None) -> _E:
        return kind(self.string(name, None if default is None else default.value))

    def enums(self, name: str, kind: type[_E]) -> tuple[_E, ...]:
        return tuple(kind(v) for v in self.strings(name))

    def strings(self, name: str, optional: bool = False) -> tuple[str, ...]:
        value = self._get(name, optional)
        if value is None and optional:
            return ()
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self._bad(name, "an array of strings", value)
        return tuple(value)

    def str_map(self, name: str) -> dict[str, str]:
        value = self._get(name, True)
        if value is None:
            return {}
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise self._bad(name, "an object of strings", value)
        return dict(value)

    def obj(self, name: str, parse: Callable[[_Reader], _T]) -> _T:
        return parse(_Reader(self._get(name, False), f"{self._path}.{name}"))

    def opt_obj(self, name: str, parse: Callable[[_Reader], _T]) -> _T | None:
        value = self._get(name, True)
        if value is None:
            return None
        return parse(_Reader(value, f"{self._path}.{name}"))

    def objs(
        self, name: str, parse: Callable[[_Reader], _T], optional: bool = False
    ) -> tuple[_T, ...]:
        value = self._get(name, optional)
        if value is None and optional:
            return ()
        if not isinstance(value, list):
            raise self._bad(name, "an array", value)
        return tuple(parse(_Reader(v, f"{self._path}.{name}[{i}]")) for i, v in enumerate(value))

    def raw(self, name: str) -> Any:
        return self._get(name, True)


def _kind(value: object) -> str:
    if value is None:
        return "null"
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )


class _Model(ABC):
    """Parsing from and serialising to REST JSON; each model reads its own fields."""

    @classmethod
    def from_json(cls, data: object) -> Self:
        """Parses the REST JSON form (a decoded JSON value)."""
        return cls._read(_Reader(data, cls.__name__))

    @classmethod
    @abstractmethod
    def _read(cls, r: _Reader) -> Self:
        """Reads the model's fields."""

    def to_json(self) -> dict[str, Any]:
        """The REST JSON form (a JSON-encodable dict)."""
        result = to_json(self)
        assert isinstance(result, dict)
        return result


def to_json(value: object) -> Any:
    """Serialises a response (or any value inside one) to its REST JSON form: bytes as
    standard base64, datetimes as RFC 3339 UTC, enums as their strings."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, bytes):
        return b64encode(value)
    if isinstance(value, datetime):
        return format_time(value)
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): to_json(v) for k, v in value.items()}
    return value


# ----- Keys ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class VersionInfo(_Model):
    """One key version."""

    version: int
    created_at: datetime
    state: VersionState
    encryptions: int = 0
    """AES-GCM encryptions this version has used or reserved."""

    @classmethod
    def _read(cls, r: _Reader) -> Self:
        return cls(
            version=r.integer("version"),
            created_at=r.timestamp("created_at"),
            state=r.enum("state", VersionState),
            encryptions=r.integer("encryptions", 0),
        )


@dataclass(frozen=True)
class Revocation(_Model):
    """Why and when a key was revoked."""

    reason: RevocationReason
    comment: str | None
    at: datetime

    @classmethod
    def _read(cls, r: _Reader) -> Self:
        return cls(
            reason=r.enum("reason", RevocationReason),
            comment=r.opt_string("comment"),
            at=r.timestamp("at"),
        )


@dataclass(frozen=True)
class KeyInfo(_Model):
    """A key's metadata (never its material)."""

    id: str
    name: str | None
    description: str
    algorithm: Algorithm
    usages: tuple[Usage, ...]
    tags: Mapping[str, str]
    state: KeyState
    revocation: Revocation | None
    destroy_after: datetime | None
    destroyed_at: datetime | None
    current_version: int
    versions: tuple[VersionInfo, ...]
    created_at: datetime
    updated_at: datetime
    created_by: str
    custody: Custody = Custody.SEALED
    """Where the material is kept; ``SEALED`` when the server does not say."""

    @classmethod
    def _read(cls, r: _Reader) -> Self:
        return cls(
            id=r.string("id"),
            name=r.opt_string("name"),
            description=r.string("description", ""),
            algorithm=r.enum("algorithm", Algorithm),
            usages=r.enums("usages", Usage),
            tags=r.str_map("tags"),
            state=r.enum("state", KeyState),
            revocation=r.opt_obj("revocation", Revocation._read),
            destroy_after=r.opt_timestamp("destroy_after"),
            destroyed_at=r.opt_timestamp("destroyed_at"),
            current_version=r.integer("current_version"),
            versions=r.objs("versions", VersionInfo._read),
            created_at=r.timestamp("created_at"),
            updated_at=r.timestamp("updated_at"),
            created_by=r.string("created_by", ""),
            custody=r.enum("custody", Custody, Custody.SEALED),
        )


@dataclass(frozen=True)
class KeyList(_Model):
    """One page of keys, oldest first."""

    keys: tuple[KeyInfo, ...]
    next_cursor: str | None
    """Pass as ``cursor`` to get the next page; ``None`` on the last page."""

    @classmethod
    def _read(cls, r: _Reader) -> Self:
        return cls(keys=r.objs("keys", KeyInfo._read), next_cursor=r.opt_string("next_cursor"))


# ----- Cryptographic operations --------------------------------------------------------------


@dataclass(frozen=True)
class Encrypted(_Model):
    """The result of an encryption."""

    key_id: str
    key_version: int
    ciphertext: str
    """``fhsm:v<version>:<base64>``, as decrypt takes it."""

    @classmethod
    def _read(cls, r: _Reader) -> Self:
        return cls(
            key_id=r.string("key_id"),
            key_version=r.integer("key_version"),
            ciphertext=r.string("ciphertext"),
        )


@dataclass(frozen=True)
class Plaintext(_Model):
    """The result of a decryption."""

    key_id: str
    key_version: int
    plaintext: bytes = field(repr=False)

    @classmethod
    def _read(cls, r: _Reader) -> Self:
        return cls(
            key_id=r.string("key_id"),
            key_version=r.integer("key_version"),
            plaintext=r.binary("plaintext"),
        )


@dataclass(frozen=True)
class Signed(_Model):
    """The result of signing."""

    key_id: str
    key_version: int
    algorithm: SignatureScheme
    signature: bytes
    """DER for ECDSA; raw for RSA, Ed25519 and ML-DSA."""

    @classmethod
    def _read(cls, r: _Reader) -> Self:
        return cls(
            key_id=r.string("key_id"),
            key_version=r.integer("key_version"),
            algorithm=r.enum("algorithm", SignatureScheme),
            signature=r.binary("signature"),
        )


@dataclass(frozen=True)
class Verified(_Model):
    """The result of a verification."""

    key_id: str
    key_version: int
    algorithm: SignatureScheme
    valid: bool

    @classmethod
    def _read(cls, r: _Reader) -> Self:
        return cls(
            key_id=r.string("key_id"),
            key_version=r.integer("key_version"),
            algorithm=r.enum("algorithm", SignatureScheme),
            valid=r.boolean("valid"),
        )


@dataclass(frozen=True)
class Wrapped(_Model):
    """The result of wrapping key material."""

    key_id: str
    key_version: int
    wrapped: str
    """``fhsm:v<version>:<base64>``, as unwrap takes it."""

    @classmethod
    def _read(cls, r: _Reader) -> Self:
        return cls(
            key_id=r.string("key_id"),
            key_version=r.integer("key_version"),
            wrapped=r.string("wrapped"),
        )


@dataclass(frozen=True)
class KeyMaterial(_Model):
    """The result of unwrapping."""

    key_id: str
    key_version: int
    key_material: bytes = field(repr=False)

    @classmethod
    def _read(cls, r: _Reader) -> Self:
        return cls(
            key_id=r.string("key_id"),
            key_version=r.integer("key_version"),
            key_material=r.binary("key_material"),
        )


@dataclass(frozen=True)
class Jwk(_Model):
    """A public key as a JSON Web Key (base64url members without padding)."""

    kty: str
    kid: str | None = None
    alg: str | None = None
    use: str | None = None
    crv: str | None = None
    x: str | None = None
    y: str | None = None
    n: str | None = None
    e: str | None = None

    @classmethod
    def _read(cls, r: _Reader) -> Self:
        return cls(
            kty=r.string("kty"),
            kid=r.opt_string("kid"),
            alg=r.opt_string("alg"),
            use=r.opt_string("use"),
            crv=r.opt_string("crv"),
            x=r.opt_string("x"),
            y=r.opt_string("y"),
            n=r.opt_string("n"),
            e=r.opt_string("e"),
        )


@dataclass(frozen=True)
class JwkSet(_Model):
    """A JSON Web Key Set."""

    keys: tuple[Jwk, ...]

    @classmethod
    def _read(cls, r: _Reader) -> Self:
        return cls(keys=r.objs("keys", Jwk._read))


@dataclass(frozen=True)
class PublicKeyInfo(_Model):
    """A key version's public key."""

    key_id: str
    key_version: int
    algorithm: Algorithm
    pem: str
    """SubjectPublicKeyInfo as PEM."""
    der: bytes
    """SubjectPublicKeyInfo as DER."""
    jwk: Jwk | None = None

    @classmethod
    def _read(cls, r: _Reader) -> Self:
        return cls(
            key_id=r.string("key_id"),
            key_version=r.integer("key_version"),
            algorithm=r.enum("algorithm", Algorithm),
            pem=r.string("pem"),
            der=r.binary("der"),
            jwk=r.opt_obj("jwk", Jwk._read),
        )


# ----- Approvals -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ParameterInfo(_Model):
    """One named parameter of an approval."""

    name: str
    value: str

    @classmethod
    def _read(cls, r: _Reader) -> Self:
        return cls(name=r.string("name"), value=r.string("value"))


@dataclass(frozen=True)
class VoteInfo(_Model):
    """One vote on an approval."""

    actor: str
    source: str
    identity: tuple[str, ...]
    approve: bool
    comment: str | None
    at: datetime

    @classmethod
    def _read(cls, r: _Reader) -> Self:
        return cls(
            actor=r.string("actor"),
            source=r.string("source", ""),
            identity=r.strings("identity", optional=True),
            approve=r.boolean("approve"),
            comment=r.opt_string("comment"),
            at=r.timestamp("at"),
        )


@dataclass(frozen=True)
class ApprovalInfo(_Model):
    """An approval request (dual control)."""

    id: str
    """The id, sent back as ``X-Approval-Id`` when the request is repeated."""
    operation: str
    key_id: str
    requester: str
    requester_identity: tuple[str, ...]
    parameters: tuple[ParameterInfo, ...]
    summary: str
    policy: str
    quorum: int
    approvals: int
    approver_roles: tuple[str, ...]
    approver_issuers: tuple[str, ...]
    require_certificate: bool
    state: ApprovalState
    votes: tuple[VoteInfo, ...]
    created_at: datetime
    expires_at: datetime
    executed_at: datetime | None

    @classmethod
    def _read(cls, r: _Reader) -> Self:
        return cls(
            id=r.string("id"),
            operation=r.string("operation"),
            key_id=r.string("key_id", ""),
            requester=r.string("requester"),
            requester_identity=r.strings("requester_identity", optional=True),
            parameters=r.objs("parameters", ParameterInfo._read, optional=True),
            summary=r.string("summary", ""),
            policy=r.string("policy", ""),
            quorum=r.integer("quorum"),
            approvals=r.integer("approvals"),
            approver_roles=r.strings("approver_roles", optional=True),
            approver_issuers=r.strings("approver_issuers", optional=True),
            require_certificate=r.boolean("require_certificate", False),
            state=r.enum("state", ApprovalState),
            votes=r.objs("votes", VoteInfo._read, optional=True),
            created_at=r.timestamp("created_at"),
            expires_at=r.timestamp("expires_at"),
            executed_at=r.opt_timestamp("executed_at"),
        )


@dataclass(frozen=True)
class ApprovalList(_Model):
    """A page of approvals, newest first.

    The server of this version answers every approval up to ``limit`` and no cursor;
    ``next_cursor`` is read when a server sends one.
    """

    approvals: tuple[ApprovalInfo, ...]
    next_cursor: str | None = None

    @classmethod
    def _read(cls, r: _Reader) -> Self:
        return cls(
            approvals=r.objs("approvals", ApprovalInfo._read),
            next_cursor=r.opt_string("next_cursor"),
        )


# ----- Audit ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditFilter:
    """Filters of ``GET /v1/audit`` (all optional; every one given must match)."""

    actor: str | None = None
    action: str | None = None
    key_id: str | None = None
    outcome: AuditOutcome | str | None = None
    request_id: str | None = None
    """Only the records of this request id."""
    since: datetime | str | None = None
    """Records written at or after this time (a datetime, or RFC 3339 text)."""
    until: datetime | str | None = None
    """Records written before this time."""

    def query(self) -> list[tuple[str, str]]:
        """The query parameters."""
        out: list[tuple[str, str]] = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            if isinstance(value, datetime):
                value = format_time(value)
            out.append((f.name, str(value)))
        return out


@dataclass(frozen=True)
class AuditRecord(_Model):
    """One audit record, as it appears in the log."""

    type: str
    v: int
    seq: int
    id: str
    ts: datetime
    actor: str
    action: str
    key_id: str | None
    key_version: int | None
    outcome: AuditOutcome
    request_id: str
    session: str | None
    client_fingerprint: str | None
    source_ip: str | None
    message: str | None
    prev_hash: str
    """Hex."""
    hash: str
    """Hex."""
    hmac: str
    """Hex."""

    @classmethod
    def _read(cls, r: _Reader) -> Self:
        return cls(
            type=r.string("type", "record"),
            v=r.integer("v"),
            seq=r.integer("seq"),
            id=r.string("id"),
            ts=r.timestamp("ts"),
            actor=r.string("actor"),
            action=r.string("action"),
            key_id=r.opt_string("key_id"),
            key_version=r.opt_integer("key_version"),
            outcome=r.enum("outcome", AuditOutcome),
            request_id=r.string("request_id", ""),
            session=r.opt_string("session"),
            client_fingerprint=r.opt_string("client_fingerprint"),
            source_ip=r.opt_string("source_ip"),
            message=r.opt_string("message"),
            prev_hash=r.string("prev_hash"),
            hash=r.string("hash"),
            hmac=r.string("hmac"),
        )


@dataclass(frozen=True)
class AuditPage(_Model):
    """A page of audit records, oldest first."""

    records: tuple[AuditRecord, ...]
    next_cursor: str | None

    @classmethod
    def _read(cls, r: _Reader) -> Self:
        return cls(
            records=r.objs("records", AuditRecord._read), next_cursor=r.opt_string("next_cursor")
        )


@dataclass(frozen=True)
class AuditVerification(_Model):
    """The result of the server verifying its own audit log."""

    valid: bool
    records: int
    signatures_checked: int
    first_seq: int | None
    last_seq: int | None
    partial: bool
    failure: str | None = None

    @classmethod
    def _read(cls, r: _Reader) -> Self:
        return cls(
            valid=r.boolean("valid"),
            records=r.integer("records"),
            signatures_checked=r.integer("signatures_checked"),
            first_seq=r.opt_integer("first_seq"),
            last_seq=r.opt_integer("last_seq"),
            partial=r.boolean("partial", False),
            failure=r.opt_string("failure"),
        )


@dataclass(frozen=True)
class CheckpointInfo(_Model):
    """The latest signed audit checkpoint (``None`` before the first) and its public key."""

    checkpoint: Mapping[str, Any] | None
    public_key_pem: str

    @classmethod
    def _read(cls, r: _Reader) -> Self:
        checkpoint = r.raw("checkpoint")
        if checkpoint is not None and not isinstance(checkpoint, dict):
            raise ResponseFormatError("CheckpointInfo.checkpoint: expected an object or null")
        return cls(checkpoint=checkpoint, public_key_pem=r.string("public_key_pem"))


# ----- Tokens and health ---------------------------------------------------------------------


@dataclass(frozen=True)
class TokenResponse(_Model):
    """An issued token."""

    token: str = field(repr=False)
    expires_at: datetime
    kid: str
    jti: str
    sid: str

    @classmethod
    def _read(cls, r: _Reader) -> Self:
        return cls(
            token=r.string("token"),
            expires_at=r.timestamp("expires_at"),
            kid=r.string("kid"),
            jti=r.string("jti"),
            sid=r.string("sid"),
        )


@dataclass(frozen=True)
class TokenRevocationInfo(_Model):
    """A token revocation in force."""

    matches: str
    value: str
    reason: str | None
    revoked_by: str
    revoked_at: datetime
    expires_at: datetime

    @classmethod
    def _read(cls, r: _Reader) -> Self:
        return cls(
            matches=r.string("matches"),
            value=r.string("value"),
            reason=r.opt_string("reason"),
            revoked_by=r.string("revoked_by"),
            revoked_at=r.timestamp("revoked_at"),
            expires_at=r.timestamp("expires_at"),
        )


@dataclass(frozen=True)
class ComponentHealth(_Model):
    """One component's health."""

    status: str
    detail: str

    @classmethod
    def _read(cls, r: _Reader) -> Self:
        return cls(status=r.string("status"), detail=r.string("detail", ""))


@dataclass(frozen=True)
class Health(_Model):
    """``GET /healthz``: ``status`` is ``ok`` or ``degraded``.

    ``vault``, the key vault (a PKCS#11 token), is ``None`` unless the server has one
    configured; while it is failing, ``status`` is ``degraded``. ``tls`` is the served
    certificate's expiry and, in ACME mode, its renewal: its ``status`` is ``error`` while
    renewals fail (the server stays ``ok``) or when no unexpired certificate is served (the
    server is then ``degraded``); ``None`` from servers older than this field.
    """

    status: str
    version: str
    store: ComponentHealth
    audit: ComponentHealth
    seal: ComponentHealth
    policy: ComponentHealth
    keyset: ComponentHealth | None = None
    jobs: ComponentHealth | None = None
    vault: ComponentHealth | None = None
    tls: ComponentHealth | None = None

    @classmethod
    def _read(cls, r: _Reader) -> Self:
        return cls(
            status=r.string("status"),
            version=r.string("version", ""),
            store=r.obj("store", ComponentHealth._read),
            audit=r.obj("audit", ComponentHealth._read),
            seal=r.obj("seal", ComponentHealth._read),
            policy=r.obj("policy", ComponentHealth._read),
            keyset=r.opt_obj("keyset", ComponentHealth._read),
            jobs=r.opt_obj("jobs", ComponentHealth._read),
            vault=r.opt_obj("vault", ComponentHealth._read),
            tls=r.opt_obj("tls", ComponentHealth._read),
        )
