"""Fixtures of the dashboard journeys: the server xtask started, the principals' tokens, the
real CLI, and headless Debian Chromium driven by Playwright.

Every page any journey opens is watched for Content-Security-Policy violations (Chromium
reports each one on the console) and for uncaught script errors; a journey that saw one fails.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, expect, sync_playwright

SERVER = os.environ["FERROHSM_SERVER"].rstrip("/")
CA_CERT = os.environ["FERROHSM_CA_CERT"]
CLI = os.environ["FERROHSM_CLI"]
CHROMIUM = os.environ.get("FERROHSM_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = Path(os.environ.get("FERROHSM_SCREENSHOTS", "target/ui-screenshots"))
TOKENS: dict[str, str] = json.loads(Path(os.environ["FERROHSM_SCENARIO_TOKENS"]).read_text())

# What Chromium prints for a violation, whichever directive it names.
CSP_MESSAGE = re.compile(r"Content[ -]Security[ -]Policy", re.IGNORECASE)

# Chromium flags for a closed network and a throwaway profile (see the machine notes).
CHROMIUM_ARGS = [
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@dataclass
class Watch:
    """What the watched pages reported."""

    csp: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    visited: list[str] = field(default_factory=list)

    def attach(self, page: Page) -> None:
        page.on("console", lambda m: self._console(m.type, m.text))
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on("framenavigated", lambda f: self.visited.append(f.url) if f == page.main_frame else None)

    def _console(self, kind: str, text: str) -> None:
        if CSP_MESSAGE.search(text):
            self.csp.append(text)
        elif kind == "error" and "Failed to load resource" not in text:
            # Failed loads are the error statuses journeys provoke on purpose (401, 403, 404).
            self.errors.append(text)


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="session")
def browser(playwright: Playwright) -> Iterator[Browser]:
    browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
    yield browser
    browser.close()


@pytest.fixture
def watch() -> Iterator[Watch]:
    """Fails the journey if any page it opened broke the Content-Security-Policy."""
    w = Watch()
    yield w
    assert w.csp == [], f"Content-Security-Policy violations: {w.csp}"
    assert w.errors == [], f"script errors: {w.errors}"


class Browsers:
    """New browser contexts (one per person), every page watched."""

    def __init__(self, browser: Browser, watch: Watch) -> None:
        self.browser = browser
        self.watch = watch
        self.contexts: list[BrowserContext] = []

    def context(self, **options: object) -> BrowserContext:
        # The dev server's certificate comes from its own CA, which this throwaway profile does
        # not trust; the journeys test the dashboard, the TLS is tested by the server's suite.
        ctx = self.browser.new_context(ignore_https_errors=True, accept_downloads=True, **options)  # type: ignore[arg-type]
        ctx.on("page", self.watch.attach)
        self.contexts.append(ctx)
        return ctx

    def signed_in(self, who: str, **options: object) -> Page:
        """A new person's browser, signed in as `who` (pasting the token)."""
        page = self.context(**options).new_page()
        sign_in(page, TOKENS[who])
        return page

    def close(self) -> None:
        for ctx in self.contexts:
            ctx.close()


@pytest.fixture
def people(browser: Browser, watch: Watch) -> Iterator[Browsers]:
    b = Browsers(browser, watch)
    yield b
    b.close()


def sign_in(page: Page, token: str) -> None:
    page.goto(f"{SERVER}/ui/")
    expect(page).to_have_url(re.compile(r"/ui/sign-in$"))
    page.get_by_label("Bearer token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(r"/ui/keys$"))


def shot(page: Page, name: str) -> None:
    """Saves a full-page screenshot as target/ui-screenshots/NAME.png."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def cli(*args: str, token: str, request_id: str | None = None) -> dict:  # type: ignore[type-arg]
    """Runs the real `ferrohsm` CLI with JSON output; returns what it printed."""
    command = [CLI, "--server", SERVER, "--ca-cert", CA_CERT, "--output", "json"]
    if request_id:
        command += ["--request-id", request_id]
    env = {k: v for k, v in os.environ.items() if not k.startswith("FERROHSM_")}
    env["FERROHSM_TOKEN"] = token
    env["HOME"] = os.environ.get("HOME", "/tmp")
    out = subprocess.run(command + list(args), env=env, capture_output=True, text=True, check=False)
    assert out.returncode == 0, f"ferrohsm {' '.join(args)} failed: {out.stderr}"
    return json.loads(out.stdout) if out.stdout.strip() else {}


@pytest.fixture
def run_id() -> str:
    return uuid.uuid4().hex[:12]
