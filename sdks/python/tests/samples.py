"""REST JSON bodies as the server writes them, for the unit tests."""

from __future__ import annotations

from typing import Any

KEY_ID = "01a232d8-beec-74d3-82af-18fddb9237b7"
APPROVAL_ID = "01a232e0-0000-7000-8000-000000000001"


def key(key_id: str = KEY_ID, name: str | None = "orders", **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": key_id,
        "name": name,
        "description": "",
        "algorithm": "aes-256-gcm",
        "usages": ["encrypt", "decrypt", "wrap", "unwrap"],
        "tags": {"team": "a"},
        "state": "active",
        "revocation": None,
        "destroy_after": None,
        "destroyed_at": None,
        "current_version": 1,
        "versions": [
            {
                "version": 1,
                "created_at": "2026-12-01T18:23:15.180959478Z",
                "state": "active",
                "encryptions": 0,
            }
        ],
        "created_at": "2026-12-01T18:23:15.180959478Z",
        "updated_at": "2026-12-01T18:23:15.180959478Z",
        "created_by": "dev-admin",
    }
    body.update(changes)
    return body


def approval(state: str = "pending", approvals: int = 0, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": APPROVAL_ID,
        "operation": "schedule_destruction",
        "key_id": KEY_ID,
        "requester": "olga",
        "requester_identity": ["olga"],
        "parameters": [
            {"name": "operation", "value": "schedule_destruction"},
            {"name": "key_id", "value": KEY_ID},
            {"name": "grace_seconds", "value": "0 (purged at the next scheduler run; requested)"},
        ],
        "summary": "operation=schedule_destruction; key_id=…",
        "policy": "production",
        "quorum": 2,
        "approvals": approvals,
        "approver_roles": ["admin", "operator"],
        "approver_issuers": [],
        "require_certificate": False,
        "state": state,
        "votes": [],
        "created_at": "2026-12-01T18:00:00Z",
        "expires_at": "2999-12-02T18:00:00Z",
        "executed_at": None,
    }
    body.update(changes)
    return body


def audit_record(seq: int) -> dict[str, Any]:
    return {
        "type": "record",
        "v": 1,
        "seq": seq,
        "id": f"01a232d8-beef-7add-a0c3-{seq:012d}",
        "ts": "2026-12-01T18:23:15.183144687Z",
        "actor": "dev-admin",
        "action": "encrypt",
        "key_id": KEY_ID,
        "key_version": 1,
        "outcome": "success",
        "request_id": f"r{seq}",
        "session": None,
        "client_fingerprint": None,
        "source_ip": "127.0.0.1",
        "message": None,
        "prev_hash": "00" * 32,
        "hash": "11" * 32,
        "hmac": "22" * 32,
    }
