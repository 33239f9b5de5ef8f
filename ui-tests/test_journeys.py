"""The dashboard's journeys in headless Chromium, against a real dev server and the real CLI
(issue 14): an operator finds what the CLI created, dual control across three browsers, an
auditor follows a CI run's correlation id to a verified log, and the attacks a dashboard must
refuse. Every page is screenshotted into target/ui-screenshots/.
"""

from __future__ import annotations

import http.server
import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import SERVER, TOKENS, Browsers, cli, shot, sign_in
from playwright.sync_api import Page, expect


def row_of(page: Page, text: str):  # type: ignore[no-untyped-def]
    return page.get_by_role("row").filter(has_text=text)


def test_an_operator_signs_in_and_finds_the_key_the_cli_just_created(people: Browsers, run_id: str) -> None:
    name = f"payments-{run_id}"
    key = cli(
        "keys", "create", "--name", name, "--algorithm", "ec-p256",
        "--tag", "team=payments", "--tag", f"run={run_id}",
        token=TOKENS["operator"],
    )
    page = people.context().new_page()
    page.goto(f"{SERVER}/ui/keys")
    expect(page).to_have_url(re.compile(r"/ui/sign-in$"))
    shot(page, "sign-in")
    # Keyboard only: the skip link, then the token field, then the button.
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    expect(page.get_by_label("Bearer token")).to_be_focused()
    page.keyboard.insert_text(TOKENS["operator"])
    page.keyboard.press("Tab")
    expect(page.get_by_role("button", name="Sign in")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"/ui/keys$"))
    expect(page.locator("header .actor")).to_have_text("operator")

    page.get_by_label("Tag (key:value)").fill(f"run:{run_id}")
    page.get_by_label("State").select_option("active")
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(r"tag=run%3A" + run_id))
    row = row_of(page, name)
    expect(row).to_have_count(1)
    expect(row).to_contain_text("team:payments")
    expect(row).to_contain_text("ec-p256")
    expect(page.get_by_role("row")).to_have_count(2)  # the header and the one key
    shot(page, "keys")

    row.get_by_role("link", name=name).click()
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Key {name}")
    facts = page.locator("dl.facts")
    expect(facts).to_contain_text(key["id"])
    expect(facts).to_contain_text("team:payments")
    expect(facts).to_contain_text(f"run:{run_id}")
    expect(facts).to_contain_text("sign, verify")
    expect(page.get_by_role("button", name="Rotate")).to_be_visible()
    shot(page, "key-detail")

    with page.expect_download() as download:
        page.get_by_role("link", name="Download the public key (PEM)").click()
    pem = Path(download.value.path()).read_text()
    assert pem.startswith("-----BEGIN PUBLIC KEY-----"), pem

    page.get_by_role("button", name="Rotate").click()
    expect(page.locator(".notice")).to_contain_text("rotated")
    expect(page.locator("dl.facts")).to_contain_text("Current version2")


def test_dual_control_across_three_browsers(people: Browsers, run_id: str) -> None:
    name = f"retiring-{run_id}"
    key = cli(
        "keys", "create", "--name", name, "--algorithm", "aes-256-gcm",
        "--tag", "ui=dual", "--tag", f"run={run_id}",
        token=TOKENS["operator"],
    )

    requester = people.signed_in("operator")
    requester.goto(f"{SERVER}/ui/keys/{key['id']}")
    requester.get_by_label("Grace period in days").fill("2")
    requester.get_by_label("I understand that the key material is wiped").check()
    requester.get_by_role("button", name="Schedule destruction").click()
    expect(requester).to_have_url(re.compile(r"/ui/approvals/[0-9a-f-]{36}\?notice=approval-required$"))
    expect(requester.locator(".notice")).to_contain_text("needs approval")
    expect(requester.get_by_role("button", name="Approve")).to_have_count(0)  # not on one's own
    shot(requester, "approval-required")
    approval_url = requester.url.split("?")[0]

    for number, approver in enumerate(["approver1", "approver2"], start=1):
        page = people.signed_in(approver)
        page.get_by_role("link", name="Approvals").click()
        expect(page.get_by_role("link", name="Approvals")).to_have_attribute("aria-current", "page")
        row = row_of(page, key["id"])
        expect(row).to_contain_text(f"{number - 1} of 2")
        if number == 1:
            shot(page, "approvals")
        row.get_by_role("link", name="schedule_destruction").click()
        expect(page).to_have_url(approval_url)
        # What the approver reads before voting: the exact operation, key and period.
        parameters = page.locator("table.parameters")
        expect(row_of(page, "operation")).to_contain_text("schedule_destruction")
        expect(row_of(page, "key_id")).to_contain_text(key["id"])
        expect(row_of(page, "key_name")).to_contain_text(name)
        expect(parameters).to_contain_text("172800 (2 days; requested)")
        if number == 1:
            shot(page, "approval-detail")
        page.get_by_label("Comment").fill(f"checked by {approver}: retiring {name}")
        page.get_by_role("button", name="Approve").click()
        expect(page.locator(".notice")).to_contain_text("approval was recorded")
        expect(page.locator("table.votes")).to_contain_text(f"checked by {approver}")
        expect(page.locator("dl.facts")).to_contain_text(f"{number} of 2")

    requester.reload()
    expect(requester.locator("dl.facts")).to_contain_text("approved")
    requester.get_by_role("button", name="Run schedule_destruction").click()
    expect(requester).to_have_url(re.compile(rf"/ui/keys/{key['id']}\?notice=destruction-scheduled$"))
    expect(requester.locator("dl.facts")).to_contain_text("pending_destruction")
    shot(requester, "key-destruction-scheduled")
    described = cli("keys", "show", key["id"], token=TOKENS["auditor"])
    assert described["state"] == "pending_destruction", described


def test_an_auditor_follows_a_ci_runs_correlation_id_to_a_verified_log(people: Browsers, run_id: str) -> None:
    correlation = f"ci-run-{run_id}"
    key = cli(
        "keys", "create", "--name", f"ci-{run_id}", "--algorithm", "aes-256-gcm",
        token=TOKENS["operator"], request_id=correlation,
    )
    cli("encrypt", key["id"], "--data", "build artefact digest", token=TOKENS["operator"], request_id=correlation)

    page = people.signed_in("auditor")
    expect(page.get_by_role("button", name="Rotate")).to_have_count(0)
    page.get_by_role("link", name="Audit").click()
    page.get_by_label("Correlation id").fill(correlation)
    page.get_by_role("button", name="Search").click()
    records = page.locator("table.audit tbody tr")
    expect(records).to_have_count(2)
    expect(records.nth(0)).to_contain_text("create_key")
    expect(records.nth(1)).to_contain_text("encrypt")
    for i in range(2):
        expect(records.nth(i)).to_contain_text(correlation)
        expect(records.nth(i)).to_contain_text("operator")
        expect(records.nth(i)).to_contain_text("success")
    shot(page, "audit")

    page.get_by_role("button", name="Write a checkpoint now").click()
    expect(page.locator(".notice")).to_contain_text("checkpoint was written")
    expect(page.locator("section.checkpoint")).to_contain_text("Latest signed checkpoint")
    page.get_by_role("link", name="Verify the whole log").click()
    expect(page.locator(".verdict")).to_have_text("Verified: the log is intact.")
    expect(page.locator("dl.facts")).to_contain_text("Checkpoint signatures checked")
    shot(page, "audit-verify")

    page.go_back()
    with page.expect_download() as download:
        page.get_by_role("link", name="Export (NDJSON)").click()
    lines = Path(download.value.path()).read_text().splitlines()
    exported = [json.loads(line) for line in lines]
    assert sum(1 for r in exported if r.get("request_id") == correlation) == 2


def test_every_page_keeps_its_content_security_policy_and_reads_at_360_px_in_the_dark(
    people: Browsers, run_id: str
) -> None:
    key = cli("keys", "create", "--name", f"look-{run_id}", "--algorithm", "ed25519", token=TOKENS["admin"])
    for scheme, width in [("light", 1280), ("dark", 360)]:
        page = people.signed_in("admin", viewport={"width": width, "height": 800}, color_scheme=scheme)
        pages = {
            "keys": "/ui/keys",
            "key-detail": f"/ui/keys/{key['id']}",
            "approvals": "/ui/approvals?all=1",
            "audit": "/ui/audit",
            "audit-verify": "/ui/audit/verify",
            "health": "/ui/health",
            "not-found": "/ui/no-such-page",
        }
        for name, path in pages.items():
            response = page.goto(f"{SERVER}{path}")
            assert response is not None
            assert response.status == (404 if name == "not-found" else 200), (path, response.status)
            headers = response.headers
            assert "default-src 'self'" in headers["content-security-policy"]
            assert "frame-ancestors 'none'" in headers["content-security-policy"]
            assert headers["strict-transport-security"].startswith("max-age=")
            assert headers["x-content-type-options"] == "nosniff"
            assert headers["referrer-policy"] == "same-origin"
            # The stylesheet applied (not blocked): the header is laid out as a flex row.
            assert page.evaluate("getComputedStyle(document.querySelector('header.top')).display") == "flex"
            overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 0, f"{path} is {overflow}px wider than a {width}px screen"
            if scheme == "dark":
                background = page.evaluate("getComputedStyle(document.body).backgroundColor")
                assert background == "rgb(13, 17, 23)", background
                shot(page, f"{name}-360-dark")
            elif name in ("health", "not-found"):
                shot(page, name)
    page = people.signed_in("admin")
    page.goto(f"{SERVER}/ui/health")
    expect(page.locator("dl.facts").first).to_contain_text("Content-Security-Policy reports0")


@pytest.fixture
def other_site() -> Iterator[str]:
    """A page on another origin (plain HTTP on another loopback port) whose form posts to the
    dashboard, as a cross-site request forgery would."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            target = self.path.split("?target=", 1)[1]
            body = (
                "<!doctype html><title>elsewhere</title>"
                f'<form method="post" action="{SERVER}{target}">'
                '<input type="hidden" name="_csrf" value="guessed">'
                '<button type="submit">Win a prize</button></form>'
            ).encode()
            self.send_response(200)
            self.send_header("content-type", "text/html")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_a_cross_site_form_post_is_refused(people: Browsers, run_id: str, other_site: str) -> None:
    key = cli("keys", "create", "--name", f"target-{run_id}", "--algorithm", "aes-256-gcm", token=TOKENS["operator"])
    page = people.signed_in("operator")
    page.goto(f"{other_site}/?target=/ui/keys/{key['id']}/rotate")
    with page.expect_response(re.compile(r"/rotate$")) as answer:
        page.get_by_role("button", name="Win a prize").click()
    assert answer.value.status == 403
    expect(page.locator(".error")).to_contain_text("another site")
    shot(page, "cross-site-refused")
    assert cli("keys", "show", key["id"], token=TOKENS["operator"])["current_version"] == 1


def test_a_session_cookie_is_refused_after_sign_out(people: Browsers, run_id: str) -> None:
    key = cli("keys", "create", "--name", f"after-{run_id}", "--algorithm", "aes-256-gcm", token=TOKENS["operator"])
    page = people.signed_in("operator")
    context = page.context
    (session,) = [c for c in context.cookies() if c["name"] == "__Host-ferrohsm-session"]
    assert session["httpOnly"] and session["secure"] and session["sameSite"] == "Strict"
    page.goto(f"{SERVER}/ui/keys/{key['id']}")
    csrf = page.locator("input[name=_csrf]").first.get_attribute("value")
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/ui/sign-in$"))
    page.goto(f"{SERVER}/ui/keys")
    expect(page).to_have_url(re.compile(r"/ui/sign-in$"))

    # The old cookie, replayed from another browser, names nothing any more.
    thief = people.context()
    thief.add_cookies([{
        "name": session["name"], "value": session["value"], "url": SERVER,
        "secure": True, "httpOnly": True, "sameSite": "Strict",
    }])
    stolen = thief.new_page()
    stolen.goto(f"{SERVER}/ui/keys")
    expect(stolen).to_have_url(re.compile(r"/ui/sign-in$"))
    answer = thief.request.post(
        f"{SERVER}/ui/keys/{key['id']}/rotate",
        form={"_csrf": csrf or ""},
        headers={"origin": SERVER},
        max_redirects=0,
    )
    assert answer.status == 401, answer.status
    assert cli("keys", "show", key["id"], token=TOKENS["operator"])["current_version"] == 1


def test_a_bad_token_is_refused_at_sign_in(people: Browsers) -> None:
    page = people.context().new_page()
    page.goto(f"{SERVER}/ui/sign-in")
    page.get_by_label("Bearer token").fill("not-a-token")
    with page.expect_response(re.compile(r"/ui/sign-in$")) as answer:
        page.get_by_role("button", name="Sign in").click()
    assert answer.value.status == 401
    expect(page.locator(".error")).to_contain_text("not accepted")
    shot(page, "sign-in-refused")
    # A real token still works afterwards from the same browser.
    sign_in(page, TOKENS["auditor"])


def test_the_violation_watch_and_the_report_endpoint_do_see_a_violation(people: Browsers) -> None:
    """The zero-violation checks above would pass vacuously if Chromium's reports were not
    seen: inject an inline style (which the policy forbids) and watch both channels catch it.
    Runs last: it raises the server's report counter."""
    page = people.signed_in("admin")
    with page.expect_request(re.compile(r"/ui/csp-report$")):
        page.evaluate("""() => { const s = document.createElement('style');
                                  s.textContent = 'body { color: red }';
                                  document.head.appendChild(s); }""")
    assert any("style-src" in m for m in people.watch.csp), people.watch.csp
    people.watch.csp.clear()  # seen on purpose
    # The browser sent the report; the server counts it when it arrives.
    for _ in range(40):
        page.goto(f"{SERVER}/ui/health")
        counters = page.locator("dl.facts").first.text_content() or ""
        if "Content-Security-Policy reports0" not in counters:
            break
        page.wait_for_timeout(250)
    expect(page.locator("dl.facts").first).not_to_contain_text("Content-Security-Policy reports0")
