"""The scenario runner itself, against a scripted server: it must pass what holds and fail,
naming the scenario and step, what does not."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable
from typing import Any

import httpx
import pytest

from conftest import Flavour, Mock, error_body, reply
from ferrohsm import AsyncClient, Client
from samples import APPROVAL_ID, KEY_ID, approval, key
from test_scenarios import (
    AnyClient,
    AsyncRecordingTransport,
    RecordingTransport,
    Statuses,
    StepFailure,
    differences,
    lookup,
    run_scenario,
    substitute,
)


def test_differences_follow_the_readme() -> None:
    actual = {"a": 1, "b": {"c": "x", "d": [1, 2]}, "n": None, "t": True}
    assert differences({"a": 1, "b": {"c": "x"}}, actual) == []
    assert differences({"a": 1.0}, actual) == []  # numbers by value
    assert differences({"n": None, "absent": None}, actual) == []  # null: null or absent
    assert differences({"b": {"d": [1, 2]}}, actual) == []
    # Arrays compare whole.
    assert differences({"b": {"d": [1]}}, actual) == ["b.d: expected [1], got [1, 2]"]
    assert differences({"a": "1"}, actual) == ['a: expected "1", got 1']
    assert differences({"t": 1}, actual) == ["t: expected 1, got true"]
    assert differences({"b": {"c": "y"}}, actual) == ['b.c: expected "y", got "x"']
    assert differences({"z": 0}, actual) == ["z: missing (expected 0)"]


def test_substitution_is_textual() -> None:
    variables: dict[str, object] = {"run": "py1", "v": 2, "ok": True, "s": "x"}
    substituted = substitute({"k": ["${run}-a", "${v}", "${ok}", 5]}, variables)
    assert substituted == {"k": ["py1-a", "2", "true", 5]}
    with pytest.raises(StepFailure, match="unknown variable"):
        substitute("${nope}", variables)


def test_lookup_reaches_into_arrays() -> None:
    body = {"versions": [{"version": 1}, {"version": 2}]}
    assert lookup(body, "versions.1.version") == 2
    with pytest.raises(StepFailure, match="cannot save"):
        lookup(body, "versions.2.version")


def _server() -> Mock:
    """A tiny scripted server: create, encrypt (under dual control without an approval id),
    list keys in two pages, and describe missing keys."""

    def handle(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/v1/keys" and request.method == "POST":
            return reply(201, key(name="py1-orders"))
        if path == "/v1/keys":
            if request.url.params.get("cursor") is None:
                return reply(200, {"keys": [key("k1")], "next_cursor": "c"})
            return reply(200, {"keys": [key("k2")], "next_cursor": None})
        if path.endswith("/encrypt"):
            if request.headers.get("X-Approval-Id") == APPROVAL_ID:
                body = {"key_id": KEY_ID, "key_version": 1, "ciphertext": "fhsm:v1:AAAA"}
                return reply(200, body)
            return reply(202, approval())
        return reply(404, error_body("not_found"))

    return Mock([handle])


SCENARIO: dict[str, Any] = {
    "name": "demo",
    "steps": [
        {
            "call": "create_key",
            "input": {"name": "${run}-orders", "algorithm": "aes-256-gcm"},
            "expect": {
                "status": 201,
                "output": {"name": "${run}-orders", "versions": [{"version": 1}]},
            },
            "save": {"id": "id", "v": "versions.0.version"},
        },
        {"call": "encrypt", "input": {"key": "${id}", "plaintext": "aGk="},
         "expect": {"approval_required": True, "output": {"quorum": 2, "state": "pending"}},
         "save": {"approval": "approval_id"}},
        {
            "call": "encrypt",
            "input": {"key": "${id}", "plaintext": "aGk=", "approval_id": "${approval}"},
            "expect": {"status": 200, "output": {"key_version": 1}},
        },
        {"call": "list_keys", "as": "auditor", "input": {"limit": "${v}", "tag": "team:a"},
         "expect": {"status": 200, "count": 2}},
        {"call": "describe_key", "input": {"key": "missing"},
         "expect": {"error": "not_found", "status": 404}},
    ],
}


async def _run(flavour: Flavour, mock: Mock, scenario: dict[str, Any]) -> None:
    statuses = Statuses()
    clients: dict[str, AnyClient] = {}
    for name in ("operator", "auditor"):
        if flavour.name == "sync":
            transport = RecordingTransport(httpx.MockTransport(mock), statuses)
            clients[name] = Client("https://hsm.test", name, transport=transport)
        else:
            atransport = AsyncRecordingTransport(httpx.MockTransport(mock), statuses)
            clients[name] = AsyncClient("https://hsm.test", name, transport=atransport)
    try:
        outcome: Awaitable[None] = run_scenario(scenario, clients, statuses, "py1")
        assert inspect.iscoroutine(outcome)
        await outcome
    finally:
        for client in clients.values():
            await flavour.close(client)


async def test_a_scenario_that_holds_passes(flavour: Flavour) -> None:
    mock = _server()
    await _run(flavour, mock, SCENARIO)
    assert mock.requests[2].headers["X-Approval-Id"] == APPROVAL_ID
    assert mock.requests[3].headers["Authorization"] == "Bearer auditor"
    assert mock.requests[3].url.params.get("limit") == "1"


@pytest.mark.parametrize(
    ("index", "change", "message"),
    [
        (
            0,
            {"expect": {"status": 200}},
            "step 0 (create_key as operator): expected status 200, got statuses [201]",
        ),
        (
            0,
            {"expect": {"status": 201, "output": {"state": "revoked"}}},
            'state: expected "revoked", got "active"',
        ),
        (
            1,
            {"expect": {"status": 200}},
            "step 1 (encrypt as operator): expected status 200, got ApprovalRequiredError",
        ),
        (
            2,
            {"expect": {"approval_required": True}},
            "step 2 (encrypt as operator): expected approval_required (202), got success",
        ),
        (
            3,
            {"expect": {"status": 200, "count": 3}},
            "step 3 (list_keys as auditor): expected count 3, the iterator gave 2",
        ),
        (
            4,
            {"expect": {"error": "conflict", "status": 409}},
            "expected error conflict (409), got not_found (404)",
        ),
        (
            4,
            {"expect": {"status": 200}},
            "step 4 (describe_key as operator): expected status 200, got NotFoundError",
        ),
        (
            4,
            {"input": {"key": "missing", "colour": "red"}},
            "input fields the call does not take: ['colour']",
        ),
        (4, {"as": "nobody"}, "unknown principal 'nobody'"),
    ],
)
async def test_a_step_that_does_not_hold_fails_naming_it(
    flavour: Flavour, index: int, change: dict[str, Any], message: str
) -> None:
    steps = [dict(step) for step in SCENARIO["steps"]]
    steps[index].update(change)
    with pytest.raises(StepFailure) as caught:
        await _run(flavour, _server(), {"name": "demo", "steps": steps})
    assert str(caught.value).startswith(f"scenario 'demo', step {index} (")
    assert message in str(caught.value)
