"""Staged rotations: a new secret enters as a pending version, is tested with the provider,
is promoted to current, and the previous version is retired after its grace period.

Starting one stores the pending version and commits the rotation with its audit event;
the steps after that run as a job (`keyward.kms.advance_rotation`) that may run twice, be
killed anywhere and be delivered again: each step re-reads the rotation and changes it
only through a compare-and-set under its row lock, and no provider or store call runs
inside a transaction. A key has at most one running rotation (a database constraint), so
at every instant exactly one version is current. The manual path (a person supplies the
secret) skips the upstream step; providers with an admin API will fill it in.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from celery import current_app
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from audit.actors import Actor
from audit.hmac import audit_hmac
from audit.models import Outcome as AuditOutcome
from audit.recorder import record
from core.errors import InvalidInput
from kms import queries
from kms.actions.keys import (
    check_now,
    hint_of,
    key_target,
    make_current,
    read_secret,
    record_rotated,
    refuse_known_secret,
    shape_check,
    store_head,
)
from kms.actions.retirement import admin_in_hand, retire_upstream, retire_upstream_id
from kms.exceptions import (
    KeyNotActive,
    RequestTokenReused,
    RotationInProgress,
    RotationNotCancellable,
    TenantMoving,
)
from kms.models import (
    RUNNING_ROTATION,
    KeyStatus,
    KeyVersion,
    ProviderKey,
    Rotation,
    RotationState,
    Stage,
    ValidationResult,
)
from kms.providers import AUTHENTIC, TRANSIENT
from kms.providers.admin import AdminAdapter, AdminCredential, AdminError, Minted, admin_adapter
from stores.exceptions import StoreConflict, StoreUnavailable
from stores.registry import get_store

ADVANCE_TASK = "keyward.kms.advance_rotation"
STEPS = ("create_pending", "set_upstream", "test", "promote", "retire_previous")
REQUEST_TOKEN = re.compile(r"^[A-Za-z0-9_.:-]{1,64}\Z", re.ASCII)


@dataclass(frozen=True)
class RotationRequest:
    """What starting a rotation takes (POST .../keys/{id}/rotations); without a secret,
    the key's admin credential creates the new key at the provider."""

    secret: str = ""
    grace_period_seconds: int = 3600
    client_request_token: str = ""
    validate: bool = True


@dataclass(frozen=True)
class Advanced:
    """What a run of the steps left: the rotation's state, and how long to wait before
    trying again when the provider answered with a transient error."""

    state: str
    retry_after: float | None = None
    # Another worker holds the step (a lease), rather than the provider asking to wait.
    held: bool = False


# -- starting ----------------------------------------------------------------------------
def do_start_rotation(
    key: ProviderKey, ask: RotationRequest, *, actor: Actor
) -> tuple[Rotation, bool]:
    """Store the new secret as a pending version and start its rotation; returns the
    rotation and whether it is new. The same client request token with the same secret
    returns the rotation it started; with another secret it is refused."""
    token = ask.client_request_token or uuid.uuid4().hex
    if not REQUEST_TOKEN.match(token):
        raise InvalidInput(fields={"client_request_token": ["1-64 letters, digits and . _ : -"]})
    if not ask.secret:
        return _start_automated(key, ask, token, actor)
    shape_check(key, ask.secret)
    fingerprint = audit_hmac(ask.secret)
    started = _started(key, token, fingerprint)
    if started is not None:
        return started, False
    _refuse_start(key)
    refuse_known_secret(key.tenant, fingerprint)
    latest = store_head(key)
    try:
        version = get_store(key.store).put(key.store_path, ask.secret, expected_version=latest)
    except StoreConflict:  # another rotation stored its version first
        return _raced(key, token, fingerprint), False
    try:
        return _begin(key, ask, token, version, fingerprint, actor), True
    except BaseException:
        with contextlib.suppress(StoreUnavailable):
            get_store(key.store).destroy(key.store_path, [version])
        raise


def _refuse_start(key: ProviderKey) -> None:
    if key.status == KeyStatus.REVOKED:
        raise KeyNotActive("The key is revoked.")
    if Rotation.objects.filter(key=key, state__in=RUNNING_ROTATION).exists():
        raise RotationInProgress()
    if queries.tenant_moving(key.tenant_id):
        raise TenantMoving()


def _start_automated(
    key: ProviderKey, ask: RotationRequest, token: str, actor: Actor
) -> tuple[Rotation, bool]:
    """A rotation whose new key the provider creates, through the key's admin
    credential; nothing is stored until a worker has it."""
    started = _started(key, token, "")
    if started is not None:
        return started, False
    adapter = admin_adapter(key.provider)
    if key.admin_credential_id is None or adapter is None or not adapter.creates_keys:
        raise InvalidInput(
            "This key has no admin credential that can create keys at its provider: send "
            "the new secret.",
            fields={"secret": ["Required: no admin credential creates this key's successor."]},
        )
    _refuse_start(key)
    try:
        with transaction.atomic(durable=True):
            locked = ProviderKey.objects.select_for_update().get(pk=key.pk)
            if locked.status == KeyStatus.REVOKED:
                raise KeyNotActive("The key is revoked.")
            rotation = Rotation.objects.create(
                key=locked,
                client_request_token=token,
                mode="automated",
                state=RotationState.CREATING,
                validate=ask.validate,
                grace_period_seconds=ask.grace_period_seconds,
                steps=_first_steps(ask.validate, automated=True),
                created_by=actor.id,
            )
            _record_started(key, rotation, actor)
            transaction.on_commit(_advancer(rotation.id), robust=True)
    except IntegrityError:
        raise RotationInProgress() from None
    return rotation, True


def _record_started(key: ProviderKey, rotation: Rotation, actor: Actor, **facts: Any) -> None:
    record(
        "key.rotation_started",
        actor=actor,
        tenant=key.tenant.slug,
        target=key_target(key.id),
        details={
            "rotation": str(rotation.id),
            "mode": rotation.mode,
            "grace_period_seconds": rotation.grace_period_seconds,
            "validate": rotation.validate,
            **facts,
        },
    )


def _started(key: ProviderKey, token: str, fingerprint: str) -> Rotation | None:
    """The rotation this request token already started, if any (refused if it was
    started with another secret)."""
    started = Rotation.objects.filter(key=key, client_request_token=token).first()
    if started is None:
        return None
    # A request without a secret matches an automated rotation, whatever the provider
    # created for it since; one with a secret matches only the same secret.
    same = started.mode == "automated" if not fingerprint else started.fingerprint == fingerprint
    if not same:
        raise RequestTokenReused()
    return started


def _raced(key: ProviderKey, token: str, fingerprint: str) -> Rotation:
    started = _started(key, token, fingerprint)
    if started is None:
        raise RotationInProgress()
    return started


def _begin(
    key: ProviderKey,
    ask: RotationRequest,
    token: str,
    version: int,
    fingerprint: str,
    actor: Actor,
) -> Rotation:
    hint = hint_of(ask.secret)
    try:
        with transaction.atomic(durable=True):
            locked = ProviderKey.objects.select_for_update().get(pk=key.pk)
            if locked.status == KeyStatus.REVOKED:
                raise KeyNotActive("The key is revoked.")
            if locked.store_path != key.store_path:  # moved to another store meanwhile
                raise StoreConflict("The key changed meanwhile; nothing was rotated.")
            KeyVersion.objects.create(
                key=locked,
                version=version,
                stage=Stage.PENDING,
                fingerprint=fingerprint,
                hint=hint,
                created_by=actor.id,
            )
            rotation = Rotation.objects.create(
                key=locked,
                client_request_token=token,
                state=RotationState.TESTING,
                validate=ask.validate,
                grace_period_seconds=ask.grace_period_seconds,
                pending_version=version,
                fingerprint=fingerprint,
                steps=_first_steps(ask.validate),
                created_by=actor.id,
            )
            _record_started(
                key, rotation, actor, version=version, fingerprint=fingerprint, hint=hint
            )
            transaction.on_commit(_advancer(rotation.id), robust=True)
    except IntegrityError:  # a concurrent start won the one running rotation
        raise RotationInProgress() from None
    return rotation


def _first_steps(validate: bool, *, automated: bool = False) -> list[dict[str, Any]]:
    now = timezone.now().isoformat()
    done = {} if automated else {"create_pending": "done", "set_upstream": "skipped"}
    if not validate:
        done["test"] = "skipped"
    return [
        {"step": name, "state": done.get(name, "waiting"), "at": now if name in done else None}
        for name in STEPS
    ]


def _advancer(rotation_id: uuid.UUID) -> Callable[[], None]:
    """A named callback (robust on_commit logs its name if the broker refuses it; the
    `resume_rotations` sweep hands the rotation to a worker later)."""

    def advance_rotation() -> None:
        current_app.send_task(ADVANCE_TASK, args=[str(rotation_id)])

    return advance_rotation


# -- the steps -----------------------------------------------------------------------------
def do_advance_rotation(rotation_id: uuid.UUID | str, *, actor: Actor) -> Advanced:
    """Run the rotation's next steps as far as they go now: test the pending version,
    promote it. Safe to run twice or concurrently; a transient provider answer leaves the
    rotation where it is, with the time to wait before the next try."""
    rotation = _rotation(rotation_id)
    if rotation is None:
        return Advanced("gone")
    if rotation.state == RotationState.CREATING:
        held = _claim(rotation)
        if held is not None:
            return Advanced(rotation.state, held, held=True)
        retry_after = _create_upstream(rotation, actor)
        if retry_after is not None:
            return Advanced(rotation.state, retry_after)
        rotation = _rotation(rotation_id) or rotation
    if rotation.state == RotationState.TESTING:
        retry_after = _test(rotation, actor)
        if retry_after is not None:
            return Advanced(rotation.state, retry_after)
        rotation = _rotation(rotation_id) or rotation
    if rotation.state == RotationState.PROMOTING:
        _promote(rotation, actor)
        rotation = _rotation(rotation_id) or rotation
    if rotation.state in (RotationState.FAILED, RotationState.CANCELLED):
        discard_pending(rotation)
    return Advanced(rotation.state)


def _rotation(rotation_id: uuid.UUID | str) -> Rotation | None:
    return Rotation.objects.select_related("key", "key__tenant").filter(pk=rotation_id).first()


def _create_upstream(rotation: Rotation, actor: Actor) -> float | None:
    """Have the provider create the new key (after retiring any an interrupted attempt
    created), store it as the pending version, and move on to testing it; the seconds
    to wait when the provider answered with a transient error."""
    key = ProviderKey.objects.select_related("tenant", "admin_credential").get(pk=rotation.key_id)
    admin = admin_in_hand(key, actor)
    if admin is None:
        _fail(rotation, "set_upstream", "The key's admin credential is gone or revoked.")
        return None
    adapter, credential = admin
    name = f"keyward-{rotation.id}"
    current = KeyVersion.objects.get(key=key, stage=Stage.CURRENT)
    try:
        for orphan in adapter.minted(credential, name=name):
            adapter.retire(credential, upstream_id=orphan)
        in_use = current.upstream_id or _identify(adapter, credential, current)
        minted = adapter.mint(credential, name=name, current_upstream_id=in_use)
    except AdminError as refused:
        if refused.transient:
            _note_waiting(
                rotation, "set_upstream", f"waiting: {refused.reason}", refused.retry_after
            )
            return refused.retry_after or 0.0
        _fail(rotation, "set_upstream", f"The provider refused to create the key: {refused.reason}")
        return None
    _store_minted(rotation, key, minted, adapter, credential, actor)
    return None


def _identify(adapter: AdminAdapter, credential: AdminCredential, current: KeyVersion) -> str:
    """The provider's id of the current version where none was recorded (a key onboarded
    by hand), recorded once found, so the version is retired upstream when its grace ends;
    recognised by its fingerprint, so its value is never read for it."""
    found = adapter.identify(credential, lambda value: audit_hmac(value) == current.fingerprint)
    if found:
        KeyVersion.objects.filter(pk=current.pk, upstream_id="").update(upstream_id=found)
    return found


def _claim(rotation: Rotation) -> float | None:
    """Hold the create step for one worker (a lease long enough for its calls), so that
    two deliveries never create keys at the provider side by side; the seconds to wait
    when another holds it, or the provider asked to wait."""
    now = timezone.now()
    lease = timedelta(seconds=3 * settings.PROVIDER_TIMEOUT_MS / 1000 + 5)
    with transaction.atomic(durable=True):
        locked = _locked(rotation)
        if locked is None or locked.state != RotationState.CREATING:
            return None
        if locked.not_before is not None and locked.not_before > now:
            return (locked.not_before - now).total_seconds()
        locked.not_before = now + lease
        locked.save(update_fields=["not_before", "updated_at"])
    return None


def _store_minted(
    rotation: Rotation,
    key: ProviderKey,
    minted: Minted,
    adapter: AdminAdapter,
    credential: AdminCredential,
    actor: Actor,
) -> None:
    latest = store_head(key)
    try:
        version = get_store(key.store).put(key.store_path, minted.secret, expected_version=latest)
    except BaseException:
        with contextlib.suppress(AdminError):  # the next attempt finds it by name anyway
            adapter.retire(credential, upstream_id=minted.upstream_id)
        raise
    fingerprint, hint = audit_hmac(minted.secret), hint_of(minted.secret)
    with transaction.atomic(durable=True):
        locked = _locked(rotation)
        if locked is not None and locked.state == RotationState.CREATING:
            KeyVersion.objects.create(
                key=key,
                version=version,
                stage=Stage.PENDING,
                fingerprint=fingerprint,
                hint=hint,
                created_by=actor.id,
                upstream_id=minted.upstream_id,
            )
            locked.pending_version, locked.fingerprint = version, fingerprint
            locked.not_before = None
            locked.steps = _with_step(locked.steps, "set_upstream", "done", minted.upstream_id)
            _set_state(locked, RotationState.TESTING, step="create_pending")
            record(
                "key.rotation_created_upstream",
                actor=actor,
                tenant=key.tenant.slug,
                target=key_target(key.id),
                details={
                    "rotation": str(locked.id),
                    "version": version,
                    "upstream_id": minted.upstream_id,
                    "fingerprint": fingerprint,
                    "hint": hint,
                },
            )
            rotation.state = RotationState.TESTING
            return
    # Cancelled meanwhile: nothing of it may stay, here or at the provider.
    with contextlib.suppress(StoreUnavailable):
        get_store(key.store).destroy(key.store_path, [version])
    retire_upstream_id(key, version, minted.upstream_id, hint, actor, transient_too=True)


def _fail(rotation: Rotation, step: str, failure: str) -> None:
    with transaction.atomic(durable=True):
        locked = _locked(rotation)
        if locked is None or locked.state not in RUNNING_ROTATION:
            return
        _set_state(locked, RotationState.FAILED, step=step, failure=failure)
        record(
            "key.rotation_failed",
            actor=Actor.system("rotations"),
            tenant=rotation.key.tenant.slug,
            target=key_target(rotation.key_id),
            details={"rotation": str(locked.id), "step": step, "reason": failure[:300]},
        )
    rotation.state = RotationState.FAILED


def _test(rotation: Rotation, actor: Actor) -> float | None:
    """Check the pending version with the provider (unless the rotation skips it); None
    once the rotation moved on, else the seconds to wait for a transient answer."""
    if not rotation.validate:
        _move(rotation, RotationState.TESTING, RotationState.PROMOTING, step="test")
        return None
    key, pending = rotation.key, rotation.pending_version
    if pending is None:  # a testing rotation always has its pending version
        _fail(rotation, "test", "No pending version to test.")
        return None
    secret = read_secret(key, pending, actor=actor, purpose="key.rotation_test")
    check = check_now(key, secret)
    del secret
    if check is None:  # an admin API with no check: nothing to test it with
        _move(rotation, RotationState.TESTING, RotationState.PROMOTING, step="test")
        return None
    if check.outcome in TRANSIENT:
        detail = f"waiting: the provider answered {check.outcome}"
        _note_waiting(rotation, "test", detail, check.retry_after)
        return check.retry_after or 0.0
    passed = check.outcome in AUTHENTIC
    with transaction.atomic(durable=True):
        locked = _locked(rotation)
        if locked is None or locked.state != RotationState.TESTING:
            return None
        ValidationResult.objects.create(
            key=key,
            version=pending,
            result=str(check.outcome),
            http_status=check.http_status,
            reason=check.reason,
            duration_ms=check.duration_ms,
            trigger="rotation",
        )
        details = {
            "rotation": str(rotation.id),
            "version": rotation.pending_version,
            "result": str(check.outcome),
            "reason": check.reason,
            "http_status": check.http_status,
        }
        if passed:
            _set_state(locked, RotationState.PROMOTING, step="test")
        else:
            failure = f"The provider refused the new secret ({check.outcome}): {check.reason}"
            _set_state(locked, RotationState.FAILED, step="test", failure=failure)
        record(
            "key.rotation_tested",
            actor=actor,
            tenant=key.tenant.slug,
            target=key_target(key.id),
            outcome=AuditOutcome.SUCCESS if passed else AuditOutcome.DENIED,
            details=details,
        )
    rotation.state = RotationState.PROMOTING if passed else RotationState.FAILED
    return None


def _note_waiting(
    rotation: Rotation, step: str, detail: str, retry_after: float | None = None
) -> None:
    """A transient answer: the step says so, and no step runs before the provider's
    Retry-After (the sweep waits too); nothing else changes."""
    with transaction.atomic(durable=True):
        locked = _locked(rotation)
        if locked is None or locked.state not in RUNNING_ROTATION:
            return
        locked.steps = _with_step(locked.steps, step, "waiting", detail)
        locked.not_before = timezone.now() + timedelta(seconds=max(retry_after or 0, 1))
        locked.save(update_fields=["steps", "not_before", "updated_at"])


def _promote(rotation: Rotation, actor: Actor) -> None:
    """Make the pending version current and the current one previous for the grace
    period, in one transaction with its `key.rotated` event."""
    now = timezone.now()
    with transaction.atomic(durable=True):
        key = (
            ProviderKey.objects.select_for_update().select_related("tenant").get(pk=rotation.key_id)
        )
        locked = _locked(rotation)
        if locked is None or locked.state != RotationState.PROMOTING:
            return
        if key.status == KeyStatus.REVOKED:
            _set_state(locked, RotationState.FAILED, step="promote", failure="The key was revoked.")
            return
        new = KeyVersion.objects.get(
            key=key, version=locked.pending_version or 0, stage=Stage.PENDING
        )
        old = make_current(key, new, locked.grace_period_seconds, now)
        locked.previous_version = old.version
        _set_state(locked, RotationState.RETIRING, step="promote")
        record_rotated(key, new, old, actor, rotation=str(locked.id), validated=locked.validate)


# -- cancelling and cleaning up -----------------------------------------------------------
def do_cancel_rotation(rotation: Rotation, *, actor: Actor) -> Rotation:
    """Stop a rotation whose new version is not yet current; the pending version is
    destroyed. Cancelling a cancelled rotation changes nothing."""
    with transaction.atomic(durable=True):
        locked = _locked(rotation)
        if locked is None:
            return rotation
        if locked.state == RotationState.CANCELLED:
            return locked
        if locked.state not in RUNNING_ROTATION:
            raise RotationNotCancellable()
        _set_state(locked, RotationState.CANCELLED, step=_next_step(locked), failure="Cancelled.")
        record(
            "key.rotation_cancelled",
            actor=actor,
            tenant=rotation.key.tenant.slug,
            target=key_target(rotation.key_id),
            details={"rotation": str(locked.id), "version": locked.pending_version},
        )
    with contextlib.suppress(AdminError, StoreUnavailable):  # the sweep finishes it
        discard_pending(locked)
    return locked


def discard_pending(rotation: Rotation) -> bool:
    """Destroy the pending version of a rotation that failed or was cancelled, in the
    store and then in its row (a compare-and-set); False if there was nothing to do."""
    if rotation.pending_version is None:
        return False
    pending = KeyVersion.objects.filter(
        key_id=rotation.key_id, version=rotation.pending_version, stage=Stage.PENDING
    )
    found = pending.first()
    if found is None:
        return False
    key = ProviderKey.objects.select_related("admin_credential").get(pk=rotation.key_id)
    if found.upstream_id:  # created at the provider: retired there first
        retire_upstream(key, found, Actor.system("rotations"))
    get_store(key.store).destroy(key.store_path, [rotation.pending_version])
    return bool(pending.update(stage=Stage.DESTROYED, destroyed_at=timezone.now()))


# -- state changes --------------------------------------------------------------------------
def _locked(rotation: Rotation) -> Rotation | None:
    return Rotation.objects.select_for_update().filter(pk=rotation.pk).first()


def _move(rotation: Rotation, old: str, new: str, *, step: str) -> bool:
    with transaction.atomic(durable=True):
        locked = _locked(rotation)
        if locked is None or locked.state != old:
            return False
        _set_state(locked, new, step=step)
    rotation.state = new
    return True


FINISHED = (RotationState.COMPLETED, RotationState.FAILED, RotationState.CANCELLED)


def _set_state(rotation: Rotation, state: str, *, step: str, failure: str = "") -> None:
    """The rotation's new state, with `step` marked as it ended (call under its lock)."""
    ended = "failed" if state in (RotationState.FAILED, RotationState.CANCELLED) else "done"
    rotation.steps = _with_step(rotation.steps, step, ended, failure)
    rotation.state = state
    if failure:
        rotation.failure = failure[:500]
    if state in FINISHED:
        rotation.finished_at = timezone.now()
    rotation.save()


def _with_step(steps: list[dict[str, Any]], name: str, state: str, detail: str = "") -> list[Any]:
    now = timezone.now().isoformat()
    changed = {"step": name, "state": state, "at": now}
    if detail:
        changed["detail"] = detail[:500]
    return [changed if step["step"] == name else step for step in steps]


def _next_step(rotation: Rotation) -> str:
    return next((s["step"] for s in rotation.steps if s["state"] == "waiting"), "test")
