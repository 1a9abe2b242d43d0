"""Auditors search the log; a tenant-limited auditor sees only their tenants; every read is
itself audited; the HMAC look-up finds events about a secret."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from audit.models import AuditEvent
from audit.sequencer import integrate_all
from tests.kms.helpers import onboard, openai_key

pytestmark = pytest.mark.django_db


def _events(api, **params):
    response = api.get("/api/v1/audit/events", params)
    assert response.status_code == 200, response.content
    return response.json()


@pytest.mark.parametrize(
    ("who", "status"),
    [
        ("carol", 200),
        ("dave", 200),
        ("alice", 403),
        ("bob", 403),
        ("charlie", 403),
        ("principal", 403),
        ("anonymous", 401),
    ],
)
def test_only_auditors_read_the_log(actors, who, status):
    assert actors.as_(who).get("/api/v1/audit/events").status_code == status


def test_a_tenant_limited_auditor_sees_only_their_tenants(actors):
    everything = _events(actors.as_("carol"), limit=1000)["results"]
    tenants = {e["tenant"] for e in everything}
    assert {actors.tenant_a.slug, actors.tenant_b.slug, ""} <= tenants
    limited = _events(actors.as_("dave"), limit=1000)["results"]
    assert {e["tenant"] for e in limited} == {actors.tenant_a.slug}
    denials = AuditEvent.objects.filter(action="access.denied", tenant=actors.tenant_b.slug)
    before = denials.count()
    hidden = actors.as_("dave").get("/api/v1/audit/events", {"tenant": actors.tenant_b.slug})
    missing = actors.as_("dave").get("/api/v1/audit/events", {"tenant": "no-such-tenant"})
    assert hidden.status_code == missing.status_code == 404
    assert hidden.json()["error"]["code"] == missing.json()["error"]["code"]
    assert denials.count() == before + 1, "the probe of another tenant is audited there"
    export = actors.as_("dave").get("/api/v1/audit/export", {"tenant": actors.tenant_b.slug})
    assert export.status_code == 404
    assert denials.count() == before + 2


def test_filters_and_cursor_pagination(actors):
    for n in range(5):
        actors.as_("alice").patch(
            f"/api/v1/tenants/{actors.tenant_a.slug}", {"name": f"A{n}"}, format="json"
        )
    api = actors.as_("carol")
    first = _events(api, tenant=actors.tenant_a.slug, action="tenant.updated", limit=2)
    assert [e["details"]["changes"]["name"][1] for e in first["results"]] == ["A0", "A1"]
    second = api.get(first["next"]).json()
    assert [e["details"]["changes"]["name"][1] for e in second["results"]] == ["A2", "A3"]
    assert all(e["actor"]["type"] == "user" for e in first["results"])
    alice = first["results"][0]["actor"]["id"]
    assert (
        len(_events(api, actor=f"user:{alice}", action="tenant.updated", limit=100)["results"]) == 5
    )
    future = (timezone.now() + timedelta(hours=1)).isoformat()
    assert _events(api, since=future)["results"] == []
    assert len(_events(api, until=future, action="tenant.updated")["results"]) == 5
    assert _events(api, outcome="denied", action="tenant.updated")["results"] == []


@pytest.mark.parametrize(
    "params",
    [
        {"since": "yesterday"},
        {"until": "2026-01-01T00:00:00"},
        {"outcome": "maybe"},
        {"colour": "red"},
    ],
)
def test_bad_filters_are_refused(actors, params):
    response = actors.as_("carol").get("/api/v1/audit/events", params)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid"


def test_every_search_is_itself_audited(actors):
    before = AuditEvent.objects.filter(action="audit.searched").count()
    _events(actors.as_("carol"), action="tenant.created")
    event = AuditEvent.objects.filter(action="audit.searched").order_by("-occurred_at").first()
    assert event is not None
    assert AuditEvent.objects.filter(action="audit.searched").count() == before + 1
    assert event.details["filters"] == {"action": "tenant.created"}
    assert event.actor_id.startswith("carol")


def test_the_hmac_look_up_finds_events_about_a_secret(actors, provider_stub, settings):
    settings.SECRET_STORES = {"default": {"backend": "local"}}
    secret = openai_key()
    key = onboard(actors.as_("alice"), actors.tenant_a.slug, secret).json()
    response = actors.as_("carol").post("/api/v1/audit/hmac", {"value": secret}, format="json")
    assert response.status_code == 200
    digest = response.json()["hmac"]
    assert digest.startswith("hmac-sha256:") and digest == key["fingerprint"]
    found = [
        e
        for e in _events(actors.as_("carol"), action="key.created", limit=100)["results"]
        if e["details"].get("fingerprint") == digest
    ]
    assert [e["target"] for e in found] == [f"key:{key['id']}"]
    lookup = AuditEvent.objects.get(action="audit.hmac_lookup")
    assert secret not in repr(lookup.details)
    assert (
        actors.as_("alice").post("/api/v1/audit/hmac", {"value": secret}, format="json").status_code
        == 403
    )


def test_the_hmac_command_reads_standard_input(monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("sk-proj-value\n"))
    out = io.StringIO()
    call_command("audit_hmac", stdout=out)
    from audit.hmac import audit_hmac

    assert out.getvalue().strip() == audit_hmac("sk-proj-value")


def test_no_endpoint_can_change_or_delete_an_event(actors):
    integrate_all()
    event = AuditEvent.objects.select_related("link").first()
    assert event is not None
    api = actors.as_("carol")
    for method in ("put", "patch", "delete", "post"):
        response = getattr(api, method)("/api/v1/audit/events", {}, format="json")
        assert response.status_code == 405
    assert AuditEvent.objects.get(pk=event.pk).link.hash == event.link.hash
