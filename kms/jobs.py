"""Background jobs on keys and tokens, as plain functions the Celery tasks call.

Each job takes identifiers, re-reads state under a row lock, and changes it only if the
state still calls for it: a redelivered or concurrent run does nothing twice.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from uuid import UUID

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audit.actors import Actor
from audit.recorder import record
from kms.backends import get_store
from kms.keys import do_validate_key
from kms.models import KeyStatus, KeyVersion, ProviderKey, ScopedToken, Stage, ValidationResult
from kms.ratelimit import purge_expired_counters
from kms.webhooks import notify

JOBS = Actor.system("jobs")


def check_key(key_id: UUID | str) -> ValidationResult | None:
    """Validate one active key with its provider (None if it is no longer active)."""
    key = ProviderKey.objects.select_related("tenant").filter(pk=key_id).first()
    if key is None or key.status != KeyStatus.ACTIVE:
        return None
    return do_validate_key(key, actor=JOBS, trigger="job")


def keys_to_check() -> list[tuple[str, str]]:
    """(key id, provider) of every active key."""
    rows = ProviderKey.objects.filter(status=KeyStatus.ACTIVE).values_list("id", "provider")
    return [(str(key_id), provider) for key_id, provider in rows]


def spread(count: int, interval_seconds: int, per_minute: int | None = None) -> list[float]:
    """Start offsets that spread `count` checks over the interval, with jitter, and never
    closer together than `per_minute` allows (the cap wins over the interval)."""
    if count == 0:
        return []
    step = interval_seconds / count
    if per_minute:
        step = max(step, 60 / per_minute)
    return [i * step + random.uniform(0, step) for i in range(count)]  # noqa: S311 - scheduling jitter


def schedule(keys: list[tuple[str, str]]) -> list[tuple[str, float]]:
    """When to check each key: spread over the interval, capped per provider."""
    by_provider: dict[str, list[str]] = {}
    for key_id, provider in keys:
        by_provider.setdefault(provider, []).append(key_id)
    plan: list[tuple[str, float]] = []
    for ids in by_provider.values():
        offsets = spread(
            len(ids), settings.KEY_CHECK_INTERVAL, settings.KEY_CHECKS_PER_PROVIDER_PER_MINUTE
        )
        plan.extend(zip(ids, offsets, strict=True))
    return sorted(plan, key=lambda item: item[1])


def backoff(retries: int, retry_after: float | None, cap: float = 3600) -> float:
    """Exponential backoff with full jitter, never sooner than the provider's Retry-After."""
    base = settings.JOB_RETRY_BASE_SECONDS
    delay = random.uniform(0, min(cap, base * 2**retries))  # noqa: S311 - jitter
    return max(delay, retry_after or 0.0)


def due_versions(now: datetime | None = None) -> list[int]:
    now = now or timezone.now()
    return list(
        KeyVersion.objects.filter(
            stage=Stage.PREVIOUS, retire_after__lte=now, destroyed_at=None
        ).values_list("id", flat=True)
    )


def retire_version(version_pk: int) -> bool:
    """Destroy one previous version whose grace period is over; False if there was nothing
    (left) to do."""
    with transaction.atomic(durable=True):
        version = (
            KeyVersion.objects.select_for_update()
            .select_related("key", "key__tenant")
            .filter(pk=version_pk)
            .first()
        )
        now = timezone.now()
        if (
            version is None
            or version.stage != Stage.PREVIOUS
            or version.destroyed_at is not None
            or version.retire_after is None
            or version.retire_after > now
        ):
            return False
        key = version.key
        get_store(key.store).destroy(key.store_path, [version.version])
        version.stage, version.destroyed_at = Stage.DESTROYED, now
        version.save(update_fields=["stage", "destroyed_at"])
        notify(
            "key.version_retired",
            {
                "tenant": key.tenant.slug,
                "key_id": str(key.id),
                "provider": key.provider,
                "version": version.version,
            },
        )
        record(
            "key.version_retired",
            actor=JOBS,
            tenant=key.tenant.slug,
            target=f"key:{key.id}",
            details={"version": version.version, "retire_after": version.retire_after.isoformat()},
        )
    return True


def flag_rotation_due(now: datetime | None = None) -> int:
    """Audit `key.rotation_due` once per key and rotation period; returns how many."""
    now = now or timezone.now()
    flagged = 0
    for key_id in ProviderKey.objects.filter(
        status=KeyStatus.ACTIVE, rotation_due_at__lte=now
    ).values_list("id", flat=True):
        with transaction.atomic(durable=True):
            key = ProviderKey.objects.select_for_update().select_related("tenant").get(pk=key_id)
            if (
                key.status != KeyStatus.ACTIVE
                or key.rotation_due_at is None
                or key.rotation_due_at > now
            ):
                continue
            notify(
                "key.rotation_due",
                {
                    "tenant": key.tenant.slug,
                    "key_id": str(key.id),
                    "provider": key.provider,
                    "label": key.label,
                    "rotation_due_at": key.rotation_due_at.isoformat(),
                },
            )
            record(
                "key.rotation_due",
                actor=JOBS,
                tenant=key.tenant.slug,
                target=f"key:{key.id}",
                details={
                    "rotation_due_at": key.rotation_due_at.isoformat(),
                    "rotation_period_days": key.rotation_period_days,
                },
            )
            # Next reminder one period later, unless the key is rotated first.
            key.rotation_due_at = now + timedelta(days=key.rotation_period_days)
            key.save(update_fields=["rotation_due_at", "updated_at"])
            flagged += 1
    return flagged


def purge_expired_tokens(older_than: timedelta = timedelta(hours=1)) -> int:
    """Delete token rows that expired (or were revoked) more than `older_than` ago, and
    database rate-limit counters whose window has passed. Audit events are never touched."""
    cutoff = timezone.now() - older_than
    deleted, _ = ScopedToken.objects.filter(expires_at__lt=cutoff).delete()
    revoked, _ = ScopedToken.objects.filter(revoked_at__lt=cutoff).delete()
    purge_expired_counters()
    return deleted + revoked
