"""Who may do what on tenant and principal endpoints. Every case has someone refused."""

from __future__ import annotations

import pytest

from audit.models import AuditEvent
from tenants.actions import do_create_grant
from tenants.models import ServicePrincipal, Tenant
from tests.factories import SYSTEM, Actors, make_principal, rand

STAFF = ("alice", "bob", "carol", "dave")


def _create(actors: Actors, who: str, slug: str):
    return actors.as_(who).post("/api/v1/tenants", {"slug": slug, "name": "X"}, format="json")


@pytest.mark.parametrize(
    ("who", "status"),
    [
        ("alice", 201),
        ("bob", 403),
        ("carol", 403),
        ("dave", 403),
        ("charlie", 403),
        ("principal", 403),
        ("anonymous", 401),
    ],
)
def test_only_a_global_security_admin_creates_tenants(actors, who, status):
    slug = rand("new")
    assert _create(actors, who, slug).status_code == status
    assert Tenant.objects.filter(slug=slug).exists() == (status == 201)


@pytest.mark.parametrize(
    ("who", "visible"),
    [("alice", {"a", "b"}), ("bob", {"a"}), ("carol", {"a", "b"}), ("dave", {"a"})],
)
def test_tenant_listing_is_scoped_to_the_callers_tenants(actors, who, visible):
    response = actors.as_(who).get("/api/v1/tenants")
    assert response.status_code == 200
    slugs = {t["slug"] for t in response.json()["results"]}
    expected = {"a": actors.tenant_a.slug, "b": actors.tenant_b.slug}
    assert slugs == {expected[x] for x in visible}


@pytest.mark.parametrize(
    ("who", "status"), [("charlie", 403), ("principal", 403), ("anonymous", 401)]
)
def test_callers_without_a_staff_role_cannot_list_tenants(actors, who, status):
    assert actors.as_(who).get("/api/v1/tenants").status_code == status


def test_bob_gets_404_for_tenant_b_exactly_as_for_a_missing_tenant(actors):
    bob = actors.as_("bob")
    hidden = bob.get(f"/api/v1/tenants/{actors.tenant_b.slug}")
    missing = bob.get("/api/v1/tenants/no-such-tenant")
    assert hidden.status_code == missing.status_code == 404
    assert hidden.json()["error"]["code"] == missing.json()["error"]["code"]
    assert bob.get(f"/api/v1/tenants/{actors.tenant_a.slug}").status_code == 200


def test_bob_cannot_suspend_tenant_b_and_nothing_changes(actors):
    before = AuditEvent.objects.filter(action__startswith="tenant.").count()
    response = actors.as_("bob").patch(
        f"/api/v1/tenants/{actors.tenant_b.slug}", {"status": "suspended"}, format="json"
    )
    assert response.status_code == 404
    actors.tenant_b.refresh_from_db()
    assert actors.tenant_b.status == "active"
    assert AuditEvent.objects.filter(action__startswith="tenant.").count() == before


def test_bob_suspends_and_reactivates_his_own_tenant(actors):
    url = f"/api/v1/tenants/{actors.tenant_a.slug}"
    response = actors.as_("bob").patch(url, {"status": "suspended"}, format="json")
    assert response.status_code == 200
    assert response.json()["status"] == "suspended"
    assert actors.as_("bob").patch(url, {"status": "active"}, format="json").status_code == 200
    actions = list(
        AuditEvent.objects.filter(tenant=actors.tenant_a.slug).values_list("action", flat=True)
    )
    assert actions[-2:] == ["tenant.suspended", "tenant.activated"]


@pytest.mark.parametrize("who", ["carol", "dave", "charlie", "principal"])
def test_readers_and_strangers_cannot_change_a_tenant(actors, who):
    url = f"/api/v1/tenants/{actors.tenant_a.slug}"
    response = actors.as_(who).patch(url, {"name": "Renamed"}, format="json")
    assert response.status_code == 403
    actors.tenant_a.refresh_from_db()
    assert actors.tenant_a.name == "Tenant A"


@pytest.mark.parametrize(
    ("who", "status"),
    [
        ("alice", 201),
        ("bob", 403),
        ("carol", 403),
        ("charlie", 403),
        ("principal", 403),
        ("anonymous", 401),
    ],
)
def test_only_a_global_security_admin_creates_principals(actors, who, status):
    name = rand("svc")
    response = actors.as_(who).post("/api/v1/principals", {"name": name}, format="json")
    assert response.status_code == status
    assert ServicePrincipal.objects.filter(name=name).exists() == (status == 201)
    if status == 201:
        assert response.json()["client_secret"].startswith("kwp_")
        assert response["Cache-Control"] == "no-store"


@pytest.mark.parametrize(
    ("who", "status"), [("alice", 200), ("bob", 200), ("carol", 403), ("charlie", 403)]
)
def test_security_admins_read_principals(actors, who, status):
    principal, _ = make_principal()
    do_create_grant(principal, actors.tenant_a, "openai", ["release"], 60, actor=SYSTEM)
    assert actors.as_(who).get("/api/v1/principals").status_code == status
    response = actors.as_(who).get(f"/api/v1/principals/{principal.id}")
    assert response.status_code == status
    if status == 200:
        assert "client_secret" not in response.json()


@pytest.mark.parametrize("who", ["bob", "carol", "charlie", "principal"])
def test_only_a_global_security_admin_rotates_or_deletes_principals(actors, who):
    principal, _ = make_principal()
    before = (principal.key_id, principal.digest)
    client = actors.as_(who)
    assert client.post(f"/api/v1/principals/{principal.id}/rotate-secret").status_code == 403
    assert client.delete(f"/api/v1/principals/{principal.id}").status_code == 403
    principal.refresh_from_db()
    assert (principal.key_id, principal.digest) == before


def test_refusals_are_audited_with_actor_source_and_request_id(actors):
    response = actors.as_("carol").post(
        "/api/v1/tenants",
        {"slug": rand(), "name": "X"},
        format="json",
        HTTP_X_REQUEST_ID="req-denied-0001",
    )
    assert response.status_code == 403
    event = AuditEvent.objects.get(action="access.denied", request_id="req-denied-0001")
    assert event.outcome == "denied"
    assert event.actor_type == "user" and event.actor_id.startswith("carol")
    assert event.source_ip == "127.0.0.1"
    assert event.details["method"] == "POST"


def test_unauthenticated_requests_are_audited(db):
    from tests.factories import client

    response = client("kwa_" + "A" * 61).get("/api/v1/tenants", HTTP_X_REQUEST_ID="req-anon-00001")
    assert response.status_code == 401
    event = AuditEvent.objects.get(action="auth.failed", request_id="req-anon-00001")
    assert (event.actor_type, event.outcome) == ("anonymous", "denied")
    assert event.details["reason"] == "malformed"


def test_denials_about_a_tenant_land_in_that_tenants_chain(actors):
    slug_b = actors.tenant_b.slug
    assert actors.as_("bob").get(f"/api/v1/tenants/{slug_b}").status_code == 404
    assert (
        actors.as_("carol")
        .patch(f"/api/v1/tenants/{slug_b}", {"name": "x"}, format="json")
        .status_code
        == 403
    )
    denials = AuditEvent.objects.filter(action="access.denied", tenant=slug_b)
    assert [(e.actor_id.split("-")[0], e.details["status"]) for e in denials] == [
        ("bob", 404),
        ("carol", 403),
    ]
    assert all(e.chain == f"tenant:{slug_b}" and e.outcome == "denied" for e in denials)
    assert actors.as_("bob").get("/api/v1/tenants/never-existed").status_code == 404
    assert not AuditEvent.objects.filter(tenant="never-existed").exists()


def test_a_tenant_limited_admin_sees_only_the_principals_granted_on_its_tenants(actors):
    mine, _ = make_principal()
    theirs, _ = make_principal()
    idle, _ = make_principal()
    do_create_grant(mine, actors.tenant_a, "openai", ["release"], 60, actor=SYSTEM)
    do_create_grant(mine, actors.tenant_b, "openai", ["release"], 60, actor=SYSTEM)
    do_create_grant(theirs, actors.tenant_b, "openai", ["release"], 60, actor=SYSTEM)
    bob, alice = actors.as_("bob"), actors.as_("alice")
    names = [p["name"] for p in bob.get("/api/v1/principals").json()["results"]]
    assert names == [mine.name], "listed once, though granted twice"
    for hidden in (theirs, idle):
        assert bob.get(f"/api/v1/principals/{hidden.id}").status_code == 404
    every = {p["name"] for p in alice.get("/api/v1/principals").json()["results"]}
    assert {mine.name, theirs.name, idle.name} <= every
