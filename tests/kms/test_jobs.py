"""Background jobs, called directly: idempotent, only `invalid` changes a status."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest
from django.utils import timezone

from audit.models import AuditEvent
from kms import jobs
from kms.actions import keys
from kms.models import KeyVersion, ProviderKey, ScopedToken
from stores.registry import get_store
from tests import provider_stub as docs
from tests.kms.helpers import openai_key
from tests.kms.world import SYSTEM

pytestmark = pytest.mark.django_db


def _rotated(world, grace: int):
    return keys.do_rotate_key(
        world.key_a, secret=openai_key(), grace_period_seconds=grace, validate=False, actor=SYSTEM
    )


def test_retirement_destroys_previous_versions_after_the_grace_once(world):
    key = _rotated(world, grace=0)
    due = jobs.due_versions()
    assert len(due) == 1
    assert jobs.retire_version(due[0]) is True
    assert jobs.retire_version(due[0]) is False, "a redelivered task does nothing"
    old = KeyVersion.objects.get(pk=due[0])
    assert old.stage == "destroyed" and old.destroyed_at is not None
    assert [v.destroyed for v in get_store().versions(key.store_path)] == [True, False]
    assert KeyVersion.objects.filter(key=key, stage="current").count() == 1
    assert AuditEvent.objects.filter(action="key.version_retired").count() == 1


def test_retirement_waits_for_the_grace_period(world):
    _rotated(world, grace=3600)
    assert jobs.due_versions() == []
    previous = KeyVersion.objects.get(key=world.key_a, stage="previous")
    assert jobs.retire_version(previous.pk) is False
    assert jobs.due_versions(timezone.now() + timedelta(hours=2)) == [previous.pk]


def test_rotation_due_is_flagged_once_per_period(world):
    ProviderKey.objects.filter(pk=world.key_a.pk).update(
        rotation_due_at=timezone.now() - timedelta(days=1)
    )
    assert jobs.flag_rotation_due() == 1
    assert jobs.flag_rotation_due() == 0
    event = AuditEvent.objects.get(action="key.rotation_due")
    assert event.target == f"key:{world.key_a.id}"


def test_expired_tokens_are_purged_and_audit_events_kept(world):
    world.token()
    world.token()
    before = set(AuditEvent.objects.values_list("id", flat=True))
    first = ScopedToken.objects.order_by("created_at").first()
    assert first is not None
    ScopedToken.objects.filter(pk=first.pk).update(expires_at=timezone.now() - timedelta(hours=2))
    assert jobs.purge_expired_tokens() == 1
    assert ScopedToken.objects.count() == 1
    after = AuditEvent.objects.exclude(id__in=before)
    assert before <= set(AuditEvent.objects.values_list("id", flat=True)), "none is touched"
    assert [(e.action, e.details["expired"]) for e in after] == [("token.purged", 1)]
    assert jobs.purge_expired_tokens() == 0
    assert AuditEvent.objects.exclude(id__in=before).count() == 1, "nothing purged, no event"


@pytest.mark.parametrize(
    ("status", "body", "final"),
    [
        (401, docs.OPENAI_INVALID, "invalid"),
        (429, docs.OPENAI_RATE, "active"),
        (529, {}, "active"),
        (500, {}, "active"),
        (429, docs.OPENAI_QUOTA, "active"),
    ],
)
def test_a_check_changes_the_status_only_for_an_invalid_key(
    world, provider_stub, status, body, final
):
    provider_stub.answer(status, body)
    result = jobs.check_key(world.key_a.id)
    assert result is not None and result.result.trigger == "job"
    world.key_a.refresh_from_db()
    assert world.key_a.status == final


def test_a_timeout_never_invalidates(world, provider_stub, settings):
    settings.PROVIDER_TIMEOUT_MS = 200
    provider_stub.answer(200, delay=1)
    result = jobs.check_key(world.key_a.id)
    assert result is not None and result.result.result == "provider_unavailable"
    world.key_a.refresh_from_db()
    assert world.key_a.status == "active"


def test_backoff_honours_retry_after_and_grows(settings):
    settings.JOB_RETRY_BASE_SECONDS = 1
    assert all(jobs.backoff(0, 17) >= 17 for _ in range(50))
    assert all(jobs.backoff(3, None) <= 8 for _ in range(50))
    spread = jobs.spread(10, 600)
    assert len(spread) == 10 and all(0 <= s <= 600 for s in spread)


def test_each_notifying_job_queues_one_delivery_per_webhook(world, settings, provider_stub):
    from notify.models import WebhookDelivery

    settings.WEBHOOKS = [
        {"url": "https://hooks.example/a", "secret": "x" * 20},
        {"url": "https://hooks.example/b", "secret": "y" * 20, "events": ["key.invalid"]},
    ]
    ProviderKey.objects.filter(pk=world.key_a.pk).update(
        rotation_due_at=timezone.now() - timedelta(days=1)
    )
    jobs.flag_rotation_due()
    _rotated(world, grace=0)
    jobs.retire_version(jobs.due_versions()[0])
    provider_stub.answer(401, docs.OPENAI_INVALID)
    jobs.check_key(world.key_a.id)
    jobs.check_key(world.key_a.id)  # already invalid: no second notification
    sent = sorted(WebhookDelivery.objects.values_list("event", "url"))
    assert sent == [
        ("key.invalid", "https://hooks.example/a"),
        ("key.invalid", "https://hooks.example/b"),
        ("key.rotation_due", "https://hooks.example/a"),
        ("key.version_retired", "https://hooks.example/a"),
    ]
    for delivery in WebhookDelivery.objects.all():
        assert "sk-proj-" not in repr(delivery.payload)


def test_checks_are_capped_per_provider(settings):
    settings.KEY_CHECK_TICK = 60
    settings.KEY_CHECKS_PER_PROVIDER_PER_MINUTE = 10
    keys_ = [(f"o{i}", "openai") for i in range(20)] + [(f"a{i}", "anthropic") for i in range(2)]
    plan = dict(jobs.schedule(keys_))
    openai = sorted(plan[f"o{i}"] for i in range(20))
    assert all(later - earlier > 0 for earlier, later in itertools.pairwise(openai))
    assert openai[-1] >= 19 * 6, "20 openai checks at 10 a minute take at least 114 seconds"
    assert max(plan["a0"], plan["a1"]) <= 60, "another provider is not held back"


@pytest.mark.parametrize(("threshold", "final"), [(0, "active"), (3, "invalid")])
def test_consecutive_permission_failures_mark_a_key_invalid_only_when_configured(
    world, provider_stub, settings, threshold, final
):
    settings.INVALID_AFTER_PERMISSION_FAILURES = threshold
    provider_stub.answer(403, docs.OPENAI_FORBIDDEN)
    for _ in range(2):
        jobs.check_key(world.key_a.id)
        world.key_a.refresh_from_db()
        assert world.key_a.status == "active"
    jobs.check_key(world.key_a.id)
    world.key_a.refresh_from_db()
    assert world.key_a.status == final


def test_due_checks_are_claimed_once_and_come_back_after_the_interval(world, settings):
    from datetime import timedelta

    from django.utils import timezone

    settings.KEY_CHECK_INTERVAL = 3600
    settings.KEY_CHECK_TICK = 60
    settings.KEY_CHECKS_PER_PROVIDER_PER_MINUTE = 60
    now = timezone.now()
    first = sorted(key_id for key_id, _ in jobs.claim_due_checks(now))
    assert first == sorted([str(world.key_a.id), str(world.key_b.id)])
    assert jobs.claim_due_checks(now) == [], "claimed: not enqueued twice"
    later = now + timedelta(seconds=3600 * 1.1 + 1)
    assert len(jobs.claim_due_checks(later)) == 2, "due again after the interval"


def test_a_dispatch_claims_no_more_than_the_cap_and_no_countdown_outlives_the_broker(
    world, settings
):
    settings.KEY_CHECK_TICK = 60
    settings.KEY_CHECKS_PER_PROVIDER_PER_MINUTE = 1
    claimed = jobs.claim_due_checks()
    assert len(claimed) == 1, "two openai keys due, one a minute allowed"
    assert all(offset <= 60 for _, offset in jobs.schedule(claimed))
    assert all(
        jobs.backoff(retries, retry_after) <= settings.JOB_MAX_COUNTDOWN
        for retries in range(12)
        for retry_after in (None, 86400.0)
    )
    assert settings.JOB_MAX_COUNTDOWN < settings.BROKER_VISIBILITY_TIMEOUT
