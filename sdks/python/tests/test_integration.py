"""Integration tests against a running dev server (sdks/testdata/policy.toml, the principals
of sdks/testdata/README.md). Skipped unless FERROHSM_SERVER, FERROHSM_CA_CERT and
FERROHSM_SCENARIO_TOKENS are set. Each test tags and names what it creates with a value unique
to it, so runs can overlap on one server."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import itertools
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import ferrohsm
from conftest import AnyClient, Flavour
from ferrohsm import (
    AsyncClient,
    AuditFilter,
    Client,
    Encrypted,
    NotFoundError,
    UnauthenticatedError,
)
from support import PACKAGE_DIR, LiveServer, live_server_or_skip, run_id

# The longest anything here waits (an approval to appear and be approved, an example to run):
# a bound against a hang on a loaded machine whose server also serves other runners and a
# fuzzer, not a performance expectation (the Go tests give a live test two minutes).
PATIENCE = 120.0


@pytest.fixture
def server() -> LiveServer:
    return live_server_or_skip()


@pytest.fixture
def run() -> str:
    return run_id("i")


def connect(flavour: Flavour, server: LiveServer, principal: str) -> AnyClient:
    token = server.token(principal)
    if flavour.name == "sync":
        return Client(server.url, token, ca_cert=server.ca_cert)
    return AsyncClient(server.url, token, ca_cert=server.ca_cert)


async def test_a_round_trip_is_audited_under_its_request_id(
    flavour: Flavour, server: LiveServer, run: str
) -> None:
    operator = connect(flavour, server, "operator")
    auditor = connect(flavour, server, "auditor")
    key = await flavour.run(
        operator.create_key(ferrohsm.Algorithm.AES_256_GCM, name=f"{run}-data", tags={"team": run})
    )
    assert key.state is ferrohsm.KeyState.ACTIVE and key.created_by == "operator"
    sealed = await flavour.run(
        operator.encrypt(key.name or key.id, b"\x00\xffdata", aad=b"ctx", request_id=f"{run}-enc")
    )
    opened = await flavour.run(operator.decrypt(key.id, sealed.ciphertext, aad=b"ctx"))
    assert opened.plaintext == b"\x00\xffdata" and opened.key_version == 1

    records = await flavour.collect(
        auditor.iter_audit_records(where=AuditFilter(request_id=f"{run}-enc"))
    )
    assert [(r.action, r.key_id, r.actor, r.outcome.value) for r in records] == [
        ("encrypt", key.id, "operator", "success")
    ]
    with pytest.raises(NotFoundError) as caught:
        await flavour.run(operator.describe_key(f"{run}-missing", request_id=f"{run}-404"))
    assert caught.value.request_id == f"{run}-404"
    await flavour.close(operator)
    await flavour.close(auditor)


async def test_iterators_follow_every_page(flavour: Flavour, server: LiveServer, run: str) -> None:
    operator = connect(flavour, server, "operator")
    auditor = connect(flavour, server, "auditor")
    created = []
    for i in range(5):
        info = await flavour.run(
            operator.create_key("ec-p256", name=f"{run}-k{i}", tags={"team": run})
        )
        created.append(info.id)
    listed = await flavour.collect(auditor.iter_keys(page_size=2, tags={"team": run}))
    assert [k.id for k in listed] == created
    first = await flavour.run(auditor.list_keys(limit=2, tags={"team": run}))
    assert len(first.keys) == 2 and first.next_cursor is not None
    records = await flavour.collect(
        auditor.iter_audit_records(
            page_size=2,
            where=AuditFilter(action="create_key", actor="operator", key_id=created[3]),
        )
    )
    assert [r.key_id for r in records] == [created[3]]
    await flavour.close(operator)
    await flavour.close(auditor)


async def _dual_key(flavour: Flavour, operator: AnyClient, run: str) -> str:
    key = await flavour.run(
        operator.create_key(
            "aes-256-gcm", name=f"{run}-dual", tags={"scenario": "dual", "team": run}
        )
    )
    return key.id


async def test_the_approval_helper_with_a_callback(
    flavour: Flavour, server: LiveServer, run: str
) -> None:
    operator = connect(flavour, server, "operator")
    approvers = [connect(flavour, server, p) for p in ("approver1", "approver2")]
    key_id = await _dual_key(flavour, operator, run)
    seen: list[ferrohsm.ApprovalInfo] = []

    async def approve_all(info: ferrohsm.ApprovalInfo) -> None:
        seen.append(info)
        for approver in approvers:
            await flavour.run(approver.approve(info.id, comment=f"{run} checked"))

    def approve_all_sync(info: ferrohsm.ApprovalInfo) -> None:
        seen.append(info)
        for approver in approvers:
            assert isinstance(approver, Client)
            approver.approve(info.id, comment=f"{run} checked")

    result: Encrypted = await flavour.with_approval(
        operator,
        lambda c, aid: c.encrypt(key_id, b"payroll", approval_id=aid),
        on_approval_required=approve_all if flavour.name == "async" else approve_all_sync,
    )
    assert result.key_id == key_id
    assert len(seen) == 1
    assert seen[0].operation == "encrypt" and seen[0].key_id == key_id
    assert seen[0].quorum == 2 and seen[0].policy == "scenario-dual"
    executed = await flavour.run(operator.describe_approval(seen[0].id))
    assert executed.state is ferrohsm.ApprovalState.EXECUTED
    assert sorted(v.actor for v in executed.votes) == ["approver1", "approver2"]
    for client in (operator, *approvers):
        await flavour.close(client)


def _pending_for(approvals: list[ferrohsm.ApprovalInfo], key_id: str) -> str | None:
    for approval in approvals:
        if approval.key_id == key_id and approval.state is ferrohsm.ApprovalState.PENDING:
            return approval.id
    return None


async def test_the_approval_helper_polls_while_others_approve(
    flavour: Flavour, server: LiveServer, run: str
) -> None:
    operator = connect(flavour, server, "operator")
    key_id = await _dual_key(flavour, operator, run)
    deadline = time.monotonic() + PATIENCE

    # The approvers find the approval in the list (newest first; the largest page, so that
    # other runs' approvals cannot push it off the page).
    if isinstance(operator, AsyncClient):
        async_operator = operator

        async def approve_when_asked() -> None:
            ca = server.ca_cert
            async with (
                AsyncClient(server.url, server.token("approver1"), ca_cert=ca) as a1,
                AsyncClient(server.url, server.token("approver2"), ca_cert=ca) as a2,
            ):
                while True:
                    listed = [a async for a in a1.iter_approvals(page_size=1000)]
                    found = _pending_for(listed, key_id)
                    if found is not None:
                        break
                    assert time.monotonic() < deadline, "no approval appeared"
                    await asyncio.sleep(0.1)
                await a1.approve(found)
                await a2.approve(found)

        async def request(aid: str | None) -> Encrypted:
            return await async_operator.encrypt(key_id, b"payroll", approval_id=aid)

        # A failing approver cancels the helper at once (and the other way round) instead of
        # leaving it to poll until its timeout.
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(approve_when_asked())
            helping = tasks.create_task(
                async_operator.with_approval(request, poll_interval=0.2, timeout=PATIENCE)
            )
        result = helping.result()
    else:
        sync_operator = operator
        failures: list[BaseException] = []
        helper_done = threading.Event()

        def approve_when_asked_sync() -> None:
            try:
                ca = server.ca_cert
                with (
                    Client(server.url, server.token("approver1"), ca_cert=ca) as a1,
                    Client(server.url, server.token("approver2"), ca_cert=ca) as a2,
                ):
                    while (
                        found := _pending_for(list(a1.iter_approvals(page_size=1000)), key_id)
                    ) is None:
                        assert time.monotonic() < deadline, "no approval appeared"
                        if helper_done.wait(0.1):
                            return  # the helper failed before asking: nothing to approve
                    a1.approve(found)
                    a2.approve(found)
            except BaseException as e:  # reported by the test thread
                failures.append(e)

        thread = threading.Thread(target=approve_when_asked_sync, daemon=True)
        thread.start()
        try:
            result = sync_operator.with_approval(
                lambda aid: sync_operator.encrypt(key_id, b"payroll", approval_id=aid),
                poll_interval=0.2,
                timeout=PATIENCE,
            )
        finally:
            helper_done.set()
            thread.join()
            # The approver's failure, not the helper's timeout it caused, is the finding.
            assert not failures, failures
    assert result.key_id == key_id
    await flavour.close(operator)


async def test_a_token_callable_is_asked_per_request(
    flavour: Flavour, server: LiveServer, run: str
) -> None:
    admin = connect(flavour, server, "admin")
    minted = await flavour.run(admin.issue_token(f"{run}-rotated", ["operator"], ttl_seconds=600))
    # The operator's token for the first request, the minted one for every later request
    # (a retried read asks again; a finite list would run dry).
    tokens = itertools.chain([server.token("operator")], itertools.repeat(minted.token))
    url, ca = server.url, server.ca_cert
    rotating: AnyClient = (
        Client(url, lambda: next(tokens), ca_cert=ca)
        if flavour.name == "sync"
        else AsyncClient(url, lambda: next(tokens), ca_cert=ca)
    )
    first = await flavour.run(rotating.create_key("aes-256-gcm", tags={"team": run}))
    second = await flavour.run(rotating.create_key("aes-256-gcm", tags={"team": run}))
    assert (first.created_by, second.created_by) == ("operator", f"{run}-rotated")
    await flavour.run(admin.revoke_token(jti=minted.jti, reason="test over"))
    with pytest.raises(UnauthenticatedError) as caught:
        await flavour.run(rotating.describe_key(first.id))
    assert (caught.value.status, caught.value.code) == (401, ferrohsm.ErrorCode.UNAUTHENTICATED)
    await flavour.close(rotating)
    await flavour.close(admin)


async def test_only_the_servers_ca_is_trusted(flavour: Flavour, server: LiveServer) -> None:
    token = server.token("auditor")
    client: AnyClient = (
        Client(server.url, token) if flavour.name == "sync" else AsyncClient(server.url, token)
    )
    with pytest.raises(ferrohsm.TransportError, match="CERTIFICATE_VERIFY_FAILED"):
        await flavour.run(client.health())
    await flavour.close(client)


async def test_operations_and_audit_reads(flavour: Flavour, server: LiveServer) -> None:
    auditor = connect(flavour, server, "auditor")
    health = await flavour.run(auditor.health())
    assert health.status == "ok" and health.store.status == "ok"
    jwks = await flavour.run(auditor.jwks())
    assert jwks.keys and jwks.keys[0].kty == "OKP"
    verification = await flavour.run(auditor.audit_verify())
    assert verification.valid and verification.records > 0
    checkpoint = await flavour.run(auditor.audit_checkpoint())
    assert checkpoint.public_key_pem.startswith("-----BEGIN PUBLIC KEY-----")
    out = io.BytesIO()
    written = await flavour.run(auditor.export_audit(out))
    lines = out.getvalue().splitlines()
    assert written == len(out.getvalue()) and lines
    assert all(isinstance(json.loads(line), dict) for line in lines)
    await flavour.close(auditor)


def _example(server: LiveServer, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "FERROHSM_SERVER": server.url,
        "FERROHSM_CA_CERT": server.ca_cert,
        "FERROHSM_TOKEN": server.token("operator"),
        "PYTHONPATH": str(PACKAGE_DIR / "src"),
        # The example imports ferrohsm from the source tree: no __pycache__ there.
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    return subprocess.run(
        [sys.executable, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=PATIENCE,
        check=False,
    )


def test_the_ci_signing_example(server: LiveServer, run: str, tmp_path: Path) -> None:
    artefact = os.path.join(tmp_path, "app.tar.gz")
    with open(artefact, "wb") as f:
        f.write(b"release " + run.encode())
    script = str(PACKAGE_DIR / "examples" / "ci_signing.py")
    for _ in range(2):  # creates the key, then reuses it
        done = _example(server, script, artefact, "--key", f"{run}-release")
        assert done.returncode == 0, done.stderr
        assert "verified locally" in done.stdout
    with Client(server.url, server.token("auditor"), ca_cert=server.ca_cert) as auditor:
        key = auditor.describe_key(f"{run}-release")
        assert key.algorithm is ferrohsm.Algorithm.EC_P256 and key.current_version == 1
        signature = open(artefact + ".sig", "rb").read()
        with open(artefact, "rb") as f:
            digest = hashlib.sha256(f.read()).digest()
        assert auditor.verify(key.id, signature, digest=digest).valid


def test_the_envelope_example(server: LiveServer, run: str, tmp_path: Path) -> None:
    data = os.path.join(tmp_path, "payroll.csv")
    with open(data, "wb") as f:
        f.write(b"name,amount\nada,100\n")
    script = str(PACKAGE_DIR / "examples" / "envelope.py")
    done = _example(server, script, data, "--key", f"{run}-kek")
    assert done.returncode == 0, done.stderr
    envelope = json.loads(done.stdout)
    assert set(envelope) == {"key_id", "wrapped_key", "nonce", "ciphertext", "context"}
    assert envelope["wrapped_key"].startswith("fhsm:v1:")
    assert b"ada" not in base64.b64decode(envelope["ciphertext"])

