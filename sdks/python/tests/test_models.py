"""Parsing and serialising the REST types: tolerant of a newer server, exact about encodings."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone

import pytest

import ferrohsm
from ferrohsm import Algorithm, ApprovalInfo, Custody, ErrorCode, KeyInfo, KeyState, Signed
from ferrohsm.models import ResponseFormatError, format_time, parse_time
from samples import KEY_ID, approval, key


def test_unknown_fields_are_ignored_and_unknown_names_kept() -> None:
    body = key(algorithm="future-alg-9", state="archived", usages=["encrypt", "attest"])
    body["quota"] = {"left": 3}
    body["versions"][0]["state"] = "sealed-away"
    body["versions"][0]["future"] = True
    info = KeyInfo.from_json(body)
    assert info.algorithm == "future-alg-9" and not info.algorithm.is_known
    assert isinstance(info.algorithm, Algorithm)
    assert info.state == "archived" and not info.state.is_known
    assert [u.is_known for u in info.usages] == [True, False]
    assert info.versions[0].state.value == "sealed-away"
    back = info.to_json()
    assert back["algorithm"] == "future-alg-9"
    assert back["usages"] == ["encrypt", "attest"]
    assert "quota" not in back


def test_known_members_are_the_enum_members_and_equal_their_strings() -> None:
    info = KeyInfo.from_json(key(state="pending_destruction"))
    assert info.state == "pending_destruction"
    assert info.state is KeyState.PENDING_DESTRUCTION
    assert {"pending_destruction": 1}[info.state] == 1
    assert KeyState.ACTIVE.is_known
    assert str(Algorithm.EC_P256) == "ec-p256"
    assert ErrorCode("brand_new") != ErrorCode.UNKNOWN


@pytest.mark.parametrize(
    ("custody", "expected", "known"),
    [
        ("pkcs11", Custody.PKCS11, True),
        ("sealed", Custody.SEALED, True),
        ("hsm-cluster", "hsm-cluster", False),
        (None, Custody.SEALED, True),
    ],
)
def test_custody_parses_and_defaults_to_sealed(
    custody: str | None, expected: str, known: bool
) -> None:
    body = key() if custody is None else key(custody=custody)
    info = KeyInfo.from_json(body)
    assert isinstance(info.custody, Custody)
    assert info.custody == expected and info.custody.is_known is known
    assert info.to_json()["custody"] == expected
    # A server that sends null says no more than one that sends nothing.
    assert KeyInfo.from_json(key(custody=None)).custody is Custody.SEALED


def test_to_json_gives_back_the_rest_form() -> None:
    body = key(
        state="revoked",
        revocation={"reason": "superseded", "comment": None, "at": "2026-12-01T18:30:00Z"},
        destroy_after="2026-12-02T18:30:00.5Z",
    )
    info = KeyInfo.from_json(body)
    assert info.revocation is not None
    assert info.revocation.reason is ferrohsm.RevocationReason.SUPERSEDED
    back = info.to_json()
    assert back["revocation"] == {
        "reason": "superseded",
        "comment": None,
        "at": "2026-12-01T18:30:00Z",
    }
    assert back["destroy_after"] == "2026-12-02T18:30:00.5Z"
    # Nanoseconds do not fit a datetime: the serialised form keeps microseconds.
    assert back["created_at"] == "2026-12-01T18:23:15.180959Z"
    for name in ("id", "name", "tags", "usages", "current_version", "created_by"):
        assert back[name] == body[name]
    signed = Signed.from_json(
        {"key_id": KEY_ID, "key_version": 1, "algorithm": "ed25519", "signature": "AAEC"}
    )
    assert signed.signature == b"\x00\x01\x02"
    assert ferrohsm.to_json(signed)["signature"] == "AAEC"


def test_responses_are_frozen() -> None:
    info = KeyInfo.from_json(key())
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.state = KeyState.REVOKED  # type: ignore[misc]


def test_approvals_parse_with_optional_fields_absent() -> None:
    body = approval(state="approved", approvals=2)
    optional = ("requester_identity", "parameters", "summary", "approver_issuers")
    for name in (*optional, "require_certificate"):
        del body[name]
    body["votes"] = [
        {"actor": "ada", "approve": True, "comment": "ok", "at": "2026-12-01T18:01:00Z"},
    ]
    info = ApprovalInfo.from_json(body)
    assert info.state is ferrohsm.ApprovalState.APPROVED
    assert info.parameters == () and info.summary == "" and info.require_certificate is False
    assert info.votes[0].source == "" and info.votes[0].identity == ()
    assert info.expires_at.tzinfo is not None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {**key(), "current_version": "1"},
            r"KeyInfo\.current_version: expected an integer, got a string",
        ),
        ({**key(), "created_at": "yesterday"}, r"KeyInfo\.created_at: not an RFC 3339 timestamp"),
        ({**key(), "versions": [{"version": 1}]}, r"KeyInfo\.versions\[0\]\.created_at: missing"),
        ({**key(), "tags": ["a"]}, r"KeyInfo\.tags: expected an object of strings, got an array"),
        ([], r"KeyInfo: expected an object, got an array"),
    ],
)
def test_a_malformed_body_names_the_field(body: object, message: str) -> None:
    with pytest.raises(ResponseFormatError, match=message):
        KeyInfo.from_json(body)


def test_base64_must_be_standard() -> None:
    with pytest.raises(ResponseFormatError, match="not standard base64"):
        Signed.from_json(
            {"key_id": "k", "key_version": 1, "algorithm": "ed25519", "signature": "a_b-"}
        )


def test_rfc3339_times() -> None:
    assert parse_time("2026-12-01T18:23:15.180959478Z") == datetime(
        2026, 12, 1, 18, 23, 15, 180959, timezone.utc
    )
    utc = timezone.utc
    assert parse_time("2026-12-01T19:23:15+01:00") == datetime(2026, 12, 1, 18, 23, 15, tzinfo=utc)
    assert parse_time("2026-12-01t18:23:15.5z").microsecond == 500000
    for bad in ("2026-12-01", "2026-12-01T18:23:15", "2026-12-01 18:23:15Z"):
        with pytest.raises(ValueError):
            parse_time(bad)
    assert format_time(datetime(2026, 1, 2, 3, 4, 5)) == "2026-01-02T03:04:05Z"
    plus_two = timezone(timedelta(hours=2))
    assert format_time(datetime(2026, 1, 2, 5, 4, 5, 120000, plus_two)) == "2026-01-02T03:04:05.12Z"
