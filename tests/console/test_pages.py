"""The console over Django's test client: security headers on every page, CSRF, cookies,
rate-limited and audited sign-in, sign-out, roles and tenant scoping."""

from __future__ import annotations

import io
import re
import time

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.test import Client

from audit.models import AuditEvent
from audit.recorder import chain_for
from console.views.signin import BAD_CREDENTIALS
from kms import ratelimit
from tests.console.helpers import (
    PASSWORD,
    POLICY,
    browser_client,
    dashboard_world,
    make_console_user,
    sign_in,
    signed_in,
)
from tests.factories import make_roleless_user, rand
from tests.test_settings import GOOD_PRODUCTION, run_configured

pytestmark = pytest.mark.django_db


def _pages(actors):
    """(client, path, expected status) for every console page and refusal."""
    alice = signed_in(make_console_user("security_admin", name="alice"))
    carol = signed_in(make_console_user("auditor", name="carol"))
    return [
        (browser_client(), "/console/login/", 200),
        (alice, "/console/", 200),
        (alice, "/console/tenants/", 200),
        (carol, "/console/", 200),
        (carol, "/console/tenants/", 403),
    ]


def test_every_console_page_carries_the_policy_and_no_inline_code(actors):
    for client, path, status in _pages(actors):
        response = client.get(path)
        assert response.status_code == status, path
        assert response["Content-Security-Policy"] == POLICY
        assert "unsafe-inline" not in response["Content-Security-Policy"]
        assert response["X-Frame-Options"] == "DENY"
        assert "no-store" in response["Cache-Control"]
        html = response.content.decode()
        assert not re.search(r"<script(?![^>]*\bsrc=)", html), f"inline script on {path}"
        assert "<style" not in html and " style=" not in html, f"inline style on {path}"
        assert '"includeIndicatorStyles": false' in html


def test_the_assets_are_served_by_keyward_itself():
    client = Client()
    for asset, kind in (("htmx.min.js", "javascript"), ("console.css", "css")):
        response = client.get(f"/static/console/{asset}")
        assert response.status_code == 200, asset
        assert kind in response["Content-Type"]
    page = browser_client().get("/console/login/").content.decode()
    references = re.findall(r'(?:src|href)="([^"]+)"', page.split("<body")[0])
    assert references, "the page names its assets"
    assert all(r.startswith("/static/console/") for r in references), references


def test_the_root_and_unsigned_pages_lead_to_sign_in():
    client = browser_client()
    assert client.get("/")["Location"] == "/console/"
    response = client.get("/console/tenants/")
    assert response.status_code == 302
    assert response["Location"] == "/console/login/?next=/console/tenants/"


def test_a_sign_in_without_its_csrf_token_is_refused():
    user = make_console_user("security_admin")
    strict = browser_client(enforce_csrf_checks=True)
    refused = sign_in(strict, user.username)
    assert refused.status_code == 403
    assert refused["Content-Security-Policy"] == POLICY
    assert "_auth_user_id" not in strict.session
    assert not AuditEvent.objects.filter(action="auth.signed_in").exists()
    strict.get("/console/login/")  # the form sets the token's cookie
    token = strict.cookies["keyward_csrf"].value
    accepted = strict.post(
        "/console/login/",
        {"username": user.username, "password": PASSWORD, "csrfmiddlewaretoken": token},
    )
    assert accepted.status_code == 302


def test_signing_in_opens_a_session_with_strict_cookies_and_is_audited(settings):
    user = make_console_user("security_admin")
    client = browser_client()
    response = sign_in(client, user.username)
    assert response.status_code == 302
    assert response["Location"] == "/console/"
    cookie = response.cookies["keyward_session"]
    assert cookie["httponly"] and cookie["samesite"] == "Strict"
    assert cookie["path"] == "/console/"
    assert client.get("/console/").status_code == 200
    event = AuditEvent.objects.get(action="auth.signed_in")
    assert (event.actor_type, event.actor_id) == ("user", user.username)
    assert event.details == {"via": "console"}
    assert PASSWORD not in repr(event.details)
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = True
    again = sign_in(browser_client(), user.username)
    assert again.cookies["keyward_session"]["secure"]


def test_production_settings_make_the_console_cookies_secure(tmp_path):
    probe = (
        "import django; django.setup(); from django.conf import settings as s; "
        "print(s.SESSION_COOKIE_SECURE, s.SESSION_COOKIE_HTTPONLY, s.SESSION_COOKIE_SAMESITE, "
        "s.CSRF_COOKIE_SECURE, s.CSRF_COOKIE_HTTPONLY, s.CSRF_COOKIE_SAMESITE, s.X_FRAME_OPTIONS)"
    )
    done = run_configured(tmp_path, probe, **GOOD_PRODUCTION)
    assert done.stdout.split() == ["True", "True", "Strict", "True", "True", "Strict", "DENY"], (
        done.stderr
    )


def test_an_unknown_user_and_a_wrong_password_get_the_same_answer_and_are_audited():
    user = make_console_user("auditor")
    unknown = sign_in(browser_client(), "nobody-" + user.username)
    wrong = sign_in(browser_client(), user.username, "not the password at all")
    assert unknown.status_code == wrong.status_code == 401
    for response in (unknown, wrong):
        assert BAD_CREDENTIALS in response.content.decode()
    strip = re.compile(rb'value="[^"]*"')
    assert strip.sub(b"", unknown.content) == strip.sub(b"", wrong.content)
    failed = {e.details["reason"]: e for e in AuditEvent.objects.filter(action="auth.failed")}
    assert set(failed) == {"unknown_user", "wrong_password"}
    assert failed["unknown_user"].target == ""  # an unknown name may be a mistyped password
    assert failed["wrong_password"].target == f"user:{user.username}"
    assert all(e.outcome == "denied" and e.actor_type == "anonymous" for e in failed.values())


def test_sign_in_is_refused_past_the_limit_per_username(settings):
    settings.LOGIN_RATE_LIMIT = (3, 3600)
    user = make_console_user("security_admin")
    statuses = [
        sign_in(browser_client(), user.username, "wrong password here").status_code
        for _ in range(3)
    ]
    assert statuses == [401, 401, 401]
    refused = sign_in(browser_client(), user.username)  # the right password, one too many
    assert refused.status_code == 429
    assert int(refused["Retry-After"]) > 0
    assert "Too many sign-in attempts" in refused.content.decode()
    assert not AuditEvent.objects.filter(action="auth.signed_in").exists()
    assert AuditEvent.objects.filter(action="auth.failed", details__reason="rate_limited").exists()


def test_sign_in_is_refused_past_the_limit_per_source(settings):
    settings.LOGIN_RATE_LIMIT = (2, 3600)
    user = make_console_user("security_admin")
    client = browser_client()
    assert sign_in(client, rand("someone")).status_code == 401
    assert sign_in(client, rand("someone")).status_code == 401
    assert sign_in(client, user.username).status_code == 429


def test_sign_in_fails_closed_when_nothing_can_count_it(settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    settings.RATE_LIMIT_FALLBACK = "refuse"
    ratelimit._outage.since = 0.0
    user = make_console_user("security_admin")
    client = browser_client()
    try:
        refused = sign_in(client, user.username)
    finally:
        ratelimit._outage.since = 0.0
    assert refused.status_code == 503
    assert refused["Retry-After"]
    assert client.get("/console/").status_code == 302
    assert not AuditEvent.objects.filter(action="auth.signed_in").exists()


def test_a_user_without_a_usable_password_cannot_sign_in():
    user = make_console_user("security_admin")
    user.set_unusable_password()
    user.save()
    assert sign_in(browser_client(), user.username, "").status_code == 400
    assert sign_in(browser_client(), user.username, "anything at all").status_code == 401


def test_signing_out_ends_the_session_and_is_audited():
    user = make_console_user("auditor")
    client = browser_client()
    sign_in(client, user.username)
    assert client.get("/console/logout/").status_code == 405  # only a POST signs out
    response = client.post("/console/logout/")
    assert response["Location"] == "/console/login/"
    assert client.get("/console/").status_code == 302
    assert AuditEvent.objects.filter(action="auth.signed_out", actor_id=user.username).exists()


def test_an_auditor_reads_the_dashboard_but_gets_403_on_tenants(actors):
    carol = make_console_user("auditor", name="carol")
    client = signed_in(carol)
    assert client.get("/console/").status_code == 200
    page = client.get("/console/").content.decode()
    assert 'href="/console/tenants/"' not in page
    refused = client.get("/console/tenants/")
    assert refused.status_code == 403
    event = AuditEvent.objects.get(action="access.denied", actor_id=carol.username)
    assert event.details["path"] == "/console/tenants/"


def test_a_user_without_a_role_is_refused_everywhere(actors):
    charlie, _ = make_roleless_user()
    client = signed_in(charlie)
    assert client.get("/console/").status_code == 403
    assert client.get("/console/tenants/").status_code == 403


def test_the_dashboard_shows_the_state_of_every_covered_tenant(world):
    a, b = dashboard_world(world)
    page = signed_in(make_console_user("security_admin", name="alice")).get("/console/")
    html = page.content.decode()
    for seen in (
        "label-of-a",
        "label-of-b",
        "revoked upstream",
        chain_for(a.slug),
        chain_for(b.slug),
        f"refused-in-{a.slug}",
        f"refused-in-{b.slug}",
        "Broken",
    ):
        assert seen in html, seen
    assert '<strong data-status="invalid">1</strong>' in html
    assert AuditEvent.objects.filter(action="audit.searched").exists()


def test_a_tenant_limited_admin_sees_only_her_tenants(world):
    a, b = dashboard_world(world)
    bob = signed_in(make_console_user("security_admin", [a], name="bob"))
    dashboard = bob.get("/console/").content.decode()
    assert "label-of-a" in dashboard and f"refused-in-{a.slug}" in dashboard
    assert chain_for(a.slug) in dashboard
    for hidden in ("label-of-b", chain_for(b.slug), f"refused-in-{b.slug}", b.slug, "Broken"):
        assert hidden not in dashboard, hidden
    assert '<strong data-status="invalid">0</strong>' in dashboard
    tenants = bob.get("/console/tenants/").content.decode()
    assert a.slug in tenants and b.slug not in tenants
    dave = signed_in(make_console_user("auditor", [a], name="dave")).get("/console/")
    assert "label-of-a" in dave.content.decode() and b.slug not in dave.content.decode()


def test_htmx_refreshes_the_dashboard_panels_alone(actors):
    client = signed_in(make_console_user("auditor"))
    panels = client.get("/console/", HTTP_HX_REQUEST="true")
    assert panels.status_code == 200
    html = panels.content.decode()
    assert html.lstrip().startswith('<div id="panels"') and "<html" not in html
    assert panels["Content-Security-Policy"] == POLICY


def test_create_admin_sets_a_password_read_from_stdin():
    out, err = io.StringIO(), io.StringIO()
    call_command(
        "create_admin",
        "pat",
        "--role",
        "auditor",
        "--password-stdin",
        stdin=io.StringIO(PASSWORD + "\n"),
        stdout=out,
        stderr=err,
    )
    assert out.getvalue().strip().startswith("kwa_")
    assert PASSWORD not in out.getvalue() + err.getvalue()
    assert get_user_model().objects.get(username="pat").check_password(PASSWORD)
    event = AuditEvent.objects.get(action="admin.password_set", target="user:pat")
    assert PASSWORD not in repr(event.details)
    assert sign_in(browser_client(), "pat").status_code == 302


def test_create_admin_refuses_a_weak_password_before_changing_anything():
    with pytest.raises(CommandError, match="password"):
        call_command(
            "create_admin",
            "weak",
            "--role",
            "auditor",
            "--password-stdin",
            stdin=io.StringIO("short\n"),
            stdout=io.StringIO(),
            stderr=io.StringIO(),
        )
    assert not get_user_model().objects.filter(username="weak").exists()


def test_failed_sign_ins_cannot_fill_the_log(settings):
    settings.LOGIN_RATE_LIMIT = (100, 60)
    client = browser_client()
    for n in range(6):
        assert sign_in(client, f"nobody-{n}-{rand('x')}").status_code == 401
    failed = AuditEvent.objects.filter(action="auth.failed", details__reason="unknown_user")
    assert failed.count() == 1, "the first of the minute on its own, the rest summarised"
    counted = ratelimit.take_finished_auth_failures(now=time.time() + 120)
    assert [(reason, count) for _, _, reason, count in counted] == [("unknown_user", 6)]
