"""Tenants in the console: created by global security admins and suspended or reactivated
by the admins who cover them, through the same actions as the API (the same checks, the
same audit events); everyone else refused, and nothing changed by a refusal."""

from __future__ import annotations

import pytest
from django.test import Client

from audit.models import AuditEvent
from kms.actions.residency import do_pin_tenant_store
from tenants.models import Tenant, TenantStatus
from tests.console.helpers import make_console_user, signed_in
from tests.factories import SYSTEM, rand

pytestmark = pytest.mark.django_db


def _create(client, slug: str, name: str = "Acme Corp"):
    return client.post("/console/tenants/", {"slug": slug, "name": name})


def test_a_global_admin_creates_a_tenant_audited_as_the_api_does(actors):
    alice = signed_in(make_console_user("security_admin", name="alice"))
    slug = rand("acme")
    response = _create(alice, slug)
    assert response.status_code == 302 and response["Location"] == "/console/tenants/"
    assert Tenant.objects.get(slug=slug).name == "Acme Corp"
    event = AuditEvent.objects.get(action="tenant.created", tenant=slug)
    assert event.details == {"name": "Acme Corp", "platform": False}
    assert slug in alice.get("/console/tenants/").content.decode()


@pytest.mark.parametrize(
    ("slug", "name", "status"),
    [
        ("Not A Slug", "Acme", 400),
        ("-acme", "Acme", 400),
        ("a" * 64, "Acme", 400),
        ("acme-ok", "line\nbreak", 400),
        ("acme-ok", "\x1b[31mred", 400),
        ("acme-ok", "", 400),
    ],
)
def test_a_bad_tenant_is_refused_with_its_reason_and_nothing_changes(actors, slug, name, status):
    alice = signed_in(make_console_user("security_admin", name="alice"))
    before = (Tenant.objects.count(), AuditEvent.objects.count())
    response = _create(alice, slug, name)
    assert response.status_code == status
    assert 'role="alert"' in response.content.decode()
    assert (Tenant.objects.count(), AuditEvent.objects.count()) == before


def test_a_taken_slug_is_a_conflict(actors):
    alice = signed_in(make_console_user("security_admin", name="alice"))
    response = _create(alice, actors.tenant_a.slug, "Another")
    assert response.status_code == 409
    assert "already exists" in response.content.decode()
    assert Tenant.objects.get(slug=actors.tenant_a.slug).name != "Another"


def test_only_a_global_admin_creates_tenants(actors):
    bob = signed_in(make_console_user("security_admin", [actors.tenant_a], name="bob"))
    carol = signed_in(make_console_user("auditor", name="carol"))
    assert "New tenant" not in bob.get("/console/tenants/").content.decode()
    for client in (bob, carol):
        slug = rand("nope")
        assert _create(client, slug).status_code == 403
        assert not Tenant.objects.filter(slug=slug).exists()
    denied = AuditEvent.objects.filter(action="access.denied", details__status=403)
    assert denied.count() == 2


def test_suspending_a_tenant_ends_its_tokens_and_reactivating_restores_it(world):
    alice = signed_in(make_console_user("security_admin", name="alice"))
    tenant = world.actors.tenant_a
    url = f"/console/tenants/{tenant.slug}/status/"
    assert alice.post(url, {"status": "suspended"}).status_code == 302
    tenant.refresh_from_db()
    assert tenant.status == TenantStatus.SUSPENDED
    assert tenant.tokens_revoked_before is not None
    assert AuditEvent.objects.filter(action="tenant.suspended", tenant=tenant.slug).exists()
    page = alice.get("/console/tenants/").content.decode()
    assert f"Reactivate {tenant.slug}" in page
    assert alice.post(url, {"status": "active"}).status_code == 302
    tenant.refresh_from_db()
    assert tenant.status == TenantStatus.ACTIVE
    assert AuditEvent.objects.filter(action="tenant.activated", tenant=tenant.slug).exists()


def test_another_tenants_status_is_hidden_from_a_limited_admin(actors):
    bob = signed_in(make_console_user("security_admin", [actors.tenant_a], name="bob"))
    other = actors.tenant_b
    for slug in (other.slug, "no-such-tenant"):
        response = bob.post(f"/console/tenants/{slug}/status/", {"status": "suspended"})
        assert response.status_code == 404
    other.refresh_from_db()
    assert other.status == TenantStatus.ACTIVE
    hidden = AuditEvent.objects.get(action="access.denied", details__status=404)
    assert hidden.tenant == other.slug
    own = bob.post(f"/console/tenants/{actors.tenant_a.slug}/status/", {"status": "suspended"})
    assert own.status_code == 302


def test_a_status_change_needs_post_a_known_status_and_its_csrf_token(actors):
    alice = signed_in(make_console_user("security_admin", name="alice"))
    url = f"/console/tenants/{actors.tenant_a.slug}/status/"
    assert alice.get(url).status_code == 405
    assert alice.post(url, {"status": "deleted"}).status_code == 400
    strict = Client(enforce_csrf_checks=True, REMOTE_ADDR="10.9.9.9")
    strict.force_login(make_console_user("security_admin", name="alice"))
    assert strict.post(url, {"status": "suspended"}).status_code == 403
    actors.tenant_a.refresh_from_db()
    assert actors.tenant_a.status == TenantStatus.ACTIVE


def test_the_tenants_page_shows_the_region_of_each_tenants_store(actors, settings):
    settings.SECRET_STORES = {
        "default": {"backend": "local", "region": "eu"},
        "us": {"backend": "local", "region": "us"},
    }
    do_pin_tenant_store(actors.tenant_a, "us", actor=SYSTEM)
    alice = signed_in(make_console_user("security_admin", name="alice"))
    rows = alice.get("/console/tenants/").content.decode().split("<tr>")
    [a] = [row for row in rows if f"<code>{actors.tenant_a.slug}</code>" in row]
    [b] = [row for row in rows if f"<code>{actors.tenant_b.slug}</code>" in row]
    assert '<th scope="col">Region</th>' in rows[1]
    assert '<td>us <span class="muted">(pinned to <code>us</code>)</span></td>' in a
    assert "<td>eu</td>" in b


def test_a_tenants_key_policy_is_set_by_admins_of_every_tenant_and_audited(actors):
    alice = signed_in(make_console_user("security_admin", name="alice"))
    bob = signed_in(make_console_user("security_admin", [actors.tenant_a], name="bob"))
    carol = signed_in(make_console_user("auditor", name="carol"))
    own, other = actors.tenant_a, actors.tenant_b
    wanted = {"key_policy": "byok_preferred", "platform_fallback": "on"}
    assert bob.post(f"/console/tenants/{other.slug}/policy/", wanted).status_code == 404
    for refused in (bob, carol):  # bob covers the tenant, but not every tenant
        assert refused.post(f"/console/tenants/{own.slug}/policy/", wanted).status_code == 403
    bad = alice.post(f"/console/tenants/{own.slug}/policy/", {"key_policy": "sometimes"})
    assert bad.status_code == 400
    for tenant in (own, other):
        assert Tenant.objects.get(pk=tenant.pk).key_policy == "byok_required"
    assert not AuditEvent.objects.filter(action="tenant.key_policy_changed").exists()
    done = alice.post(f"/console/tenants/{own.slug}/policy/", wanted)
    assert done.status_code == 302, done.content
    saved = Tenant.objects.get(pk=own.pk)
    assert (saved.key_policy, saved.platform_fallback) == ("byok_preferred", True)
    event = AuditEvent.objects.get(action="tenant.key_policy_changed", tenant=own.slug)
    assert event.details["changes"]["key_policy"] == ["byok_required", "byok_preferred"]
    page = alice.get("/console/tenants/").content.decode()
    assert 'value="byok_preferred" selected' in page


def test_an_admin_of_some_tenants_sees_their_key_policy_without_a_form(actors):
    bob = signed_in(make_console_user("security_admin", [actors.tenant_a], name="bob"))
    page = bob.get("/console/tenants/").content.decode()
    assert "<code>byok_required</code>" in page
    assert "/policy/" not in page
