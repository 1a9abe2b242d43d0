"""The console in a real browser: Playwright driving Debian's Chromium (/usr/bin/chromium,
never a downloaded one) against pytest-django's live server.

Playwright's sync API keeps an asyncio loop marked as running in the thread that uses it,
which Django's ORM refuses to share; the one browser of the session therefore lives in a
thread of its own, and each test hands it a scenario that touches no database."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from audit.models import AuditEvent
from audit.sequencer import integrate_all
from tests import provider_stub as docs
from tests.console.helpers import PASSWORD, dashboard_world, make_console_user
from tests.console.oidc import PASSWORD as OIDC_PASSWORD
from tests.factories import rand
from tests.kms.helpers import openai_key

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
# The README's screenshots are refreshed with KEYWARD_TEST_SCREENSHOTS=docs/screenshots;
# otherwise they are taken into the run's own folder, leaving the checkout as it was.
SCREENSHOTS = Path(
    os.environ.get("KEYWARD_TEST_SCREENSHOTS")
    or Path(os.environ.get("KEYWARD_TEST_TMP") or "/tmp") / "screenshots"
).resolve()
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
        if message.type != "error" or not message.location.get("url", "").startswith(self.base):
            return  # another site's page (the OpenID provider's) is not under test
        expected = message.location.get("url") in self.refused
        if not (expected and message.text.startswith("Failed to load resource")):
            where = message.location.get("url", "")
            self.problems.append(f"console {message.type}: {message.text} ({where})")

    def open(self, path: str) -> Any:
        return self.page.goto(self.base + path)

    def check(self) -> None:
        """Collect the violations of the page shown now."""
        self.problems += [f"CSP: {v}" for v in self.page.evaluate("window.__violations || []")]

    def width(self) -> int:
        """How wide the page's content is: more than the viewport scrolls sideways."""
        return int(self.page.evaluate("document.documentElement.scrollWidth"))

    def shoot(self, name: str) -> None:
        """Save the page shown now, its CSP violations collected first; a secret shown
        once is masked (the repository holds no credential, even a test's)."""
        self.check()
        width = self.page.viewport_size["width"]
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = str(SCREENSHOTS / f"{name}-{width}.png")
        secrets = self.page.locator("#client-secret")
        self.page.screenshot(path=path, full_page=True, mask=[secrets])

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


def browse(
    browser: Browser, base: str, steps: Callable[[Watched], None], width: int = 1280
) -> list[str]:
    """Run `steps` in a fresh browser context; the problems it saw."""

    def scenario(chromium: Any) -> list[str]:
        watched = Watched(chromium, base, width)
        try:
            steps(watched)
            return watched.problems
        finally:
            watched.close()

    return list(browser.run(scenario, timeout=240))


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


def _onboard(page: Any, tenant: str, label: str, secret: str) -> None:
    page.get_by_label("Tenant", exact=True).last.select_option(tenant)
    page.get_by_label("Provider", exact=True).select_option("openai")
    page.get_by_label("Label", exact=True).fill(label)
    page.get_by_label("Secret", exact=True).fill(secret)
    with page.expect_navigation():
        page.get_by_role("button", name="Onboard key").click()


def _admin_walk(watched: Watched, seen: dict[str, Any], alice: str, stub: Any) -> None:
    """Sign in, create a tenant, see a refused key explained, onboard a key, create a
    principal (its secret shown once) and a grant, then rotate and revoke the key."""
    page, tenant = watched.page, seen["tenant"]
    watched.sign_in_by_keyboard(alice)
    watched.open("/console/tenants/")
    page.get_by_label("Slug").fill(tenant)
    page.get_by_label("Name").fill("Walkthrough Ltd")
    with page.expect_navigation():
        page.get_by_role("button", name="Create tenant").click()
    watched.open(f"/console/keys/?tenant={tenant}")
    stub.answer(401, docs.OPENAI_INVALID)
    watched.refused.add(watched.base + "/console/keys/")
    _onboard(page, tenant, "refused-key", seen["refused"])
    seen["refusal"] = page.get_by_role("alert").first.inner_text()
    seen["refused_echo"] = seen["refused"] in page.content()
    watched.shoot("key-refused")
    stub.answer(200)
    _onboard(page, tenant, "walk-key", seen["good"])
    seen["key_url"] = page.url.split("?")[0]
    watched.shoot("key")
    watched.open("/console/principals/")
    page.get_by_label("Name").fill(seen["principal"])
    with page.expect_navigation():
        page.get_by_role("button", name="Create principal").click()
    seen["secret"] = page.get_by_label(f"Client secret of {seen['principal']}").input_value()
    seen["copy_button"] = page.get_by_role("button", name="Copy").is_visible()
    watched.shoot("principal-secret")
    watched.open("/console/principals/")
    seen["secret_again"] = seen["secret"] in page.content()
    watched.shoot("principals")
    watched.open("/console/grants/")
    page.get_by_label("Principal", exact=True).select_option(label=seen["principal"])
    page.get_by_label("Tenant", exact=True).select_option(tenant)
    page.get_by_label("Provider", exact=True).select_option("openai")
    page.get_by_label("release", exact=False).first.check()
    page.get_by_label("Longest token life (seconds)").fill("600")
    with page.expect_navigation():
        page.get_by_role("button", name="Create grant").click()
    seen["grants"] = page.get_by_role("table").inner_text()
    watched.shoot("grants")
    watched.open(seen["key_url"].removeprefix(watched.base))
    page.get_by_label("New secret", exact=True).fill(seen["newer"])
    page.get_by_label("Grace period for the old secret").select_option("86400")
    with page.expect_navigation():
        page.get_by_role("button", name="Rotate key").click()
    seen["rotated"] = page.get_by_role("status").inner_text()
    seen["versions"] = page.get_by_role("region", name="Versions").inner_text()
    page.get_by_label("Type the key's label to confirm").fill("walk-key")
    with page.expect_navigation():
        page.get_by_role("button", name="Revoke key").click()
    seen["revoked"] = page.get_by_role("heading", level=1).inner_text()
    watched.open(f"/console/keys/?tenant={tenant}")
    watched.shoot("keys")
    watched.open("/console/")
    watched.shoot("dashboard")
    watched.open("/console/tenants/")
    watched.shoot("tenants")


def _auditor_walk(watched: Watched, seen: dict[str, Any], provider: Any) -> None:
    """Sign in through the OpenID provider, filter the log, open an event, export the
    tenant's events and verify the chains."""
    page, tenant = watched.page, seen["tenant"]
    watched.open("/console/login/")
    watched.shoot("login")
    page.get_by_role("link", name="Sign in with single sign-on").click()
    page.locator("#username").fill("dora")
    page.locator("#password").fill(OIDC_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name="Dashboard").wait_for()
    seen["who"] = page.locator(".who").inner_text()
    watched.open("/console/audit/")
    page.get_by_label("Tenant", exact=True).select_option(tenant)
    page.get_by_label("Action", exact=True).fill("key.revoked")
    with page.expect_response(lambda r: r.request.headers.get("hx-request") == "true"):
        page.get_by_role("button", name="Search").click()
    results = page.locator("#audit-results")
    results.get_by_text("key.revoked").first.wait_for()
    seen["filtered"] = results.inner_text()
    seen["filtered_url"] = page.url
    watched.shoot("audit")
    with page.expect_navigation():
        results.get_by_role("link", name="Details of key.revoked").first.click()
    seen["event"] = page.locator("main").inner_text()
    watched.shoot("audit-event")
    watched.open("/console/audit/export/")
    page.get_by_label("Tenant", exact=True).select_option(tenant)
    with page.expect_download() as download:
        page.get_by_role("button", name="Download export").click()
    seen["export"] = Path(download.value.path()).read_text()
    watched.shoot("audit-export")
    watched.open("/console/audit/verify/")
    with page.expect_navigation():
        page.get_by_role("button", name="Verify now").click()
    seen["verified"] = page.get_by_role("status").first.inner_text()
    watched.shoot("audit-verify")
    watched.refused.add(watched.base + "/console/tenants/")
    seen["tenants_status"] = watched.open("/console/tenants/").status
    watched.shoot("forbidden")


def test_walkthrough_admin_onboards_grants_rotates_revokes_and_an_sso_auditor_verifies(
    browser, live_server, committed_world, provider_stub, oidc_console
):
    alice = make_console_user("security_admin", name="alice")
    oidc_console.user("dora", groups=["keyward-auditors"], tenants=["*"])
    seen: dict[str, Any] = {
        "tenant": rand("walk"),
        "principal": rand("walk-svc"),
        "refused": openai_key(),
        "good": openai_key(),
        "newer": openai_key(),
    }

    base = live_server.url
    admin_problems = browse(
        browser, base, lambda w: _admin_walk(w, seen, alice.username, provider_stub)
    )
    integrate_all()  # the sequencer's run (every second in service)
    auditor_problems = browse(browser, base, lambda w: _auditor_walk(w, seen, oidc_console))

    assert admin_problems == [] and auditor_problems == [], (admin_problems, auditor_problems)
    assert "Incorrect API key provided" in seen["refusal"]
    assert "The provider does not know this key" in seen["refusal"]
    assert not seen["refused_echo"]
    assert seen["secret"].startswith("kwp_") and seen["copy_button"] and not seen["secret_again"]
    assert seen["principal"] in seen["grants"] and seen["tenant"] in seen["grants"]
    assert "rotated" in seen["rotated"]
    assert "Previous" in seen["versions"] and "Current" in seen["versions"]
    assert "Revoked" in seen["revoked"]
    assert "oidc:" in seen["who"] and "Auditor" in seen["who"]
    assert "key.revoked" in seen["filtered"] and "action=key.revoked" in seen["filtered_url"]
    assert "Hash" in seen["event"] or "hash" in seen["event"]
    lines = [json.loads(line) for line in seen["export"].splitlines() if line.strip()]
    assert any(line.get("action") == "key.revoked" for line in lines)
    assert "manifest" in json.dumps(lines[-1])
    assert "Intact" in seen["verified"]
    assert seen["tenants_status"] == 403
    revoked = AuditEvent.objects.get(action="key.revoked", tenant=seen["tenant"])
    assert revoked.actor_id == alice.username
    assert AuditEvent.objects.filter(action="auth.signed_in", details__via="oidc").exists()
    assert AuditEvent.objects.filter(action="audit.exported").exists()


NARROW = 390


def _admin_tour(watched: Watched, seen: dict[str, Any], alice: str, key: str) -> None:
    page = watched.page
    watched.open("/console/login/")
    watched.check()
    watched.shoot("login")
    watched.sign_in_by_keyboard(alice)
    for path, name in (("/console/", "dashboard"), ("/console/tenants/", "tenants")):
        watched.open(path)
        watched.shoot(name)
        seen["widths"][name] = watched.width()
    watched.open(f"/console/keys/?tenant={seen['tenant']}")
    watched.refused.add(watched.base + "/console/keys/")
    _onboard(page, seen["tenant"], "refused-key", openai_key())
    watched.shoot("key-refused")
    seen["widths"]["key-refused"] = watched.width()
    for path, name in ((f"/console/keys/?tenant={seen['tenant']}", "keys"), (key, "key")):
        watched.open(path)
        watched.shoot(name)
        seen["widths"][name] = watched.width()
    watched.open("/console/principals/")
    page.get_by_label("Name").fill(rand("narrow-svc"))
    with page.expect_navigation():
        page.get_by_role("button", name="Create principal").click()
    watched.shoot("principal-secret")
    seen["widths"]["principal-secret"] = watched.width()
    for path, name in (("/console/principals/", "principals"), ("/console/grants/", "grants")):
        watched.open(path)
        watched.shoot(name)
        seen["widths"][name] = watched.width()


def _auditor_tour(watched: Watched, seen: dict[str, Any], carol: str, event: str) -> None:
    watched.sign_in_by_keyboard(carol)
    pages = (
        ("/console/audit/", "audit"),
        (f"/console/audit/events/{event}/", "audit-event"),
        ("/console/audit/export/", "audit-export"),
        ("/console/audit/verify/", "audit-verify"),
    )
    for path, name in pages:
        watched.open(path)
        watched.shoot(name)
        seen["widths"][name] = watched.width()
    watched.refused.add(watched.base + "/console/tenants/")
    watched.open("/console/tenants/")
    watched.shoot("forbidden")
    seen["widths"]["forbidden"] = watched.width()


def test_every_page_reads_at_390_px_without_scrolling_sideways(
    browser, live_server, committed_world, provider_stub, oidc_console
):
    """Each page at a phone's width: no CSP violation, and nothing wider than the screen
    (wide tables scroll inside their own box); the screenshots the README shows."""
    dashboard_world(committed_world)
    alice = make_console_user("security_admin", name="alice")
    carol = make_console_user("auditor", name="carol")
    key = committed_world.key_a
    key_page = f"/console/tenants/{key.tenant.slug}/keys/{key.pk}/"
    provider_stub.answer(401, docs.OPENAI_INVALID)
    integrate_all()
    event = AuditEvent.objects.filter(action="key.created").first()
    assert event is not None
    seen: dict[str, Any] = {"tenant": key.tenant.slug, "widths": {}}

    base = live_server.url
    problems = browse(
        browser, base, lambda w: _admin_tour(w, seen, alice.username, key_page), NARROW
    )
    problems += browse(
        browser, base, lambda w: _auditor_tour(w, seen, carol.username, str(event.pk)), NARROW
    )
    assert problems == [], problems
    assert len(seen["widths"]) == 13
    too_wide = {name: width for name, width in seen["widths"].items() if width > NARROW}
    assert too_wide == {}


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
