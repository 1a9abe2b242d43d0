"""Scheduled rotations at the provider, against a stub of OpenAI's Administration API:
an attempt that failed or was cancelled is tried again the next day while the key stays
due, never twice in one day, each ended attempt reminding a person once, and a rotation
a person started keeping priority."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.utils import timezone

from audit.models import AuditEvent
from kms import jobs
from kms.models import KeyVersion, ProviderKey, Rotation, Stage
from notify.models import WebhookDelivery
from tests.admin_stubs.openai import FORBIDDEN, RATE_LIMITED
from tests.provider_stub import Reply

pytestmark = pytest.mark.django_db

# Each test runs the schedule on days of its own, after the key fell due.
DUE = timezone.now().replace(microsecond=0) - timedelta(days=30)
DAY_ONE = datetime(DUE.year, DUE.month, DUE.day, 9, tzinfo=UTC) + timedelta(days=10)
DAY_TWO = DAY_ONE + timedelta(days=1)


@pytest.fixture
def due(linked: Any) -> Any:
    _, key, _, stub = linked
    ProviderKey.objects.filter(pk=key.pk).update(rotation_due_at=DUE)
    key.refresh_from_db()
    return key, stub


def _attempts(key: ProviderKey) -> list[Rotation]:
    return list(Rotation.objects.filter(key=key).order_by("created_at"))


def _reminders(key: ProviderKey) -> list[Any]:
    events = AuditEvent.objects.filter(action="key.rotation_due", target=f"key:{key.pk}")
    return sorted(e.details.get("rotation") for e in events)


def _refused_at_provider(stub: Any, rotation: Rotation) -> None:
    stub.reply = Reply(403, FORBIDDEN)
    assert jobs.advance_rotation(rotation.pk).state == "failed"


def test_an_attempt_the_provider_refused_is_tried_again_the_next_day_and_succeeds(due):
    key, stub = due
    assert jobs.flag_rotation_due(DAY_ONE) == 1
    [first] = _attempts(key)
    _refused_at_provider(stub, first)
    assert jobs.flag_rotation_due(DAY_ONE + timedelta(hours=1)) == 1  # the reminder
    assert ProviderKey.objects.get(pk=key.pk).rotation_due_at == DUE, "not rotated: still due"
    assert jobs.flag_rotation_due(DAY_TWO) == 1
    first_again, second = _attempts(key)
    assert first_again.pk == first.pk and second.state == "creating"
    assert second.client_request_token == jobs.attempt_token(key, DAY_TWO)
    assert jobs.advance_rotation(second.pk).state == "retiring"
    current = KeyVersion.objects.get(key=key, stage=Stage.CURRENT)
    assert current.version == 2 and current.upstream_id
    rotated = ProviderKey.objects.get(pk=key.pk)
    assert rotated.rotation_due_at is not None and rotated.rotation_due_at > DAY_TWO
    assert jobs.flag_rotation_due(DAY_TWO + timedelta(hours=1)) == 0
    assert _reminders(key) == [str(first.pk)]


def test_a_cancelled_attempt_is_tried_again_the_next_day(due, world):
    key, stub = due
    stub.reply = Reply(429, RATE_LIMITED, {"Retry-After": "9"})
    jobs.flag_rotation_due(DAY_ONE)
    [first] = _attempts(key)
    assert jobs.advance_rotation(first.pk).state == "creating"
    url = f"/api/v1/tenants/{key.tenant.slug}/keys/{key.pk}/rotations/{first.pk}/cancel"
    assert world.actors.as_("alice").post(url).status_code == 200
    assert jobs.flag_rotation_due(DAY_ONE + timedelta(minutes=5)) == 1
    assert jobs.flag_rotation_due(DAY_TWO) == 1
    assert [a.state for a in _attempts(key)] == ["cancelled", "creating"]
    assert _reminders(key) == [str(first.pk)]


def test_running_the_job_again_the_same_day_starts_no_second_attempt(due):
    key, stub = due
    jobs.flag_rotation_due(DAY_ONE)
    _refused_at_provider(stub, _attempts(key)[0])
    late_that_day = DAY_ONE.replace(hour=23, minute=59)
    runs = [jobs.flag_rotation_due(DAY_ONE + timedelta(hours=h)) for h in (1, 2, 6)]
    runs.append(jobs.flag_rotation_due(late_that_day))
    assert runs == [1, 0, 0, 0], "one reminder, and nothing else that day"
    assert len(_attempts(key)) == 1
    assert jobs.flag_rotation_due(late_that_day + timedelta(minutes=2)) == 1
    assert len(_attempts(key)) == 2, "the next day, the next attempt"


def test_each_failed_attempt_reminds_a_person_once(due, settings):
    key, stub = due
    settings.WEBHOOKS = [{"url": "https://hooks.example/a", "secret": "x" * 20}]
    jobs.flag_rotation_due(DAY_ONE)
    [first] = _attempts(key)
    _refused_at_provider(stub, first)
    # The job's next run is the next day: it reminds of the failure and tries again.
    assert jobs.flag_rotation_due(DAY_TWO) == 1
    second = _attempts(key)[1]
    _refused_at_provider(stub, second)
    for hour in (1, 2, 3):
        jobs.flag_rotation_due(DAY_TWO + timedelta(hours=hour))
    assert _reminders(key) == sorted([str(first.pk), str(second.pk)])
    sent = WebhookDelivery.objects.filter(event="key.rotation_due")
    assert sorted(d.payload["rotation"] for d in sent) == _reminders(key)
    assert ProviderKey.objects.get(pk=key.pk).rotation_due_at == DUE, "it stays due"


def test_a_rotation_a_person_started_keeps_priority_over_the_schedule(due, world):
    key, stub = due
    url = f"/api/v1/tenants/{key.tenant.slug}/keys/{key.pk}/rotations"
    started = world.actors.as_("alice").post(url, {}, format="json")
    assert started.status_code == 202, started.content
    stub.reply = Reply(429, RATE_LIMITED, {"Retry-After": "9"})
    assert jobs.advance_rotation(started.json()["id"]).state == "creating"  # it waits
    assert jobs.flag_rotation_due(DAY_ONE) == 0
    assert [str(a.pk) for a in _attempts(key)] == [started.json()["id"]]
    assert _reminders(key) == []
