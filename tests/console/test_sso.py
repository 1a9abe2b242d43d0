"""Single sign-on to the console over OpenID Connect, against a real provider in its own
process: the claims give the role and tenants at every sign-in, through Keyward's own
audited action; refusals are explained and audited, and nothing is created by one."""

from __future__ import annotations

import logging
from urllib.parse import parse_qs, urlsplit

import pytest
from django.contrib.auth import get_user_model

from audit.models import AuditEvent
from tenants.models import StaffRole
from tests.console.oidc import sign_in_via_oidc
from tests.factories import rand

pytestmark = pytest.mark.slow


def test_an_auditor_from_the_groups_claim_reaches_the_dashboard_but_not_the_tenants(
    live_server, oidc_console, committed_actors
):
    name = rand("carol")
    oidc_console.user(name, groups=["staff", "keyward-auditors"], tenants=["*"])
    session, answer = sign_in_via_oidc(live_server.url, name)
    assert answer.status_code == 200, answer.text
    assert answer.url == f"{live_server.url}/console/"
    _, elsewhere = sign_in_via_oidc(live_server.url, name, next="/api/v1/tenants")
    assert elsewhere.url == f"{live_server.url}/console/"  # never sent out of the console
    assert f"oidc:{name}" in answer.text and "Auditor" in answer.text
    assert session.get(f"{live_server.url}/console/tenants/").status_code == 403
    user = get_user_model().objects.get(username=f"oidc:{name}")
    assert not user.has_usable_password() and not user.admin_tokens.exists()
    signed_in = AuditEvent.objects.filter(action="auth.signed_in", target=f"user:oidc:{name}")
    assert [e.details for e in signed_in] == [{"via": "oidc"}] * 2
    created = AuditEvent.objects.get(action="admin.created", target=f"user:oidc:{name}")
    assert created.details == {"role": "auditor", "tenants": "*", "via": "oidc"}


def _events(action: str, **lookup):
    return AuditEvent.objects.filter(action=action, **lookup)


def test_a_security_admin_limited_by_the_tenant_claim_sees_only_her_tenants(
    live_server, oidc_console, committed_actors
):
    a, b = committed_actors.tenant_a, committed_actors.tenant_b
    name = rand("bea")
    oidc_console.user(name, groups=["keyward-admins"], tenants=[a.slug, "no-such-tenant"])
    session, page = sign_in_via_oidc(live_server.url, name, next="/console/tenants/")
    assert page.url == f"{live_server.url}/console/tenants/" and "(some tenants)" in page.text
    assert page.status_code == 200 and a.slug in page.text and b.slug not in page.text
    csrf = session.cookies.get("keyward_csrf")
    hidden = session.post(
        f"{live_server.url}/console/tenants/{b.slug}/status/",
        data={"status": "suspended", "csrfmiddlewaretoken": csrf},
        headers={"Referer": f"{live_server.url}/console/tenants/"},
    )
    assert hidden.status_code == 404
    assert _events("access.denied", tenant=b.slug, details__status=404).count() == 1
    staff = StaffRole.objects.get(user__username=f"oidc:{name}")
    assert staff.role == "security_admin" and not staff.all_tenants
    assert [t.slug for t in staff.tenants.all()] == [a.slug]


def test_a_user_whose_claims_map_to_no_role_is_refused_and_nothing_is_created(
    live_server, oidc_console, committed_actors
):
    name = rand("eve")
    oidc_console.user(name, groups=["staff"], tenants=["*"])
    session, answer = sign_in_via_oidc(live_server.url, name)
    assert answer.status_code == 403
    assert "no Keyward role" in answer.text and 'role="alert"' in answer.text
    assert not get_user_model().objects.filter(username=f"oidc:{name}").exists()
    failed = _events("auth.failed", target=f"user:oidc:{name}").get()
    assert failed.details["reason"] == "no_role" and failed.details["via"] == "oidc"
    assert session.get(f"{live_server.url}/console/").url.startswith(
        f"{live_server.url}/console/login/"
    )


def test_claims_changed_at_the_provider_change_the_role_at_the_next_sign_in(
    live_server, oidc_console, committed_actors
):
    a = committed_actors.tenant_a
    name = rand("fay")
    username = f"oidc:{name}"
    oidc_console.user(name, groups=["keyward-admins"], tenants=["*"])
    sign_in_via_oidc(live_server.url, name)
    sign_in_via_oidc(live_server.url, name)
    assert not _events("admin.updated", target=f"user:{username}").exists()  # nothing changed
    oidc_console.user(name, groups=["keyward-auditors"], tenants=[a.slug])
    session, answer = sign_in_via_oidc(live_server.url, name)
    assert "Auditor" in answer.text
    assert session.get(f"{live_server.url}/console/tenants/").status_code == 403
    updated = _events("admin.updated", target=f"user:{username}").get()
    assert updated.details == {
        "role": "auditor",
        "tenants": [a.slug],
        "via": "oidc",
        "before": {"role": "security_admin", "tenants": "*"},
    }
    oidc_console.user(name, groups=[], tenants=[a.slug])
    _, answer = sign_in_via_oidc(live_server.url, name)
    assert answer.status_code == 403
    assert StaffRole.objects.get(user__username=username).role == "auditor"  # refused, unchanged
    assert _events("auth.signed_in", target=f"user:{username}").count() == 3


def test_a_tampered_state_at_the_callback_is_refused(live_server, oidc_console, committed_actors):
    name = rand("gus")
    oidc_console.user(name, groups=["keyward-admins"], tenants=["*"])
    session, signed = sign_in_via_oidc(live_server.url, name, follow=False)
    provider = oidc_console.url
    back = session.get(f"{provider}{signed.headers['Location']}", allow_redirects=False)
    callback = back.headers["Location"]
    assert callback.startswith(f"{live_server.url}/console/oidc/callback/?")
    query = parse_qs(urlsplit(callback).query)
    forged = f"{live_server.url}/console/oidc/callback/?code={query['code'][0]}&state=forged"
    answer = session.get(forged)
    assert answer.status_code == 400 and "did not complete" in answer.text
    assert _events("auth.failed", details__reason="state_mismatch").count() == 1
    assert not get_user_model().objects.filter(username=f"oidc:{name}").exists()


def test_an_id_token_signed_by_another_key_is_refused(
    live_server, oidc_console, committed_actors, settings
):
    settings.OIDC_OP_JWKS_ENDPOINT = f"{oidc_console.url}/forged-jwks/"
    name = rand("hal")
    oidc_console.user(name, groups=["keyward-admins"], tenants=["*"])
    _, answer = sign_in_via_oidc(live_server.url, name)
    assert answer.status_code == 400
    assert _events("auth.failed", details__reason="invalid_response").count() == 1
    assert not get_user_model().objects.filter(username=f"oidc:{name}").exists()


def test_the_client_secret_is_in_no_log_line_audit_event_or_page(
    live_server, oidc_console, committed_actors, caplog, settings
):
    caplog.set_level(logging.DEBUG)
    name = rand("ida")
    oidc_console.user(name, groups=["keyward-auditors"], tenants=["*"])
    pages = [sign_in_via_oidc(live_server.url, name)[1].text]
    oidc_console.user(name, groups=["nobody"], tenants=["*"])
    pages.append(sign_in_via_oidc(live_server.url, name)[1].text)
    secret = oidc_console.client_secret
    settings.OIDC_RP_CLIENT_SECRET = secret + "-wrong"  # the provider refuses the exchange
    pages.append(sign_in_via_oidc(live_server.url, name)[1].text)
    events = [repr((e.target, e.details)) for e in AuditEvent.objects.all()]
    assert _events("auth.failed", details__reason="provider_refused").count() == 1
    for text in (caplog.text, *events, *pages):
        assert secret not in text
