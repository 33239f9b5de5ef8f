"""The shared SDK scenarios (sdks/testdata/scenarios.json, format in its README.md), run
through the SDK's typed methods with ``Client`` and again with ``AsyncClient``.

Each scenario is a test; its steps run in order and the first step that does not meet its
expectation fails the test, naming the scenario, the step index and what differed. ``${run}``
is one value per client flavour for the whole run; saved variables are kept per scenario.
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

import ferrohsm
from ferrohsm import APIError, ApprovalRequiredError, AsyncClient, AuditFilter, Client
from ferrohsm._core import error_class
from support import SCENARIOS_FILE, live_server_or_skip, run_id

AnyClient = Client | AsyncClient

# ----- The file ------------------------------------------------------------------------------


def _load() -> list[dict[str, Any]]:
    if not SCENARIOS_FILE.exists():
        return []
    document = json.loads(SCENARIOS_FILE.read_text())
    assert document.get("version") == 1, f"{SCENARIOS_FILE}: unsupported version"
    scenarios = document["scenarios"]
    assert isinstance(scenarios, list)
    return scenarios


SCENARIOS = _load()
RUNS = {"sync": run_id("s"), "async": run_id("a")}


class StepFailure(AssertionError):
    pass


# ----- Inputs --------------------------------------------------------------------------------


class Inputs:
    """A step's input, decoded into the SDK's types; names it does not use fail the step."""

    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data
        self._used: set[str] = set()

    def _take(self, name: str) -> Any:
        self._used.add(name)
        return self._data.get(name)

    def unused(self) -> list[str]:
        return sorted(set(self._data) - self._used)

    def string(self, name: str) -> str:
        value = self.opt_string(name)
        if value is None:
            raise StepFailure(f"input {name!r} is required")
        return value

    def opt_string(self, name: str) -> str | None:
        value = self._take(name)
        if value is not None and not isinstance(value, str):
            raise StepFailure(f"input {name!r}: expected a string, got {value!r}")
        return value

    def opt_int(self, name: str) -> int | None:
        # Substitution yields strings, so a number may come as its decimal text.
        value = self._take(name)
        if value is None or (isinstance(value, int) and not isinstance(value, bool)):
            return value
        if isinstance(value, str) and re.fullmatch(r"-?\d+", value):
            return int(value)
        raise StepFailure(f"input {name!r}: expected an integer, got {value!r}")

    def int(self, name: str) -> int:
        value = self.opt_int(name)
        if value is None:
            raise StepFailure(f"input {name!r} is required")
        return value

    def opt_bytes(self, name: str) -> bytes | None:
        text = self.opt_string(name)
        if text is None:
            return None
        try:
            return ferrohsm.models.b64decode(text)
        except ValueError:
            raise StepFailure(f"input {name!r}: not standard base64: {text!r}") from None

    def bytes(self, name: str) -> bytes:
        value = self.opt_bytes(name)
        if value is None:
            raise StepFailure(f"input {name!r} is required")
        return value

    def opt_strings(self, name: str) -> list[str] | None:
        value = self._take(name)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise StepFailure(f"input {name!r}: expected an array of strings, got {value!r}")
        return value

    def opt_map(self, name: str) -> dict[str, str] | None:
        value = self._take(name)
        if value is None:
            return None
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise StepFailure(f"input {name!r}: expected an object of strings, got {value!r}")
        return value

    def opt_tag_filter(self, name: str) -> list[tuple[str, str]] | None:
        value = self._take(name)
        if value is None:
            return None
        items = value if isinstance(value, list) else [value]
        out: list[tuple[str, str]] = []
        for item in items:
            if not isinstance(item, str) or ":" not in item:
                raise StepFailure(f"input {name!r}: expected k:v, got {item!r}")
            k, v = item.split(":", 1)
            out.append((k, v))
        return out

    def audit_filter(self) -> AuditFilter:
        return AuditFilter(
            actor=self.opt_string("actor"),
            action=self.opt_string("action"),
            key_id=self.opt_string("key_id"),
            outcome=self.opt_string("outcome"),
            request_id=self.opt_string("request_id"),
            since=self.opt_string("since"),
            until=self.opt_string("until"),
        )


# ----- Calls: one typed method per operationId -----------------------------------------------
#
# Each entry calls the same method on a Client or an AsyncClient (mypy checks the call against
# both signatures); an AsyncClient's result is awaited by the runner.

Invoke = Callable[[AnyClient, Inputs], object]

CALLS: dict[str, Invoke] = {
    "create_key": lambda c, i: c.create_key(
        i.string("algorithm"),
        name=i.opt_string("name"),
        description=i.opt_string("description"),
        usages=i.opt_strings("usages"),
        tags=i.opt_map("tags"),
        custody=i.opt_string("custody"),
    ),
    "list_keys": lambda c, i: c.list_keys(
        limit=i.opt_int("limit"),
        algorithm=i.opt_string("algorithm"),
        state=i.opt_string("state"),
        tags=i.opt_tag_filter("tag"),
        name_prefix=i.opt_string("name_prefix"),
    ),
    "describe_key": lambda c, i: c.describe_key(i.string("key")),
    "rotate_key": lambda c, i: c.rotate_key(
        i.string("key"), approval_id=i.opt_string("approval_id")
    ),
    "rollback_key": lambda c, i: c.rollback_key(
        i.string("key"), i.int("version"), approval_id=i.opt_string("approval_id")
    ),
    "revoke_key": lambda c, i: c.revoke_key(
        i.string("key"),
        i.string("reason"),
        comment=i.opt_string("comment"),
        approval_id=i.opt_string("approval_id"),
    ),
    "destroy_key": lambda c, i: c.destroy_key(
        i.string("key"),
        grace_seconds=i.opt_int("grace_seconds"),
        approval_id=i.opt_string("approval_id"),
    ),
    "cancel_destroy": lambda c, i: c.cancel_destroy(
        i.string("key"), approval_id=i.opt_string("approval_id")
    ),
    "encrypt": lambda c, i: c.encrypt(
        i.string("key"),
        i.bytes("plaintext"),
        aad=i.opt_bytes("aad"),
        approval_id=i.opt_string("approval_id"),
    ),
    "decrypt": lambda c, i: c.decrypt(
        i.string("key"),
        i.string("ciphertext"),
        aad=i.opt_bytes("aad"),
        approval_id=i.opt_string("approval_id"),
    ),
    "sign": lambda c, i: c.sign(
        i.string("key"),
        message=i.opt_bytes("message"),
        digest=i.opt_bytes("digest"),
        algorithm=i.opt_string("algorithm"),
        approval_id=i.opt_string("approval_id"),
    ),
    "verify": lambda c, i: c.verify(
        i.string("key"),
        i.bytes("signature"),
        message=i.opt_bytes("message"),
        digest=i.opt_bytes("digest"),
        algorithm=i.opt_string("algorithm"),
        key_version=i.opt_int("key_version"),
        approval_id=i.opt_string("approval_id"),
    ),
    "wrap": lambda c, i: c.wrap(
        i.string("key"), i.bytes("key_material"), approval_id=i.opt_string("approval_id")
    ),
    "unwrap": lambda c, i: c.unwrap(
        i.string("key"), i.string("wrapped"), approval_id=i.opt_string("approval_id")
    ),
    "public_key": lambda c, i: c.public_key(
        i.string("key"), version=i.opt_int("version"), approval_id=i.opt_string("approval_id")
    ),
    "list_approvals": lambda c, i: c.list_approvals(limit=i.opt_int("limit")),
    "describe_approval": lambda c, i: c.describe_approval(i.string("id")),
    "approve": lambda c, i: c.approve(i.string("id"), comment=i.opt_string("comment")),
    "deny": lambda c, i: c.deny(i.string("id"), comment=i.opt_string("comment")),
    "audit_records": lambda c, i: c.audit_records(limit=i.opt_int("limit"), where=i.audit_filter()),
    "audit_verify": lambda c, i: c.audit_verify(),
}

# The pagination iterators of the list calls, for `count`: `limit` is their page size.
ITERATORS: dict[str, Invoke] = {
    "list_keys": lambda c, i: c.iter_keys(
        page_size=i.opt_int("limit"),
        algorithm=i.opt_string("algorithm"),
        state=i.opt_string("state"),
        tags=i.opt_tag_filter("tag"),
        name_prefix=i.opt_string("name_prefix"),
    ),
    "list_approvals": lambda c, i: c.iter_approvals(page_size=i.opt_int("limit")),
    "audit_records": lambda c, i: c.iter_audit_records(
        page_size=i.opt_int("limit"), where=i.audit_filter()
    ),
}


async def _resolve(value: object) -> object:
    if inspect.isawaitable(value):
        return await value
    return value


async def _count(items: object) -> int:
    if isinstance(items, AsyncIterator):
        return len([item async for item in items])
    if isinstance(items, Iterator):
        return len(list(items))
    raise StepFailure(f"not an iterator: {items!r}")


# ----- Statuses ------------------------------------------------------------------------------


@dataclass
class Statuses:
    """The HTTP statuses the SDK received, recorded below it (the SDK's methods return
    typed results, not statuses)."""

    seen: list[int] = field(default_factory=list)


class RecordingTransport(httpx.BaseTransport):
    def __init__(self, inner: httpx.BaseTransport, statuses: Statuses) -> None:
        self._inner = inner
        self._statuses = statuses

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self._inner.handle_request(request)
        self._statuses.seen.append(response.status_code)
        return response

    def close(self) -> None:
        self._inner.close()


class AsyncRecordingTransport(httpx.AsyncBaseTransport):
    def __init__(self, inner: httpx.AsyncBaseTransport, statuses: Statuses) -> None:
        self._inner = inner
        self._statuses = statuses

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        self._statuses.seen.append(response.status_code)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


# ----- Expectations --------------------------------------------------------------------------

_VARIABLE = re.compile(r"\$\{([A-Za-z0-9_]+)\}")


def _text(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def substitute(value: Any, variables: dict[str, object]) -> Any:
    """Replaces ``${name}`` in every string of ``value`` (textually: the result is a string)."""
    if isinstance(value, str):

        def one(m: re.Match[str]) -> str:
            if m.group(1) not in variables:
                raise StepFailure(f"unknown variable ${{{m.group(1)}}}")
            return _text(variables[m.group(1)])

        return _VARIABLE.sub(one, value)
    if isinstance(value, list):
        return [substitute(v, variables) for v in value]
    if isinstance(value, dict):
        return {k: substitute(v, variables) for k, v in value.items()}
    return value


def differences(expected: Any, actual: Any, path: str = "") -> list[str]:
    """Where ``actual`` fails to contain ``expected``: objects as subsets, arrays whole,
    numbers by value, ``null`` matching null or absent."""
    where = path or "(response)"
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{where}: expected an object, got {json.dumps(actual)}"]
        out: list[str] = []
        for name, want in expected.items():
            sub = f"{path}.{name}" if path else name
            if name not in actual:
                if want is not None:
                    out.append(f"{sub}: missing (expected {json.dumps(want)})")
                continue
            out += differences(want, actual[name], sub)
        return out
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            return [f"{where}: expected {json.dumps(expected)}, got {json.dumps(actual)}"]
        return [
            d
            for i, (want, got) in enumerate(zip(expected, actual))
            for d in differences(want, got, f"{path}.{i}")
        ]
    numbers = (int, float)
    same = (
        (expected == actual and type(expected) is type(actual))
        or (
            isinstance(expected, numbers)
            and isinstance(actual, numbers)
            and not isinstance(expected, bool)
            and not isinstance(actual, bool)
            and expected == actual
        )
    )
    return [] if same else [f"{where}: expected {json.dumps(expected)}, got {json.dumps(actual)}"]


def lookup(data: Any, path: str) -> object:
    """A dotted path (``versions.0.version``) into objects and arrays."""
    current = data
    for part in path.split("."):
        if isinstance(current, dict) and part in current:
            current = current[part]
        elif isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            raise StepFailure(f"cannot save {path!r}: no {part!r} in {json.dumps(current)[:200]}")
    return current


# ----- The runner ----------------------------------------------------------------------------


async def run_scenario(
    scenario: dict[str, Any],
    clients: dict[str, AnyClient],
    statuses: Statuses,
    run: str,
) -> None:
    variables: dict[str, object] = {"run": run}
    for index, step in enumerate(scenario["steps"]):
        call = step.get("call")
        try:
            await run_step(step, clients, statuses, variables)
        except StepFailure as e:
            raise StepFailure(
                f"scenario {scenario['name']!r}, step {index} ({call} as "
                f"{step.get('as', 'operator')}): {e}"
            ) from None


async def run_step(
    step: dict[str, Any],
    clients: dict[str, AnyClient],
    statuses: Statuses,
    variables: dict[str, object],
) -> None:
    call = step["call"]
    if call not in CALLS:
        raise StepFailure(f"unknown call {call!r}")
    principal = step.get("as", "operator")
    if principal not in clients:
        raise StepFailure(f"unknown principal {principal!r}")
    client = clients[principal]
    raw_input = substitute(step.get("input", {}), variables)
    expect = step["expect"]
    output = substitute(expect["output"], variables) if "output" in expect else None
    inputs = Inputs(raw_input)

    statuses.seen.clear()
    result: object = None
    error: APIError | None = None
    try:
        result = await _resolve(CALLS[call](client, inputs))
    except APIError as e:
        error = e
    if inputs.unused():
        raise StepFailure(f"input fields the call does not take: {inputs.unused()}")

    if expect.get("approval_required"):
        if not isinstance(error, ApprovalRequiredError):
            got = repr(error) if error else f"success {_brief(result)}"
            raise StepFailure(f"expected approval_required (202), got {got}")
        approval = error.approval.to_json()
        _check_output(output, approval)
        _save(step, dict(approval, approval_id=error.approval_id), variables)
        return
    if "error" in expect:
        want_code, want_status = expect["error"], expect["status"]
        if error is None:
            raise StepFailure(
                f"expected error {want_code} ({want_status}), got success {_brief(result)}"
            )
        if error.code != want_code or error.status != want_status:
            raise StepFailure(
                f"expected error {want_code} ({want_status}), got {error.code.value} "
                f"({error.status}): {error.message}"
            )
        if not isinstance(error, error_class(error.code)):
            raise StepFailure(f"{error.code.value} raised as {type(error).__name__}")
        if "save" in step:
            raise StepFailure("save after an expected error names nothing to save")
        return
    if error is not None:
        raise StepFailure(f"expected status {expect.get('status')}, got {error!r}")
    want_status = expect.get("status")
    if want_status is not None:
        if not statuses.seen or statuses.seen[-1] != want_status:
            raise StepFailure(f"expected status {want_status}, got statuses {statuses.seen}")
    body = ferrohsm.to_json(result)
    _check_output(output, body)
    if "count" in expect:
        if call not in ITERATORS:
            raise StepFailure(f"count given for {call}, which is not a list call")
        count = await _count(ITERATORS[call](client, Inputs(raw_input)))
        if count != expect["count"]:
            raise StepFailure(f"expected count {expect['count']}, the iterator gave {count}")
    _save(step, body, variables)


def _brief(result: object) -> str:
    return json.dumps(ferrohsm.to_json(result))[:300]


def _check_output(expected: Any, actual: Any) -> None:
    if expected is None:
        return
    diffs = differences(expected, actual)
    if diffs:
        raise StepFailure("; ".join(diffs) + f" — response {json.dumps(actual)[:600]}")


def _save(step: dict[str, Any], body: Any, variables: dict[str, object]) -> None:
    for variable, path in step.get("save", {}).items():
        variables[variable] = lookup(body, path)


# ----- The tests -----------------------------------------------------------------------------


def _ids() -> list[str]:
    return [s["name"] for s in SCENARIOS]


def test_scenarios_file_is_there() -> None:
    assert SCENARIOS_FILE.exists(), f"{SCENARIOS_FILE} is missing"
    assert SCENARIOS, f"{SCENARIOS_FILE} has no scenarios"
    unknown = {s["call"] for sc in SCENARIOS for s in sc["steps"]} - set(CALLS)
    assert not unknown, f"calls the runner does not know: {sorted(unknown)}"


@pytest.mark.parametrize("scenario", SCENARIOS, ids=_ids())
def test_scenario_sync(scenario: dict[str, Any]) -> None:
    server = live_server_or_skip()
    statuses = Statuses()
    transport = RecordingTransport(
        httpx.HTTPTransport(verify=ferrohsm.tls_context(server.ca_cert)), statuses
    )
    clients: dict[str, AnyClient] = {
        name: Client(server.url, token, transport=transport)
        for name, token in server.tokens.items()
    }
    coroutine = run_scenario(scenario, clients, statuses, RUNS["sync"])
    try:
        # Every call of a sync client returns at once, so the coroutine finishes in one step.
        _drive(coroutine)
    finally:
        for client in clients.values():
            if isinstance(client, Client):
                client.close()


def _drive(coroutine: Awaitable[None]) -> None:
    """Runs a coroutine that never suspends (all its awaits are on finished values)."""
    assert inspect.iscoroutine(coroutine)
    try:
        coroutine.send(None)
    except StopIteration:
        return
    coroutine.close()
    raise AssertionError("the sync runner suspended: a call returned an awaitable")


@pytest.mark.parametrize("scenario", SCENARIOS, ids=_ids())
async def test_scenario_async(scenario: dict[str, Any]) -> None:
    server = live_server_or_skip()
    statuses = Statuses()
    transport = AsyncRecordingTransport(
        httpx.AsyncHTTPTransport(verify=ferrohsm.tls_context(server.ca_cert)), statuses
    )
    clients: dict[str, AnyClient] = {
        name: AsyncClient(server.url, token, transport=transport)
        for name, token in server.tokens.items()
    }
    try:
        await run_scenario(scenario, clients, statuses, RUNS["async"])
    finally:
        for client in clients.values():
            if isinstance(client, AsyncClient):
                await client.aclose()
