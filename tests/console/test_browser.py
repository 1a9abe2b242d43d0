"""The console in a real browser: Playwright driving Debian's Chromium (/usr/bin/chromium,
never a downloaded one) against pytest-django's live server.

Playwright's sync API keeps an asyncio loop marked as running in the thread that uses it,
which Django's ORM refuses to share; the one browser of the session therefore lives in a
thread of its own, and each test hands it a scenario that touches no database."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from audit.models import AuditEvent
from tests import provider_stub as docs
from tests.console.helpers import PASSWORD, dashboard_world, make_console_user
from tests.factories import rand
from tests.kms.helpers import openai_key

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
WIDTHS = {1280: 800, 390: 844}
# Collects every CSP violation a page reports, before any of its own code runs.
LISTENER = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__violations.push(e.violatedDirective + " " + (e.blockedURI || "inline"));
});
"""


class Browser:
    """The session's Chromium, driven from its own thread."""

    def __init__(self) -> None:
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chromium")
        self.playwright: Any = None
        self.chromium: Any = None
        self.run(lambda _: self._start())

    def _start(self) -> None:
        from playwright.sync_api import sync_playwright

        self.playwright = sync_playwright().start()
        self.chromium = self.playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)

    def run(self, scenario: Callable[[Any], Any], timeout: float = 120) -> Any:
        return self.pool.submit(scenario, self.chromium).result(timeout=timeout)

    def close(self) -> None:
        def stop(_: Any) -> None:
            if self.chromium is not None:
                self.chromium.close()
            if self.playwright is not None:
                self.playwright.stop()

        try:
            self.run(stop, timeout=60)
        finally:
            self.pool.shutdown(wait=True)


@pytest.fixture(autouse=True)
def _generous_sign_in_limit(settings: Any) -> None:
    """Every browser signs in from 127.0.0.1; the limits themselves are tested elsewhere."""
    settings.LOGIN_RATE_LIMIT = (1000, 60)


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(
            f"{CHROMIUM} is missing and could not be installed: scripts/test installs it as "
            "root with apt-get (apt-get install -y chromium)"
        )
    chromium = Browser()
    try:
        yield chromium
    finally:
        chromium.close()


class Watched:
    """A page whose CSP violations, console errors and uncaught errors are all kept."""

    def __init__(self, chromium: Any, base: str, width: int = 1280) -> None:
        self.context = chromium.new_context(viewport={"width": width, "height": WIDTHS[width]})
        self.page = self.context.new_page()
        self.base = base
        self.problems: list[str] = []
        self.page.add_init_script(LISTENER)
        self.refused: set[str] = set()  # pages expected to answer 4xx, whose load "fails"
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))

    def _console(self, message: Any) -> None:
        if message.type != "error":
            return
        expected = message.location.get("url") in self.refused
        if not (expected and message.text.startswith("Failed to load resource")):
            self.problems.append(f"console {message.type}: {message.text}")

    def open(self, path: str) -> Any:
        return self.page.goto(self.base + path)

    def check(self) -> None:
        """Collect the violations of the page shown now."""
        self.problems += [f"CSP: {v}" for v in self.page.evaluate("window.__violations || []")]

    def shoot(self, name: str) -> None:
        width = self.page.viewport_size["width"]
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SCREENSHOTS / f"{name}-{width}.png"), full_page=True)

    def sign_in_by_keyboard(self, username: str) -> None:
        self.open("/console/login/")
        self.check()
        self.page.keyboard.type(username)  # the username field has the focus
        self.page.keyboard.press("Tab")
        self.page.keyboard.type(PASSWORD)
        with self.page.expect_navigation():
            self.page.keyboard.press("Enter")

    def close(self) -> None:
        self.context.close()


def at_each_width(chromium: Any, base: str, steps: Callable[[Watched, dict], None]) -> dict:
    """Run `steps` in a fresh context at each width; what they saw, and each width's problems."""
    seen: dict[str, Any] = {}
    for width in WIDTHS:
        watched = Watched(chromium, base, width)
        try:
            steps(watched, seen)
            seen[f"problems-{width}"] = watched.problems
        finally:
            watched.close()
    return seen


def test_an_admin_signs_in_by_keyboard_and_reads_each_page(browser, live_server, committed_world):
    a, b = dashboard_world(committed_world)
    alice = make_console_user("security_admin", name="alice")

    def steps(watched: Watched, seen: dict[str, Any]) -> None:
        watched.open("/console/login/")
        watched.check()
        watched.shoot("login")
        watched.sign_in_by_keyboard(alice.username)
        page = watched.page
        seen.setdefault("after_sign_in", page.url)
        page.get_by_role("heading", name="Dashboard").wait_for()
        seen["invalid"] = page.get_by_role("region", name="Invalid keys").inner_text()
        with page.expect_response(lambda r: r.request.headers.get("hx-request") == "true"):
            page.get_by_role("link", name="Refresh").focus()
            page.keyboard.press("Enter")
        page.get_by_role("heading", name="Audit chains").wait_for()
        watched.check()
        watched.shoot("dashboard")
        page.get_by_role("link", name="Tenants").focus()
        with page.expect_navigation():
            page.keyboard.press("Enter")
        seen.setdefault("tenants", page.get_by_role("table").inner_text())
        created = f"{prefix}-{page.viewport_size['width']}"
        page.get_by_label("Slug").focus()
        page.keyboard.type(created)
        page.keyboard.press("Tab")
        page.keyboard.press("Tab")  # past the slug's help, to the name
        page.get_by_label("Name").focus()
        page.keyboard.type("Created in the console")
        with page.expect_navigation():
            page.keyboard.press("Enter")
        page.get_by_role("button", name=f"Suspend {created}: its tokens stop working").focus()
        with page.expect_navigation():
            page.keyboard.press("Enter")
        seen.setdefault("created", []).append(
            page.get_by_role("row").filter(has_text=created).inner_text()
        )
        watched.check()
        watched.shoot("tenants")

    prefix = rand("new")
    seen = browser.run(lambda chromium: at_each_width(chromium, live_server.url, steps))
    assert seen["after_sign_in"] == live_server.url + "/console/"
    assert "label-of-b" in seen["invalid"] and "revoked upstream" in seen["invalid"]
    assert a.slug in seen["tenants"] and b.slug in seen["tenants"]
    assert "Suspended" not in seen["tenants"] and "Active" in seen["tenants"]
    assert len(seen["created"]) == len(WIDTHS)
    assert all("Created in the console" in row and "Suspended" in row for row in seen["created"])
    for width in WIDTHS:
        assert seen[f"problems-{width}"] == [], seen[f"problems-{width}"]
    assert AuditEvent.objects.filter(action="auth.signed_in", actor_id=alice.username).count() == 2


def test_an_auditor_gets_403_on_the_tenants_page(browser, live_server, committed_world):
    dashboard_world(committed_world)
    carol = make_console_user("auditor", name="carol")

    def steps(watched: Watched, seen: dict[str, Any]) -> None:
        watched.sign_in_by_keyboard(carol.username)
        seen["nav"] = watched.page.get_by_role("navigation").inner_text()
        watched.refused.add(live_server.url + "/console/tenants/")
        response = watched.open("/console/tenants/")
        seen["status"] = response.status
        seen["heading"] = watched.page.get_by_role("heading", level=1).inner_text()
        watched.check()
        watched.shoot("forbidden")

    seen = browser.run(lambda chromium: at_each_width(chromium, live_server.url, steps))
    assert seen["status"] == 403 and seen["heading"] == "Not allowed"
    assert "Tenants" not in seen["nav"]
    for width in WIDTHS:
        assert seen[f"problems-{width}"] == [], seen[f"problems-{width}"]
    assert AuditEvent.objects.filter(action="access.denied", actor_id=carol.username).exists()


def test_the_violation_listener_does_report_an_inline_style(browser, live_server, committed_db):
    """The listener the other tests rely on is not blind: an inline style is reported."""

    def scenario(chromium: Any) -> list[str]:
        watched = Watched(chromium, live_server.url)
        try:
            watched.open("/console/login/")
            watched.page.evaluate(
                "document.body.insertAdjacentHTML('beforeend', '<p style=\"color: red\">x</p>')"
            )
            watched.page.wait_for_timeout(200)
            watched.check()
            return watched.problems
        finally:
            watched.close()

    problems = browser.run(scenario)
    assert any(p.startswith("CSP: style-src") for p in problems), problems


def test_an_admin_onboards_a_key_sees_a_refusal_explained_rotates_and_revokes(
    browser, live_server, committed_world, provider_stub
):
    alice = make_console_user("security_admin", name="alice")
    tenant = committed_world.actors.tenant_a.slug
    good, refused, newer = openai_key(), openai_key(), openai_key()

    def onboard(page: Any, label: str, secret: str) -> None:
        page.get_by_label("Tenant", exact=True).last.select_option(tenant)
        page.get_by_label("Provider", exact=True).select_option("openai")
        page.get_by_label("Label", exact=True).fill(label)
        page.get_by_label("Secret", exact=True).fill(secret)
        with page.expect_navigation():
            page.get_by_role("button", name="Onboard key").click()

    def steps(watched: Watched, seen: dict[str, Any]) -> None:
        page = watched.page
        watched.sign_in_by_keyboard(alice.username)
        watched.open("/console/keys/")
        provider_stub.answer(401, docs.OPENAI_INVALID)
        watched.refused.add(live_server.url + "/console/keys/")
        onboard(page, "refused-key", refused)
        seen["refusal"] = page.get_by_role("alert").first.inner_text()
        seen["refused_echo"] = refused in page.content()
        watched.check()
        watched.shoot("key-refused")
        provider_stub.answer(200)
        onboard(page, "browser-key", good)
        page.get_by_role("heading", name="Validation history").wait_for()
        watched.check()
        watched.shoot("key")
        page.get_by_label("New secret", exact=True).fill(newer)
        page.get_by_label("Grace period for the old secret").select_option("86400")
        with page.expect_navigation():
            page.get_by_role("button", name="Rotate key").click()
        seen["rotated"] = page.get_by_role("status").inner_text()
        seen["versions"] = page.get_by_role("region", name="Versions").inner_text()
        page.get_by_label("Type the key's label to confirm").fill("browser-key")
        with page.expect_navigation():
            page.get_by_role("button", name="Revoke key").click()
        seen["revoked"] = page.get_by_role("heading", level=1).inner_text()
        watched.open(f"/console/keys/?tenant={tenant}")
        watched.check()
        watched.shoot("keys")
        seen[f"problems-{page.viewport_size['width']}"] = watched.problems

    def once(chromium: Any) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        watched = Watched(chromium, live_server.url)
        try:
            steps(watched, seen)
        finally:
            watched.close()
        return seen

    seen = browser.run(once)
    assert "Incorrect API key provided" in seen["refusal"]
    assert "The provider does not know this key" in seen["refusal"]
    assert not seen["refused_echo"]
    assert "rotated" in seen["rotated"]
    assert "Previous" in seen["versions"] and "Current" in seen["versions"]
    assert "Revoked" in seen["revoked"]
    assert seen["problems-1280"] == [], seen["problems-1280"]
    assert AuditEvent.objects.filter(action="key.revoked", tenant=tenant).count() == 1


def test_the_api_document_renders_under_its_policy(browser, live_server, committed_db):
    """Swagger UI at /api/v1/docs/ runs with no inline script: its start-up script is a
    file of its own, and the policy refuses anything else."""

    def scenario(chromium: Any) -> dict[str, Any]:
        watched = Watched(chromium, live_server.url)
        try:
            watched.open("/api/v1/docs/")
            watched.page.get_by_text("/api/v1/tenants", exact=True).first.wait_for()
            watched.check()
            return {"problems": watched.problems}
        finally:
            watched.close()

    seen = browser.run(scenario)
    assert seen["problems"] == [], seen["problems"]
