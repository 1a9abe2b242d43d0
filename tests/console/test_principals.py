"""Principals and grants in the console: the API's actions with the API's checks. A new
or rotated secret is shown once, in the answer to the POST, and nowhere else; limited
admins see and change only their tenants' grants; everyone else is refused, and nothing
changes when something is refused."""

from __future__ import annotations

import json
import logging

import pytest
from django.test import Client

from audit.models import AuditEvent
from tenants.models import Grant, ServicePrincipal
from tests.console.helpers import POLICY, make_console_user, signed_in
from tests.factories import make_principal, rand

pytestmark = pytest.mark.django_db

NIL = "00000000-0000-0000-0000-000000000000"


def _admin(actors, name: str = "alice") -> Client:
    tenants = [actors.tenant_a] if name == "bob" else None
    role = "auditor" if name == "carol" else "security_admin"
    return signed_in(make_console_user(role, tenants, name=name))


def _state() -> tuple[int, int, int]:
    return ServicePrincipal.objects.count(), Grant.objects.count(), AuditEvent.objects.count()


def _everything_audited() -> str:
    return json.dumps(
        list(AuditEvent.objects.values_list("actor_id", "target", "details")), default=str
    )


def _secret_of(response) -> str:
    body: str = response.content.decode()
    start = body.index('value="kwp_') + len('value="')
    return body[start : body.index('"', start)]


def _grant(client: Client, principal, tenant: str, /, **extra):
    body = {
        "principal": str(principal.id),
        "tenant": tenant,
        "provider": "openai",
        "scopes": ["release"],
        "max_ttl_seconds": "600",
        **extra,
    }
    return client.post("/console/grants/", body)


# Principals


def test_a_new_principals_secret_is_shown_once_and_kept_nowhere(actors, caplog):
    caplog.set_level(logging.DEBUG)
    alice = _admin(actors)
    name = rand("billing")
    response = alice.post("/console/principals/", {"name": name})
    assert response.status_code == 201
    assert "no-store" in response["Cache-Control"]
    assert response["Content-Security-Policy"] == POLICY
    body = response.content.decode()
    secret = _secret_of(response)
    assert secret.startswith("kwp_") and body.count(secret) == 1
    assert "shown once; store it now" in body
    assert 'src="/static/console/copy.js"' in body and "<script>" not in body
    principal = ServicePrincipal.objects.get(name=name)
    event = AuditEvent.objects.get(action="principal.created", target=f"principal:{principal.id}")
    assert event.details == {"name": name}
    listing = alice.get("/console/principals/").content.decode()
    assert name in listing and str(principal.id) in listing
    assert secret not in listing and secret not in _everything_audited()
    assert secret not in caplog.text and secret not in str(alice.session.items())


@pytest.mark.parametrize(
    "name", ["", "Billing", "-billing", "a" * 64, "bill\x00ing", "bill\ning", "\x1b[31mred"]
)
def test_a_bad_principal_name_is_refused_with_its_reason(actors, name):
    alice = _admin(actors)
    before = _state()
    response = alice.post("/console/principals/", {"name": name})
    assert response.status_code == 400
    assert 'role="alert"' in response.content.decode()
    assert "kwp_" not in response.content.decode()
    assert _state() == before


def test_a_taken_principal_name_is_a_conflict(actors):
    principal, _ = make_principal()
    alice = _admin(actors)
    before = _state()
    response = alice.post("/console/principals/", {"name": principal.name})
    assert response.status_code == 409
    assert "already exists" in response.content.decode()
    assert _state() == before


def test_rotating_a_secret_shows_the_new_one_once_and_the_old_one_stops(world, caplog):
    caplog.set_level(logging.DEBUG)
    alice = _admin(world.actors)
    url = f"/console/principals/{world.principal.id}/rotate/"
    confirm = alice.get(url)
    assert confirm.status_code == 200 and "stops working at once" in confirm.content.decode()
    assert world.issue().status_code == 201  # the old secret works until the rotation
    response = alice.post(url)
    assert response.status_code == 200
    secret = _secret_of(response)
    assert secret != world.secret and response.content.decode().count(secret) == 1
    assert "no-store" in response["Cache-Control"]
    assert world.issue(world.secret).status_code == 401
    assert world.issue(secret).status_code == 201
    event = AuditEvent.objects.get(action="principal.secret_rotated")
    assert event.details == {"name": world.principal.name}
    assert secret not in _everything_audited() and secret not in caplog.text
    assert secret not in alice.get("/console/principals/").content.decode()


def test_deleting_a_principal_wants_its_name_typed(world):
    alice = _admin(world.actors)
    principal = world.principal
    url = f"/console/principals/{principal.id}/delete/"
    page = alice.get(url).content.decode()
    assert f'<label for="id_confirm">Type {principal.name} to confirm</label>' in page
    before = _state()
    for typed in ("", "someone-else", principal.name.upper()):
        refused = alice.post(url, {"confirm": typed})
        assert refused.status_code == 400 and 'role="alert"' in refused.content.decode()
    assert _state() == before
    response = alice.post(url, {"confirm": principal.name})
    assert response.status_code == 302 and response["Location"] == "/console/principals/"
    assert not ServicePrincipal.objects.filter(pk=principal.pk).exists()
    assert not Grant.objects.filter(principal_id=principal.pk).exists()
    event = AuditEvent.objects.get(action="principal.deleted")
    assert event.details == {"name": principal.name}
    assert world.issue().status_code == 401


@pytest.mark.parametrize("principal_id", ["not-a-uuid", NIL, "1" * 200])
@pytest.mark.parametrize("action", ["rotate", "delete"])
def test_an_unknown_or_malformed_principal_is_not_found(actors, principal_id, action):
    alice = _admin(actors)
    before = _state()
    url = f"/console/principals/{principal_id}/{action}/"
    assert alice.get(url).status_code == 404
    assert alice.post(url, {"confirm": "x"}).status_code == 404
    assert _state() == before


def test_a_limited_admin_sees_her_tenants_principals_and_changes_none(world):
    bob = _admin(world.actors, "bob")
    page = bob.get("/console/principals/").content.decode()
    assert world.principal.name in page and world.stranger.name not in page
    assert "New principal" not in page and "Rotate secret" not in page
    before = _state()
    refused = [
        bob.post("/console/principals/", {"name": rand("svc")}),
        bob.get(f"/console/principals/{world.principal.id}/rotate/"),
        bob.post(f"/console/principals/{world.principal.id}/rotate/"),
        bob.post(f"/console/principals/{world.principal.id}/delete/", {"confirm": "x"}),
    ]
    assert [r.status_code for r in refused] == [403] * 4
    assert "kwp_" not in "".join(r.content.decode() for r in refused)
    denied = AuditEvent.objects.filter(action="access.denied", details__status=403)
    assert denied.count() == 4
    assert _state()[:2] == before[:2]
    assert world.issue().status_code == 201


@pytest.mark.parametrize("url", ["/console/principals/", "/console/grants/"])
def test_auditors_are_refused_and_anonymous_users_sent_to_sign_in(actors, url):
    carol = _admin(actors, "carol")
    assert carol.get(url).status_code == 403
    assert carol.post(url, {"name": rand("svc")}).status_code == 403
    assert AuditEvent.objects.filter(action="access.denied", details__status=403).count() == 2
    anonymous = Client(REMOTE_ADDR="10.8.8.8").get(url)
    assert anonymous.status_code == 302 and anonymous["Location"].startswith("/console/login/")


def test_a_principal_or_grant_post_needs_its_csrf_token(world):
    strict = Client(enforce_csrf_checks=True, REMOTE_ADDR="10.9.9.8")
    strict.force_login(make_console_user("security_admin", name="alice"))
    before = _state()
    posts = [
        ("/console/principals/", {"name": rand("svc")}),
        (f"/console/principals/{world.principal.id}/rotate/", {}),
        (f"/console/principals/{world.principal.id}/delete/", {"confirm": world.principal.name}),
        (f"/console/grants/{world.grant.id}/delete/", {}),
    ]
    for url, data in posts:
        assert strict.post(url, data).status_code == 403
    assert _state() == before
    assert world.issue().status_code == 201


# Grants


def test_a_global_admin_grants_a_principal_a_tenant_audited_as_the_api_does(world):
    alice = _admin(world.actors)
    principal, tenant = world.stranger, world.actors.tenant_b
    page = alice.get("/console/grants/").content.decode()
    assert f'<option value="{principal.id}">{principal.name}</option>' in page
    assert '<option value="*">All tenants (*)</option>' in page
    response = _grant(alice, principal, tenant.slug, scopes=["release", "proxy"], models="gpt-4o")
    assert response.status_code == 302 and response["Location"] == "/console/grants/"
    grant = Grant.objects.get(principal=principal)
    assert (grant.tenant, grant.provider, grant.scopes) == (tenant, "openai", ["proxy", "release"])
    assert (grant.max_ttl_seconds, grant.allowed_models) == (600, ["gpt-4o"])
    event = AuditEvent.objects.get(action="grant.created", target=f"grant:{grant.id}")
    assert event.tenant == tenant.slug
    assert event.details["principal_name"] == principal.name
    assert event.details["tenant"] == tenant.slug
    assert f"/console/grants/{grant.id}/delete/" in alice.get("/console/grants/").content.decode()


def test_a_global_admin_grants_every_tenant_and_any_provider(world):
    alice = _admin(world.actors)
    assert _grant(alice, world.stranger, "*", provider="*").status_code == 302
    grant = Grant.objects.get(principal=world.stranger)
    assert grant.tenant is None and grant.provider == "*"
    event = AuditEvent.objects.get(action="grant.created", target=f"grant:{grant.id}")
    assert event.details["tenant"] == "*"


@pytest.mark.parametrize(
    ("extra", "status", "field"),
    [
        ({"scopes": []}, 400, "scopes"),
        ({"scopes": ["root"]}, 400, "scopes"),
        ({"provider": "nope"}, 400, "provider"),
        ({"max_ttl_seconds": "5"}, 400, "max_ttl_seconds"),
        ({"max_ttl_seconds": str(10**6)}, 400, "max_ttl_seconds"),
        ({"max_ttl_seconds": "ten"}, 400, "max_ttl_seconds"),
        ({"tenant": "Not A Slug"}, 400, "tenant"),
        ({"tenant": "a\x00b"}, 400, "tenant"),
        ({"models": "gpt-4o \x1b[31m"}, 400, "models"),
        ({"models": "gpt\x00"}, 400, "models"),
        ({"principal": "not-a-uuid"}, 400, "principal"),
        ({"principal": ""}, 400, "principal"),
        ({"principal": NIL}, 404, "principal"),
    ],
)
def test_a_bad_grant_is_refused_with_its_reason_and_nothing_changes(world, extra, status, field):
    alice = _admin(world.actors)
    before = _state()
    response = _grant(alice, world.stranger, world.actors.tenant_a.slug, **extra)
    assert response.status_code == status
    assert f'id="{field}-error"' in response.content.decode()
    assert _state() == before


def test_a_too_long_ttl_names_the_setting(world, settings):
    settings.TOKEN_MAX_TTL = 1200
    response = _grant(_admin(world.actors), world.stranger, "*", max_ttl_seconds="1201")
    assert response.status_code == 400
    assert "At most 1200 (KEYWARD_TOKEN_MAX_TTL)." in response.content.decode()


def test_a_limited_admin_grants_only_on_her_tenants(world):
    bob = _admin(world.actors, "bob")
    a, b = world.actors.tenant_a, world.actors.tenant_b
    page = bob.get("/console/grants/").content.decode()
    assert f'value="{a.slug}"' in page and f'value="{b.slug}"' not in page
    assert "All tenants" not in page and world.stranger.name not in page
    before = _state()
    assert _grant(bob, world.stranger, b.slug).status_code == 404
    hidden = AuditEvent.objects.get(action="access.denied", details__status=404)
    assert hidden.tenant == b.slug
    assert _grant(bob, world.stranger, "no-such-tenant").status_code == 404
    assert _grant(bob, world.stranger, "*").status_code == 403
    assert AuditEvent.objects.filter(action="access.denied", details__status=403).count() == 1
    assert _state()[:2] == before[:2]
    # A principal she cannot list, named by its id, as the API lets her.
    named = _grant(bob, world.stranger, a.slug, principal="", principal_id=str(world.stranger.id))
    assert named.status_code == 302
    assert Grant.objects.get(principal=world.stranger).tenant == a


def test_grants_are_listed_and_deleted_within_the_tenants_an_admin_covers(world):
    alice, bob, carol = (_admin(world.actors, n) for n in ("alice", "bob", "carol"))
    ours = world.grant
    theirs = Grant.objects.create(
        principal=world.stranger,
        tenant=world.actors.tenant_b,
        provider="openai",
        scopes=["release"],
        max_ttl_seconds=60,
    )
    everywhere = Grant.objects.create(
        principal=world.stranger, tenant=None, provider="*", scopes=["proxy"], max_ttl_seconds=60
    )
    urls = {g: f"/console/grants/{g.id}/delete/" for g in (ours, theirs, everywhere)}
    assert all(url in alice.get("/console/grants/").content.decode() for url in urls.values())
    bobs = bob.get("/console/grants/").content.decode()
    assert urls[ours] in bobs and urls[theirs] not in bobs and urls[everywhere] not in bobs
    before = _state()
    assert bob.post(urls[theirs]).status_code == 404
    assert bob.post(urls[everywhere]).status_code == 404
    assert bob.post("/console/grants/not-a-uuid/delete/").status_code == 404
    assert bob.post(f"/console/grants/{NIL}/delete/").status_code == 404
    assert carol.post(urls[ours]).status_code == 403
    assert bob.get(urls[ours]).status_code == 405
    hidden = AuditEvent.objects.filter(action="access.denied", details__status=404)
    assert sorted(e.chain for e in hidden) == ["global", f"tenant:{world.actors.tenant_b.slug}"]
    assert _state()[:2] == before[:2]
    assert world.token()  # the grant still works
    assert bob.post(urls[ours]).status_code == 302
    assert not Grant.objects.filter(pk=ours.pk).exists()
    event = AuditEvent.objects.get(action="grant.deleted")
    assert event.tenant == world.actors.tenant_a.slug and event.details["tokens_revoked"] == 1
    assert world.issue().status_code == 403
