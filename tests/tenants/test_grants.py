"""Who may grant what: security admins, within the tenants they cover."""

from __future__ import annotations

import pytest

from audit.models import AuditEvent
from tenants.models import Grant
from tests.factories import make_principal

pytestmark = pytest.mark.django_db


def _grant(api, principal, tenant, **extra):
    body = {
        "principal": str(principal.id),
        "tenant": tenant,
        "provider": "openai",
        "scopes": ["release"],
        "max_ttl_seconds": 600,
        **extra,
    }
    return api.post("/api/v1/grants", body, format="json")


@pytest.mark.parametrize(
    ("who", "tenant", "status"),
    [
        ("alice", "a", 201),
        ("alice", "*", 201),
        ("bob", "a", 201),
        ("bob", "b", 404),
        ("bob", "*", 403),
        ("carol", "a", 403),
        ("dave", "a", 403),
        ("charlie", "a", 403),
        ("principal", "a", 403),
        ("anonymous", "a", 401),
    ],
)
def test_who_may_grant(actors, who, tenant, status):
    principal, _ = make_principal()
    slug = {"a": actors.tenant_a.slug, "b": actors.tenant_b.slug, "*": "*"}[tenant]
    response = _grant(actors.as_(who), principal, slug)
    assert response.status_code == status, response.content
    assert Grant.objects.filter(principal=principal).exists() == (status == 201)
    if status == 201:
        assert response.json()["tenant"] == slug
        assert AuditEvent.objects.filter(action="grant.created").count() == 1


@pytest.mark.parametrize(
    "extra",
    [
        {"scopes": []},
        {"scopes": ["root"]},
        {"provider": "nope"},
        {"max_ttl_seconds": 5},
        {"max_ttl_seconds": 10**6},
        {"surprise": True},
    ],
)
def test_bad_grants_are_refused(actors, extra):
    principal, _ = make_principal()
    response = _grant(actors.as_("alice"), principal, actors.tenant_a.slug, **extra)
    assert response.status_code == 400
    assert not Grant.objects.exists()


def test_an_unknown_principal_is_404(actors):
    from types import SimpleNamespace

    response = _grant(
        actors.as_("alice"),
        SimpleNamespace(id="00000000-0000-0000-0000-000000000000"),
        actors.tenant_a.slug,
    )
    assert response.status_code == 404


def test_listing_and_deleting_are_scoped(actors):
    principal, _ = make_principal()
    a = _grant(actors.as_("alice"), principal, actors.tenant_a.slug).json()
    b = _grant(actors.as_("alice"), principal, actors.tenant_b.slug).json()
    star = _grant(actors.as_("alice"), principal, "*").json()
    assert {g["id"] for g in actors.as_("alice").get("/api/v1/grants").json()["results"]} == {
        a["id"],
        b["id"],
        star["id"],
    }
    assert {g["id"] for g in actors.as_("bob").get("/api/v1/grants").json()["results"]} == {a["id"]}
    assert {g["id"] for g in actors.as_("dave").get("/api/v1/grants").json()["results"]} == {
        a["id"]
    }
    assert actors.as_("charlie").get("/api/v1/grants").status_code == 403
    for grant in (b, star):
        assert actors.as_("bob").delete(f"/api/v1/grants/{grant['id']}").status_code == 404
        assert actors.as_("bob").get(f"/api/v1/grants/{grant['id']}").status_code == 404
    assert actors.as_("carol").delete(f"/api/v1/grants/{a['id']}").status_code == 403
    assert actors.as_("bob").delete(f"/api/v1/grants/{a['id']}").status_code == 204
    assert set(Grant.objects.values_list("id", flat=True)) == {
        __import__("uuid").UUID(b["id"]),
        __import__("uuid").UUID(star["id"]),
    }
