"""A key's end of life: revocation and the destruction of its secrets, retiring a previous
version when its grace period ends (in the store and, with an admin credential, at the
provider), and the reminders of a due rotation.

As in `kms.actions.keys`, no call to the secret store or a provider runs inside a
transaction or under a row lock; rows change through compare-and-sets under the key's lock.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from audit.actors import Actor
from audit.models import Outcome as AuditOutcome
from audit.recorder import record
from kms.actions.keys import _key_payload, _record_store_outage, key_target, read_secret
from kms.models import (
    RUNNING_ROTATION,
    KeyStatus,
    KeyVersion,
    MoveState,
    ProviderKey,
    Rotation,
    RotationState,
    Stage,
    TenantMove,
)
from kms.providers.admin import AdminAdapter, AdminCredential, AdminError, admin_adapter
from notify.tasks import notify
from stores.base import SecretStore
from stores.exceptions import StoreUnavailable
from stores.registry import get_store


# -- revocation --------------------------------------------------------------------------
def do_revoke_key(key: ProviderKey, *, actor: Actor) -> ProviderKey:
    """Make the key unusable at once, then destroy every version in the store. The
    revocation stands whatever the store does; if the store cannot answer, the returned key
    has no `secrets_destroyed_at` yet and the `retire_versions` sweep finishes the
    destruction as soon as the store answers."""
    with transaction.atomic(durable=True):
        locked = ProviderKey.objects.select_for_update().get(pk=key.pk)
        if locked.status != KeyStatus.REVOKED:
            previous = locked.status
            locked.status, locked.revoked_at = KeyStatus.REVOKED, timezone.now()
            locked.save(update_fields=["status", "revoked_at", "updated_at"])
            ended = [*RUNNING_ROTATION, RotationState.RETIRING]
            _end_rotations(locked, ended, RotationState.CANCELLED, "The key was revoked.", actor)
            record(
                "key.revoked",
                actor=actor,
                tenant=locked.tenant.slug,
                target=key_target(locked.id),
                details={"previous_status": previous, "fingerprint": locked.fingerprint},
            )
    try:
        return do_destroy_key_secrets(locked.pk, actor=actor)
    except StoreUnavailable:
        return locked  # audited as key.destroy_failed; the sweep retries


def do_destroy_key_secrets(key_id: uuid.UUID | str, *, actor: Actor) -> ProviderKey:
    """Destroy every version of a revoked key in its store (nothing to do once done);
    StoreUnavailable, audited as `key.destroy_failed`, when the store cannot answer."""
    key = ProviderKey.objects.select_related("tenant").get(pk=key_id, status=KeyStatus.REVOKED)
    if key.secrets_destroyed_at is not None:
        return key
    # What Keyward created at the provider goes too; a person's own key stays theirs.
    for made in KeyVersion.objects.filter(key=key, destroyed_at=None).exclude(upstream_id=""):
        retire_upstream(key, made, actor, transient_too=True)
    try:
        alive: list[int] = []
        for store, path in _paths_holding(key):
            held = [v.version for v in store.versions(path) if not v.destroyed]
            store.destroy(path, held)
            alive += held
    except StoreUnavailable as outage:
        _record_store_outage(
            outage,
            "key.destroy_failed",
            actor=actor,
            tenant=key.tenant.slug,
            target=key_target(key.id),
        )
        raise
    with transaction.atomic(durable=True):
        locked = ProviderKey.objects.select_for_update().select_related("tenant").get(pk=key.pk)
        if locked.secrets_destroyed_at is not None:  # another run finished first
            return locked
        now = timezone.now()
        KeyVersion.objects.filter(key=locked, destroyed_at=None).update(
            stage=Stage.DESTROYED, destroyed_at=now
        )
        locked.secrets_destroyed_at = now
        locked.save(update_fields=["secrets_destroyed_at", "updated_at"])
        record(
            "key.secrets_destroyed",
            actor=actor,
            tenant=locked.tenant.slug,
            target=key_target(locked.id),
            details={"versions": sorted(set(alive)), "store": locked.store},
        )
    return locked


def _paths_holding(key: ProviderKey) -> list[tuple[SecretStore, str]]:
    """Where the key's secrets are: its own path, and while its tenant's move empties the
    source (the step may be retrying), the path it left there."""
    paths = [(get_store(key.store), key.store_path)]
    move = TenantMove.objects.filter(tenant_id=key.tenant_id, state=MoveState.DESTROYING).first()
    left = move.keys.get(str(key.id)) if move is not None else None
    if left is not None:
        paths.append((get_store(left["source"]), left["source_path"]))
    return paths


def admin_in_hand(key: ProviderKey, actor: Actor) -> tuple[AdminAdapter, AdminCredential] | None:
    """The key's admin API and its credential in hand (None without a live one)."""
    admin_key = key.admin_credential
    adapter = admin_adapter(key.provider)
    if admin_key is None or adapter is None or admin_key.status == KeyStatus.REVOKED:
        return None
    secret = read_secret(
        admin_key, admin_key.current_version, actor=actor, purpose="key.admin_credential_use"
    )
    return adapter, AdminCredential(secret, admin_key.upstream, admin_key.base_url)


# -- retirement and reminders -------------------------------------------------------------
def do_retire_version(version_pk: int, *, actor: Actor, now: datetime | None = None) -> bool:
    """Destroy one previous version whose grace period is over; False if there was nothing
    (left) to do. The store call runs outside any transaction: a version past its grace can
    never become usable again, so destroying it twice is harmless, and the row changes only
    through a compare-and-set that one run alone wins."""
    now = now or timezone.now()
    version = (
        KeyVersion.objects.select_related("key", "key__tenant")
        .filter(pk=version_pk, stage=Stage.PREVIOUS, destroyed_at=None, retire_after__lte=now)
        .first()
    )
    if version is None or version.retire_after is None:
        return False
    key = version.key
    destroyed_in = (key.store, key.store_path)
    get_store(key.store).destroy(key.store_path, [version.version])
    retire_upstream(key, version, actor)
    with transaction.atomic(durable=True):
        # The key's lock orders this with a move's switch: either the switch sees the
        # version destroyed (and destroys its copy), or this sees where the key went.
        held_in = (
            ProviderKey.objects.select_for_update()
            .values_list("store", "store_path")
            .get(pk=key.pk)
        )
        won = KeyVersion.objects.filter(
            pk=version.pk, stage=Stage.PREVIOUS, destroyed_at=None
        ).update(stage=Stage.DESTROYED, destroyed_at=timezone.now())
        if not won:
            return False
        finished = Rotation.objects.filter(previous_version=version.version)
        _end_rotations(key, [RotationState.RETIRING], RotationState.COMPLETED, "", actor, finished)
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
            actor=actor,
            tenant=key.tenant.slug,
            target=key_target(key.id),
            details={"version": version.version, "retire_after": version.retire_after.isoformat()},
        )
    if held_in != destroyed_in:  # moved to another store since it was read: its copy too
        get_store(held_in[0]).destroy(held_in[1], [version.version])
    return True


def retire_upstream(
    key: ProviderKey, version: KeyVersion, actor: Actor, *, transient_too: bool = False
) -> None:
    """`retire_upstream_id` for a recorded version."""
    retire_upstream_id(
        key, version.version, version.upstream_id, version.hint, actor, transient_too=transient_too
    )


def retire_upstream_id(
    key: ProviderKey,
    version: int,
    upstream_id: str,
    hint: str,
    actor: Actor,
    *,
    transient_too: bool = False,
) -> None:
    """Make a version stop working at its provider too, where the key has an admin
    credential: a transient refusal is raised (the job tries again) unless
    `transient_too`; a lasting one is audited and notified (`key.upstream_retire_failed`),
    since the old key may still work there, and does not stop what called it."""
    admin = admin_in_hand(key, actor)
    if admin is None:
        return
    adapter, credential = admin
    try:
        adapter.retire(credential, upstream_id=upstream_id, hint=hint)
    except AdminError as refused:
        if refused.transient and not transient_too:
            raise
        facts = {"version": version, "reason": refused.reason}
        with transaction.atomic(durable=True):
            notify("key.upstream_retire_failed", _key_payload(key, **facts))
            record(
                "key.upstream_retire_failed",
                actor=actor,
                outcome=AuditOutcome.ERROR,
                tenant=key.tenant.slug,
                target=key_target(key.id),
                details={**facts, "upstream_id": upstream_id},
            )


def _end_rotations(
    key: ProviderKey,
    states: Iterable[str],
    state: str,
    failure: str,
    actor: Actor,
    among: QuerySet[Rotation] | None = None,
) -> None:
    """End the key's rotations in `states` (within the caller's transaction): completed
    when their previous version is retired, cancelled when the key is revoked (its
    destruction takes their pending versions with it)."""
    rotations = (among if among is not None else Rotation.objects.all()).select_for_update()
    now = timezone.now()
    for rotation in rotations.filter(key=key, state__in=list(states)):
        step = "retire_previous" if state == RotationState.COMPLETED else "promote"
        rotation.steps = [
            {**s, "state": "done" if not failure else "failed", "at": now.isoformat()}
            if s["step"] == step
            else s
            for s in rotation.steps
        ]
        rotation.state, rotation.finished_at = state, now
        rotation.failure = failure
        rotation.save()
        record(
            "key.rotation_completed"
            if state == RotationState.COMPLETED
            else "key.rotation_cancelled",
            actor=actor,
            tenant=key.tenant.slug,
            target=key_target(key.id),
            details={"rotation": str(rotation.id), "reason": failure}
            if failure
            else {"rotation": str(rotation.id)},
        )


def do_flag_rotation_due(
    key_id: uuid.UUID | str, *, actor: Actor, now: datetime, attempt: Rotation | None = None
) -> bool:
    """Audit and notify `key.rotation_due` once per rotation period; or, for `attempt`, a
    scheduled rotation that failed or was cancelled, once per attempt, leaving the key due
    so that the schedule tries again. False if the key is not (or no longer) due, or the
    attempt was already reminded of."""
    with transaction.atomic(durable=True):
        key = ProviderKey.objects.select_for_update().select_related("tenant").get(pk=key_id)
        if (
            key.status != KeyStatus.ACTIVE
            or key.rotation_due_at is None
            or key.rotation_due_at > now
        ):
            return False
        facts: dict[str, Any] = {}
        if attempt is not None:
            if not _claim_reminder(key, attempt, now):
                return False
            facts = {"rotation": str(attempt.id)}  # why it ended is in its own events
        notify(
            "key.rotation_due",
            _key_payload(key, rotation_due_at=key.rotation_due_at.isoformat(), **facts),
        )
        record(
            "key.rotation_due",
            actor=actor,
            tenant=key.tenant.slug,
            target=key_target(key.id),
            details={
                "rotation_due_at": key.rotation_due_at.isoformat(),
                "rotation_period_days": key.rotation_period_days,
                **facts,
            },
        )
        if attempt is None:
            # Next reminder one period later, unless the key is rotated first.
            key.rotation_due_at = now + timedelta(days=key.rotation_period_days)
            key.save(update_fields=["rotation_due_at", "updated_at"])
    return True


def _claim_reminder(key: ProviderKey, attempt: Rotation, now: datetime) -> bool:
    """A compare-and-set that one run alone wins, for an ended rotation of this key."""
    ended = [RotationState.FAILED, RotationState.CANCELLED]
    unreminded = Rotation.objects.filter(pk=attempt.pk, key=key, state__in=ended, reminded_at=None)
    return bool(unreminded.update(reminded_at=now))
