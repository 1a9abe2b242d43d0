"""Background jobs on keys and tokens: what is due and when, and the calls into the
actions, which re-read state and change it only if it still calls for it, so a redelivered
or concurrent run does nothing twice.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from uuid import UUID

from django.conf import settings
from django.db.models import Exists, F, OuterRef, Q
from django.utils import timezone

from audit.actors import Actor
from audit.models import Outcome
from audit.recorder import record
from kms.actions.keys import KeyCheck, do_validate_key
from kms.actions.moves import MoveAdvanced, do_advance_move
from kms.actions.retirement import do_destroy_key_secrets, do_flag_rotation_due, do_retire_version
from kms.actions.rotations import (
    Advanced,
    RotationRequest,
    do_advance_rotation,
    do_start_rotation,
)
from kms.actions.tokens import do_purge_expired_tokens
from kms.exceptions import KeyNotActive, RequestTokenReused, RotationInProgress, TenantMoving
from kms.models import (
    ABANDONED_MOVE,
    RUNNING_MOVE,
    RUNNING_ROTATION,
    KeyStatus,
    KeyVersion,
    ProviderKey,
    Rotation,
    RotationState,
    Stage,
    TenantMove,
)
from kms.providers.admin import admin_adapter
from kms.ratelimit import take_finished_auth_failures
from stores.exceptions import StoreUnavailable

JOBS = Actor.system("jobs")


def check_key(key_id: UUID | str) -> KeyCheck | None:
    """Validate one active key with its provider, or an admin credential with its admin
    API, as a person's validation does (None if it is no longer active)."""
    key = ProviderKey.objects.select_related("tenant").filter(pk=key_id).first()
    if key is None or key.status != KeyStatus.ACTIVE:
        return None
    return do_validate_key(key, actor=JOBS, trigger="job")


def claim_due_checks(now: datetime | None = None) -> list[tuple[str, str]]:
    """(key id, provider) of the active keys whose periodic check is due, at most what
    each provider's cap allows in one dispatch tick. Each is claimed with a
    compare-and-set that also sets its next check (the interval, with 10 % jitter), so two
    dispatchers never enqueue the same key and no check waits in the broker for long."""
    now = now or timezone.now()
    cap = settings.KEY_CHECKS_PER_PROVIDER_PER_MINUTE * max(1, settings.KEY_CHECK_TICK // 60)
    due = (
        # Admin credentials too, each with its admin API's own check.
        ProviderKey.objects.filter(status=KeyStatus.ACTIVE)
        .filter(Q(next_check_at__isnull=True) | Q(next_check_at__lte=now))
        .order_by(F("next_check_at").asc(nulls_first=True))
        .values_list("id", "provider", "next_check_at")
    )
    claimed: list[tuple[str, str]] = []
    per_provider: dict[str, int] = {}
    for key_id, provider, seen in due:
        if per_provider.get(provider, 0) >= cap:
            continue
        jitter = random.uniform(0.9, 1.1)  # noqa: S311 - scheduling jitter
        following = now + timedelta(seconds=settings.KEY_CHECK_INTERVAL * jitter)
        if ProviderKey.objects.filter(pk=key_id, next_check_at=seen).update(
            next_check_at=following
        ):
            claimed.append((str(key_id), provider))
            per_provider[provider] = per_provider.get(provider, 0) + 1
    return claimed


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
    """When to start each claimed check within this tick, capped per provider."""
    by_provider: dict[str, list[str]] = {}
    for key_id, provider in keys:
        by_provider.setdefault(provider, []).append(key_id)
    plan: list[tuple[str, float]] = []
    for ids in by_provider.values():
        offsets = spread(
            len(ids), settings.KEY_CHECK_TICK, settings.KEY_CHECKS_PER_PROVIDER_PER_MINUTE
        )
        plan.extend(zip(ids, offsets, strict=True))
    return sorted(plan, key=lambda item: item[1])


def backoff(retries: int, retry_after: float | None) -> float:
    """Exponential backoff with full jitter, never sooner than the provider's Retry-After,
    and never longer than a message may wait unacknowledged in the broker."""
    base = settings.JOB_RETRY_BASE_SECONDS
    delay = random.uniform(0, min(settings.JOB_MAX_COUNTDOWN, base * 2**retries))  # noqa: S311
    return min(max(delay, retry_after or 0.0), settings.JOB_MAX_COUNTDOWN)


def due_versions(now: datetime | None = None) -> list[int]:
    now = now or timezone.now()
    return list(
        KeyVersion.objects.filter(
            stage=Stage.PREVIOUS, retire_after__lte=now, destroyed_at=None
        ).values_list("id", flat=True)
    )


def keys_awaiting_destruction() -> list[str]:
    """Revoked keys whose versions the store has not destroyed yet (it was down)."""
    rows = ProviderKey.objects.filter(status=KeyStatus.REVOKED, secrets_destroyed_at=None)
    return [str(key_id) for key_id in rows.values_list("id", flat=True)]


def destroy_key_secrets(key_id: str) -> bool:
    """Finish a revoked key's destruction; False while the store cannot answer."""
    try:
        do_destroy_key_secrets(key_id, actor=JOBS)
    except StoreUnavailable:
        return False
    return True


def retire_version(version_pk: int) -> bool:
    return do_retire_version(version_pk, actor=JOBS)


def flag_rotation_due(now: datetime | None = None) -> int:
    """Every active key past its rotation date: rotated where its admin credential can
    create its successor at the provider, else flagged (`key.rotation_due`, a webhook and
    the console's Due badge); returns how many were handled."""
    now = now or timezone.now()
    due = ProviderKey.objects.filter(status=KeyStatus.ACTIVE, rotation_due_at__lte=now)
    return sum(
        _rotate_or_flag(key, now) for key in due.select_related("tenant", "admin_credential")
    )


def _rotates_at_provider(key: ProviderKey) -> bool:
    """Whether the key's admin credential can have the provider create its successor: an
    admin API that creates keys, and a credential its latest check did not find invalid
    (else a person is reminded rather than a rotation started that cannot succeed)."""
    adapter = admin_adapter(key.provider)
    admin = key.admin_credential
    return (
        admin is not None
        and admin.status == KeyStatus.ACTIVE
        and adapter is not None
        and adapter.creates_keys
    )


def _rotate_or_flag(key: ProviderKey, now: datetime) -> bool:
    if not _rotates_at_provider(key):
        return do_flag_rotation_due(key.pk, actor=JOBS, now=now)
    try:
        _, started = do_start_rotation(
            key, RotationRequest(client_request_token=attempt_token(key, now)), actor=JOBS
        )
    except (RotationInProgress, KeyNotActive, TenantMoving):
        # A rotation runs (a person's, which has priority, or an earlier attempt still
        # waiting on the provider), the key went, or its tenant is moving between stores.
        started = False
    except RequestTokenReused:  # a person's rotation took this attempt's name
        return do_flag_rotation_due(key.pk, actor=JOBS, now=now)
    reminded = [
        do_flag_rotation_due(key.pk, actor=JOBS, now=now, attempt=attempt)
        for attempt in _ended_attempts(key)
    ]
    return started or any(reminded)


# A scheduled rotation that failed or was cancelled leaves its key due (it was not
# rotated), and the schedule tries again the next day (UTC) while it stays due: the due
# date and the day name each attempt, so however often the job runs, one attempt a day.
SCHEDULED = "scheduled-"


def attempt_token(key: ProviderKey, now: datetime) -> str:
    """The request token of the scheduled attempt to rotate `key` on `now`'s day."""
    return f"{_attempts_of(key)}{now.astimezone(UTC):%Y%m%d}"


def _attempts_of(key: ProviderKey) -> str:
    """What the request tokens of the attempts at the key's current due date begin with."""
    return f"{SCHEDULED}{key.rotation_due_at:%Y%m%dT%H%M%S}-"


def _ended_attempts(key: ProviderKey) -> list[Rotation]:
    """The scheduled attempts at the key's due date that failed or were cancelled and no
    person was reminded of yet (each is, once)."""
    return list(
        Rotation.objects.filter(
            key=key,
            created_by=JOBS.id,
            client_request_token__startswith=_attempts_of(key),
            state__in=[RotationState.FAILED, RotationState.CANCELLED],
            reminded_at=None,
        ).order_by("created_at")
    )


def purge_expired_tokens(older_than: timedelta = timedelta(hours=1)) -> int:
    return do_purge_expired_tokens(older_than, actor=JOBS)


def summarise_auth_failures(now: float | None = None) -> int:
    """One `auth.failed_repeated` event per source, reason and finished minute that saw
    more than one failed authentication (the first was recorded on its own, at once)."""
    summaries = 0
    for minute, source, reason, count in take_finished_auth_failures(now):
        if count < 2:
            continue
        record(
            "auth.failed_repeated",
            actor=Actor.anonymous(),
            outcome=Outcome.DENIED,
            details={
                "source_ip": None if source == "-" else source,
                "reason": reason,
                "minute": datetime.fromtimestamp(minute * 60, UTC).isoformat(),
                "count": count,
                "recorded_one_by_one": 1,
            },
        )
        summaries += 1
    return summaries


# A running rotation no step has touched for this long lost its message or its worker.
ROTATION_STALLED = timedelta(seconds=60)


def advance_rotation(rotation_id: UUID | str) -> Advanced:
    return do_advance_rotation(rotation_id, actor=JOBS)


def stalled_rotations(now: datetime | None = None) -> list[str]:
    """Rotations a worker should take up again: running ones untouched for a minute, and
    failed or cancelled ones whose pending version is not destroyed yet (the store did
    not answer when they ended)."""
    cutoff = (now or timezone.now()) - ROTATION_STALLED
    left = KeyVersion.objects.filter(
        key=OuterRef("key"), version=OuterRef("pending_version"), stage=Stage.PENDING
    )
    now = cutoff + ROTATION_STALLED
    waiting = Q(not_before__gt=now)  # a lease held, or the provider's Retry-After
    stalled = Rotation.objects.filter(
        Q(state__in=RUNNING_ROTATION, updated_at__lt=cutoff) & ~waiting
        | Q(Exists(left), state__in=[RotationState.FAILED, RotationState.CANCELLED])
    )
    return [str(pk) for pk in stalled.values_list("id", flat=True)]


# A running move no step has touched for this long lost its message or its worker.
MOVE_STALLED = timedelta(seconds=60)


def advance_move(move_id: UUID | str) -> MoveAdvanced:
    return do_advance_move(move_id, actor=JOBS)


def stalled_moves(now: datetime | None = None) -> list[str]:
    """Moves a worker should take up again: running ones untouched for a minute (and not
    waiting: for a rotation, a back-off or a lease), and failed or cancelled ones whose
    copies are not yet destroyed (the target store did not answer when they ended)."""
    now = now or timezone.now()
    stalled = TenantMove.objects.filter(
        Q(state__in=RUNNING_MOVE, updated_at__lt=now - MOVE_STALLED) & ~Q(not_before__gt=now)
        | Q(state__in=ABANDONED_MOVE, discarded_at=None)
    )
    return [str(pk) for pk in stalled.values_list("id", flat=True)]
