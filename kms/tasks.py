"""Celery tasks: stable names, identifiers in, nothing secret out (results are ignored)."""

from __future__ import annotations

from typing import Any

from celery import shared_task
from django.conf import settings
from django.db import InterfaceError, OperationalError
from kombu.exceptions import OperationalError as BrokerError

from kms import jobs
from kms.providers import TRANSIENT, CheckOutcome
from stores.exceptions import StoreUnavailable

# A database or broker that did not answer: retried with backoff, never longer than a
# message may wait unacknowledged in the broker (KEYWARD_BROKER_VISIBILITY_TIMEOUT).
TRANSIENT_ERRORS = (OperationalError, InterfaceError, BrokerError)
RETRY_TRANSIENT: dict[str, Any] = {
    "autoretry_for": TRANSIENT_ERRORS,
    "retry_backoff": settings.JOB_RETRY_BASE_SECONDS,
    "retry_backoff_max": settings.JOB_MAX_COUNTDOWN,
    "retry_jitter": True,
    "max_retries": 8,
}
# Steps that call the secret store: a store that cannot answer is retried too.
RETRY_STORE: dict[str, Any] = {
    **RETRY_TRANSIENT,
    "autoretry_for": (*TRANSIENT_ERRORS, StoreUnavailable),
}


@shared_task(name="keyward.kms.check_key", bind=True, acks_late=True, **RETRY_TRANSIENT)
def check_key(self: Any, key_id: str) -> None:
    """Check one key; a transient answer is retried later and never changes its status."""
    checked = jobs.check_key(key_id)
    if checked is None or CheckOutcome(checked.result.result) not in TRANSIENT:
        return
    if self.request.retries < self.max_retries:
        raise self.retry(countdown=jobs.backoff(self.request.retries, checked.retry_after))


@shared_task(name="keyward.kms.schedule_key_checks", acks_late=True, **RETRY_TRANSIENT)
def schedule_key_checks() -> None:
    """Each dispatch tick: enqueue the checks that are due, spread over the tick and
    capped per provider (no check waits in the broker longer than a tick)."""
    for key_id, offset in jobs.schedule(jobs.claim_due_checks()):
        check_key.apply_async((key_id,), countdown=offset)


@shared_task(name="keyward.kms.retire_versions", acks_late=True, **RETRY_TRANSIENT)
def retire_versions() -> None:
    """Destroy previous versions past their grace, and finish the destruction of revoked
    keys that the store could not destroy when they were revoked."""
    for version_pk in jobs.due_versions():
        retire_version.delay(version_pk)
    for key_id in jobs.keys_awaiting_destruction():
        destroy_key_secrets.delay(key_id)


@shared_task(name="keyward.kms.destroy_key_secrets", acks_late=True, **RETRY_TRANSIENT)
def destroy_key_secrets(key_id: str) -> None:
    """One attempt; the next sweep tries again while the store cannot answer."""
    jobs.destroy_key_secrets(key_id)


@shared_task(
    name="keyward.kms.retire_version",
    acks_late=True,
    max_retries=10,
    autoretry_for=(Exception,),
    retry_backoff=30,
    retry_backoff_max=settings.JOB_MAX_COUNTDOWN,
    retry_jitter=True,
)
def retire_version(version_pk: int) -> None:
    jobs.retire_version(version_pk)


@shared_task(name="keyward.kms.flag_rotation_due", acks_late=True, **RETRY_TRANSIENT)
def flag_rotation_due() -> None:
    jobs.flag_rotation_due()


@shared_task(name="keyward.kms.purge_expired_tokens", acks_late=True, **RETRY_TRANSIENT)
def purge_expired_tokens() -> None:
    jobs.purge_expired_tokens()


@shared_task(name="keyward.kms.summarise_auth_failures", acks_late=True, **RETRY_TRANSIENT)
def summarise_auth_failures() -> None:
    jobs.summarise_auth_failures()


@shared_task(name="keyward.kms.advance_rotation", bind=True, acks_late=True, **RETRY_STORE)
def advance_rotation(self: Any, rotation_id: str) -> None:
    """Run a staged rotation's next steps; a transient provider answer is tried again
    later (the `resume_rotations` sweep takes it up once these retries are spent)."""
    advanced = jobs.advance_rotation(rotation_id)
    if advanced.held and advanced.retry_after is not None:
        # Another worker holds the step: look again once its lease ends (a wait, not a
        # failure, so it spends none of the retries).
        countdown = min(advanced.retry_after + 0.5, settings.JOB_MAX_COUNTDOWN)
        advance_rotation.apply_async((rotation_id,), countdown=countdown)
    elif advanced.retry_after is not None and self.request.retries < self.max_retries:
        raise self.retry(countdown=jobs.backoff(self.request.retries, advanced.retry_after))


@shared_task(name="keyward.kms.resume_rotations", acks_late=True, **RETRY_TRANSIENT)
def resume_rotations() -> None:
    """Hand stalled rotations, and pending versions left by ended ones, to a worker."""
    for rotation_id in jobs.stalled_rotations():
        advance_rotation.delay(rotation_id)


@shared_task(name="keyward.kms.advance_move", bind=True, acks_late=True, **RETRY_STORE)
def advance_move(self: Any, move_id: str) -> None:
    """Run a move's next steps; a store that cannot answer is tried again later (the
    `resume_moves` sweep takes it up once these retries are spent). Waiting for a
    rotation of the tenant's keys spends no retry."""
    advanced = jobs.advance_move(move_id)
    if advanced.retry_after is not None:
        countdown = min(advanced.retry_after + 0.5, settings.JOB_MAX_COUNTDOWN)
        advance_move.apply_async((move_id,), countdown=countdown)


@shared_task(name="keyward.kms.resume_moves", acks_late=True, **RETRY_TRANSIENT)
def resume_moves() -> None:
    """Hand stalled moves, and the copies left by failed ones, to a worker."""
    for move_id in jobs.stalled_moves():
        advance_move.delay(move_id)
