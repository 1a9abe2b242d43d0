"""Admin credentials in the periodic checks, against a stub of OpenAI's Administration
API: checked with the admin API (never the provider's key check), recorded as a person's
validation is, a transient answer never marking one invalid, and an invalid one keeping
the schedule from starting the rotations that depend on it."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from audit.models import AuditEvent
from kms import jobs
from kms.models import ProviderKey, Rotation
from notify.models import WebhookDelivery
from tests.admin_stubs.openai import INVALID_ADMIN_KEY, RATE_LIMITED
from tests.provider_stub import Reply

pytestmark = pytest.mark.django_db


def _checks(key_id: str) -> list[tuple[str, dict[str, Any]]]:
    """The outcome and details of each periodic check of the key (`key.validated`)."""
    events = AuditEvent.objects.filter(action="key.validated", target=f"key:{key_id}")
    return [(e.outcome, e.details) for e in events if e.details.get("trigger") == "job"]


def _shown(world: Any, key_id: str) -> dict[str, Any]:
    slug = world.actors.tenant_a.slug
    response = world.actors.as_("alice").get(f"/api/v1/tenants/{slug}/keys/{key_id}")
    assert response.status_code == 200, response.content
    return dict(response.json())


def test_a_due_admin_credential_is_claimed_with_the_keys(linked, settings):
    world, key, admin, _ = linked
    settings.KEY_CHECK_TICK, settings.KEY_CHECKS_PER_PROVIDER_PER_MINUTE = 60, 60
    claimed = {key_id for key_id, _ in jobs.claim_due_checks()}
    assert {admin["id"], str(key.pk), str(world.key_a.pk)} <= claimed
    assert jobs.claim_due_checks() == [], "claimed once"


def test_the_periodic_check_asks_the_admin_api_and_records_a_valid_credential(
    linked, provider_stub
):
    _, _, admin, stub = linked
    asked, key_checks = len(stub.seen), len(provider_stub.seen)
    checked = jobs.check_key(admin["id"])
    assert checked is not None
    assert (checked.result.result, checked.result.trigger) == ("valid", "job")
    assert len(stub.seen) == asked + 1 and stub.seen[-1].path.endswith("/service_accounts")
    assert len(provider_stub.seen) == key_checks, "not the provider's key check"
    [(outcome, details)] = _checks(admin["id"])
    assert outcome == "success"
    assert details["result"] == "valid" and details["trigger"] == "job"
    assert details["status"] == ["active", "active"]
    credential = ProviderKey.objects.get(pk=admin["id"])
    assert credential.status == "active" and credential.last_validation == "ok"


def test_a_refused_admin_credential_becomes_invalid_and_shows_so(linked, settings):
    world, _, admin, stub = linked
    settings.WEBHOOKS = [{"url": "https://hooks.example/a", "secret": "x" * 20}]
    stub.reply = Reply(401, INVALID_ADMIN_KEY)
    checked = jobs.check_key(admin["id"])
    assert checked is not None and checked.result.result == "invalid"
    shown = _shown(world, admin["id"])
    assert (shown["status"], shown["last_validation"]) == ("invalid", "invalid")
    [(outcome, details)] = _checks(admin["id"])
    assert details["status"] == ["active", "invalid"] and outcome == "success"
    assert list(WebhookDelivery.objects.values_list("event", flat=True)) == ["key.invalid"]
    assert jobs.check_key(admin["id"]) is None, "no longer active: not checked again"


def test_a_rate_limited_admin_credential_stays_active(linked):
    world, _, admin, stub = linked
    stub.reply = Reply(429, RATE_LIMITED, {"Retry-After": "9"})
    checked = jobs.check_key(admin["id"])
    assert checked is not None and checked.result.result == "provider_unavailable"
    assert checked.retry_after == 9, "the task waits as the provider asked"
    assert _shown(world, admin["id"])["status"] == "active"
    [(outcome, details)] = _checks(admin["id"])
    assert outcome == "error" and details["status"] == ["active", "active"]


def test_a_due_key_whose_admin_credential_is_invalid_is_flagged_not_rotated(linked):
    _, key, admin, stub = linked
    stub.reply = Reply(401, INVALID_ADMIN_KEY)
    jobs.check_key(admin["id"])
    asked = len(stub.seen)
    ProviderKey.objects.filter(pk=key.pk).update(rotation_due_at=timezone.now() - timedelta(days=1))
    assert jobs.flag_rotation_due() == 1
    assert not Rotation.objects.filter(key=key).exists()
    assert len(stub.seen) == asked, "the admin API was not called"
    reminder = AuditEvent.objects.get(action="key.rotation_due", target=f"key:{key.pk}")
    assert reminder.actor_id == "jobs"
