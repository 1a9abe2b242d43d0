"""Celery tasks: stable names, identifiers in, nothing secret out (results are ignored)."""

from __future__ import annotations

from typing import Any

from celery import shared_task
from django.conf import settings

from kms import jobs
from kms.providers import TRANSIENT, Outcome


@shared_task(name="keyward.kms.check_key", bind=True, acks_late=True, max_retries=6)
def check_key(self: Any, key_id: str) -> None:
    """Check one key; a transient answer is retried later and never changes its status."""
    result = jobs.check_key(key_id)
    if result is None or Outcome(result.result) not in TRANSIENT:
        return
    if self.request.retries < self.max_retries:
        retry_after = getattr(result, "retry_after", None)
        raise self.retry(countdown=jobs.backoff(self.request.retries, retry_after))


@shared_task(name="keyward.kms.schedule_key_checks", acks_late=True)
def schedule_key_checks() -> None:
    """Spread a check of every active key over the check interval, capped per provider."""
    for key_id, offset in jobs.schedule(jobs.keys_to_check()):
        check_key.apply_async((key_id,), countdown=offset)


@shared_task(name="keyward.kms.retire_versions", acks_late=True)
def retire_versions() -> None:
    for version_pk in jobs.due_versions():
        retire_version.delay(version_pk)


@shared_task(
    name="keyward.kms.retire_version",
    acks_late=True,
    max_retries=10,
    autoretry_for=(Exception,),
    retry_backoff=30,
    retry_backoff_max=3600,
    retry_jitter=True,
)
def retire_version(version_pk: int) -> None:
    jobs.retire_version(version_pk)


@shared_task(name="keyward.kms.flag_rotation_due", acks_late=True)
def flag_rotation_due() -> None:
    jobs.flag_rotation_due()


@shared_task(name="keyward.kms.purge_expired_tokens", acks_late=True)
def purge_expired_tokens() -> None:
    jobs.purge_expired_tokens()


@shared_task(name="keyward.kms.rewrap_local_store", acks_late=True)
def rewrap_local_store() -> None:
    """Re-wrap local-store data keys under the newest master key (no-op without one)."""
    from kms.backends.local import rewrap_all

    if settings.MASTER_KEYS:
        rewrap_all()


class WebhookNotDelivered(Exception):
    """The receiver did not answer 2xx; the task retries with backoff."""


@shared_task(
    name="keyward.kms.deliver_webhook",
    acks_late=True,
    max_retries=8,
    autoretry_for=(WebhookNotDelivered,),
    retry_backoff=5,
    retry_backoff_max=3600,
    retry_jitter=True,
)
def deliver_webhook(delivery_id: str) -> None:
    from kms import webhooks

    if not webhooks.deliver(delivery_id):
        raise WebhookNotDelivered()


@shared_task(name="keyward.kms.deliver_pending_webhooks", acks_late=True)
def deliver_pending_webhooks() -> None:
    from kms import webhooks

    for delivery_id in webhooks.pending():
        deliver_webhook.delay(delivery_id)
