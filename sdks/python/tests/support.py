"""What the integration tests and the scenario runner share: the server they run against."""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parent.parent
SCENARIOS_FILE = PACKAGE_DIR.parent / "testdata" / "scenarios.json"
PRINCIPALS = ("admin", "operator", "auditor", "service", "approver1", "approver2")


@dataclass(frozen=True)
class LiveServer:
    """A running server: its URL, its CA file and a token per principal."""

    url: str
    ca_cert: str
    tokens: dict[str, str]

    def token(self, principal: str) -> str:
        try:
            return self.tokens[principal]
        except KeyError:
            raise AssertionError(
                f"FERROHSM_SCENARIO_TOKENS has no token for principal {principal!r}"
            ) from None


def live_server_or_skip() -> LiveServer:
    """The server named by FERROHSM_SERVER, FERROHSM_CA_CERT and FERROHSM_SCENARIO_TOKENS;
    skips the test when any is unset."""
    missing = [
        name
        for name in ("FERROHSM_SERVER", "FERROHSM_CA_CERT", "FERROHSM_SCENARIO_TOKENS")
        if not os.environ.get(name)
    ]
    if missing:
        pytest.skip(
            f"needs a running dev server: set {', '.join(missing)} "
            "(see sdks/testdata/README.md)"
        )
    path = Path(os.environ["FERROHSM_SCENARIO_TOKENS"])
    tokens = json.loads(path.read_text())
    if not isinstance(tokens, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in tokens.items()
    ):
        raise AssertionError(f"{path}: expected a JSON object of principal -> token")
    absent = [p for p in PRINCIPALS if p not in tokens]
    if absent:
        raise AssertionError(f"{path}: no token for {', '.join(absent)}")
    return LiveServer(os.environ["FERROHSM_SERVER"], os.environ["FERROHSM_CA_CERT"], tokens)


def run_id(flavour: str) -> str:
    """A value unique to one run: lowercase letters and digits, starting with a letter."""
    return f"py{flavour}{secrets.token_hex(4)}"
