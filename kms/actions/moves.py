"""Moving a tenant between secret stores: copy every live version of its keys to the
target store, verify each copy reads back identical, switch every key and the tenant to
the target in one transaction, then empty the source.

Starting a move commits it with its audit event; the steps run as a job
(`keyward.kms.advance_move`) that may run twice, be killed anywhere and be delivered
again: each step changes the move only through a compare-and-set under its row lock, and
no store call runs inside a transaction. Until the switch the tenant works on the source
store alone, from the switch on on the target alone, so a failure at any point leaves it
on exactly one store.

Each key is copied to a fresh path per move (`<tenant id>/<key id>/<move id>`), written
version by version so that every copy keeps its number: tokens pin version numbers. A
number whose version is not live (retired, or never recorded) is written with a filler
and destroyed at once. Rule for what runs beside a move: a move does not start while a
rotation of one of the tenant's keys runs, and until the switch no key of the tenant is
onboarded or rotated (409 `tenant_moving`); revoking is never refused: a key revoked
mid-move is switched without copies and whatever was copied of it is destroyed. If a
version or a key appears anyway (a request that raced the start), the switch sends the
move back to copying it.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from celery import current_app
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Max, QuerySet
from django.utils import timezone

from audit.actors import Actor
from audit.hmac import audit_hmac
from audit.models import Outcome as AuditOutcome
from audit.recorder import record
from core.errors import InvalidInput
from kms.actions.residency import live_keys
from kms.exceptions import (
    AlreadyOnStore,
    MoveInProgress,
    MoveNotCancellable,
    PlatformTenantPinned,
    RotationInProgress,
)
from kms.models import (
    ABANDONED_MOVE,
    BEFORE_SWITCH,
    RUNNING_MOVE,
    RUNNING_ROTATION,
    KeyStatus,
    KeyVersion,
    MoveState,
    ProviderKey,
    Rotation,
    Stage,
    TenantMove,
)
from stores.base import SecretStore
from stores.exceptions import SecretMissing, StoreConflict, StoreUnavailable
from stores.registry import DEFAULT_STORE, get_store, store_region
from tenants.models import Tenant

ADVANCE_TASK = "keyward.kms.advance_move"
STEPS = ("copy", "verify", "switch", "destroy")
# What a version number no live version holds is written with: never a secret.
FILLER = "keyward: a version number kept free by a move between stores"
# How long a move waits for a rotation that started in the race with it.
ROTATION_WAIT = 5.0
# A copy that lacks a live version goes back to copying after this wait, doubled each
# time, and the move fails after this many returns: a version whose row is live but that
# the source cannot yield (a retirement killed between the store and its row, a local
# ciphertext that no longer decrypts) would otherwise send it round for ever.
RECOPY_WAIT = 5.0
RECOPY_LIMIT = 5
# How long a worker holds the copy step: renewed before each version it writes, so it
# spans one store call or two and keeps the move fresh for the `resume_moves` sweep.
COPY_LEASE = timedelta(seconds=30)
STEP_OF = {MoveState.COPYING: "copy", MoveState.VERIFYING: "verify", MoveState.SWITCHING: "switch"}


@dataclass(frozen=True)
class MoveAdvanced:
    """What a run of the steps left: the move's state, and how long to wait before the
    next run when a rotation of the tenant's keys must end first."""

    state: str
    retry_after: float | None = None


class CopyDiffers(Exception):
    """A copy in the target store is not the version it copies: the move fails."""


class CopyLacks(Exception):
    """A live version is not in the target store: the move goes back to copying."""


class MoveLeftStep(Exception):
    """The move left the step this run was doing (another worker failed, cancelled or
    finished it): the run writes nothing more."""


def store_of(tenant: Tenant) -> str:
    """The store a tenant's keys are in: the one it is pinned to, else the default."""
    return tenant.store or DEFAULT_STORE


def target_path(move: TenantMove, key_id: uuid.UUID | str) -> str:
    return f"{move.tenant_id}/{key_id}/{move.id}"


def move_target(move: TenantMove) -> str:
    return f"move:{move.id}"


# -- starting ----------------------------------------------------------------------------
def do_start_move(tenant: Tenant, store: str, *, actor: Actor) -> TenantMove:
    """Start moving the tenant's keys to `store`; the steps run on a worker."""
    if store not in settings.SECRET_STORES:
        raise InvalidInput(fields={"store": ["No secret store of this name is configured."]})
    if tenant.is_platform:
        raise PlatformTenantPinned()  # each platform key stays in the region it serves
    with transaction.atomic(durable=True):
        locked = Tenant.objects.select_for_update().get(pk=tenant.pk)
        source = store_of(locked)
        # Where the keys are, not only the pin: an unpinned tenant's may sit elsewhere.
        if store == source and not live_keys(locked).exclude(store=store).exists():
            raise AlreadyOnStore()
        if TenantMove.objects.filter(tenant=locked, state__in=RUNNING_MOVE).exists():
            raise MoveInProgress()
        if Rotation.objects.filter(key__tenant=locked, state__in=RUNNING_ROTATION).exists():
            raise RotationInProgress(
                "A rotation of one of the tenant's keys is running; move once it has ended."
            )
        try:
            with transaction.atomic():
                move = TenantMove.objects.create(
                    tenant=locked,
                    source=source,
                    target=store,
                    state=MoveState.COPYING,
                    steps=_first_steps(),
                    created_by=actor.id,
                )
        except IntegrityError:  # a concurrent start won the one running move
            raise MoveInProgress() from None
        record(
            "tenant.move_started",
            actor=actor,
            tenant=locked.slug,
            target=move_target(move),
            details={**_stores(move), "keys": _live_keys(locked.pk).count()},
        )
        transaction.on_commit(_advancer(move.id), robust=True)
    return move


def _first_steps() -> list[dict[str, Any]]:
    return [{"step": name, "state": "waiting", "at": None} for name in STEPS]


def _stores(move: TenantMove) -> dict[str, str]:
    return {
        "move": str(move.id),
        "source": move.source,
        "target": move.target,
        "source_region": store_region(move.source),
        "target_region": store_region(move.target),
    }


def _live_keys(tenant_id: uuid.UUID) -> QuerySet[ProviderKey]:
    return ProviderKey.objects.filter(tenant_id=tenant_id).exclude(status=KeyStatus.REVOKED)


def _advancer(move_id: uuid.UUID) -> Callable[[], None]:
    """A named callback (robust on_commit logs its name if the broker refuses it; the
    `resume_moves` sweep hands the move to a worker later)."""

    def advance_move() -> None:
        current_app.send_task(ADVANCE_TASK, args=[str(move_id)])

    return advance_move


# -- the steps -----------------------------------------------------------------------------
def do_advance_move(move_id: uuid.UUID | str, *, actor: Actor) -> MoveAdvanced:
    """Run the move's next steps as far as they go now. Safe to run twice or
    concurrently; StoreUnavailable leaves the move where it is, for a retry."""
    advanced = do_run_move_step(move_id, actor=actor)
    while advanced.retry_after is None and advanced.state in RUNNING_MOVE:
        advanced = do_run_move_step(move_id, actor=actor)
    return advanced


def do_run_move_step(move_id: uuid.UUID | str, *, actor: Actor) -> MoveAdvanced:
    """Run the move's next step (and the clean-up of a failed one)."""
    move = _move(move_id)
    if move is None:
        return MoveAdvanced("gone")
    waiting = _wait(move)
    if waiting is not None:
        return MoveAdvanced(move.state, waiting)
    wrote = False
    if move.state == MoveState.COPYING:
        try:
            wrote = _copy(move)
        except CopyDiffers as differs:
            wrote = True
            fail_move(move, "copy", str(differs), actor)
    elif move.state == MoveState.VERIFYING:
        _verify(move, actor)
    elif move.state == MoveState.SWITCHING:
        _switch(move, actor)
    elif move.state == MoveState.DESTROYING:
        _destroy(move, actor)
    move = _move(move_id) or move
    # A copy that was writing while another worker discarded the copies may have written
    # after the purge: it discards them again.
    if move.state in ABANDONED_MOVE and (wrote or move.discarded_at is None):
        discard_copies(move)
    return MoveAdvanced(move.state, _wait(move))


def _wait(move: TenantMove) -> float | None:
    """Seconds before the move's next step may run (a rotation to end, a back-off)."""
    now = timezone.now()
    if move.state in BEFORE_SWITCH and move.not_before is not None and move.not_before > now:
        return (move.not_before - now).total_seconds()
    return None


def _move(move_id: uuid.UUID | str) -> TenantMove | None:
    return TenantMove.objects.select_related("tenant").filter(pk=move_id).first()


def live_versions(key: ProviderKey) -> dict[int, str]:
    """The versions of `key` a token may still be released (number: fingerprint)."""
    rows = KeyVersion.objects.filter(
        key=key, stage__in=[Stage.CURRENT, Stage.PREVIOUS], destroyed_at=None
    )
    return dict(rows.values_list("version", "fingerprint"))


def _head(store: SecretStore, path: str) -> int:
    return max((v.version for v in store.versions(path)), default=0)


def _copy(move: TenantMove) -> bool:
    """Write every live version of every live key to the target, each at its own number;
    a run that was killed goes on from the target's newest version. False when another
    worker holds the step (nothing written)."""
    try:
        if _hold_copy(move, claim=True) is not None:
            return False
        target = get_store(move.target)
        copied = 0
        keys = list(_live_keys(move.tenant_id))
        for key in keys:
            copied += _copy_key(move, key, target)
    except MoveLeftStep:
        return True
    detail = f"{len(keys)} keys, {copied} versions written"
    _set_state(move, MoveState.COPYING, MoveState.VERIFYING, step="copy", detail=detail)
    return True


def _hold_copy(move: TenantMove, *, claim: bool) -> float | None:
    """Hold the copy step for one worker for COPY_LEASE (as a rotation's create step):
    the seconds to wait when claiming it while another holds it; MoveLeftStep once the
    move is no longer copying, so nothing is written after its copies were discarded."""
    now = timezone.now()
    with transaction.atomic(durable=True):
        locked = _locked(move)
        if locked is None or locked.state != MoveState.COPYING:
            raise MoveLeftStep()
        if claim and locked.not_before is not None and locked.not_before > now:
            return (locked.not_before - now).total_seconds()
        locked.not_before = now + COPY_LEASE
        locked.save(update_fields=["not_before", "updated_at"])
    return None


def _copy_key(move: TenantMove, key: ProviderKey, target: SecretStore) -> int:
    path, source = target_path(move, key.id), get_store(key.store)
    wanted = live_versions(key)
    # Every number the key has used, live or not (a cancelled rotation's destroyed
    # pending version too): the key's next version in the target must follow them all.
    top, written = max(_head(source, key.store_path), _highest_row(key)), 0
    while (head := _head(target, path)) < top:
        number = head + 1
        _hold_copy(move, claim=False)
        secret = FILLER
        if number in wanted:
            try:
                secret = source.get(key.store_path, number)
            except SecretMissing:  # retired meanwhile: its number is kept free
                wanted.pop(number)
        try:
            stored = target.put(path, secret, expected_version=head)
        except StoreConflict:  # another run of this step wrote it, from the same source
            continue
        if stored != number:
            raise CopyDiffers(f"The target store numbered a copy {stored}, not {number}.")
        if number not in wanted:
            target.destroy(path, [number])
        written += 1
        del secret
    return written


def _highest_row(key: ProviderKey) -> int:
    highest = KeyVersion.objects.filter(key=key).aggregate(top=Max("version"))["top"]
    return int(highest or 0)


def _verify(move: TenantMove, actor: Actor) -> None:
    """Read every copy back and compare it with the source by fingerprint; strays (a
    filler a killed run did not destroy) are destroyed. A key or version that appeared
    since the copy sends the move back to copying; a copy that differs fails it."""
    target = get_store(move.target)
    plan: dict[str, Any] = {}
    try:
        for key in _live_keys(move.tenant_id):
            verified = _verify_key(move, key, target)
            plan[str(key.id)] = {
                "source": key.store,
                "source_path": key.store_path,
                "path": target_path(move, key.id),
                "verified": verified,
            }
    except CopyDiffers as differs:
        fail_move(move, "verify", str(differs), actor)
        return
    except MoveLeftStep:
        return
    except CopyLacks as lacks:
        with transaction.atomic(durable=True):
            locked = _locked(move)
            if locked is not None and locked.state == MoveState.VERIFYING:
                _back_to_copying(locked, "verify", str(lacks), actor)
        return
    detail = f"{len(plan)} keys, {sum(len(e['verified']) for e in plan.values())} versions"
    _set_state(
        move, MoveState.VERIFYING, MoveState.SWITCHING, step="verify", detail=detail, keys=plan
    )


def _verify_key(move: TenantMove, key: ProviderKey, target: SecretStore) -> list[int]:
    path, source = target_path(move, key.id), get_store(key.store)
    held = {v.version: v.destroyed for v in target.versions(path)}
    verified = []
    for number, fingerprint in sorted(live_versions(key).items()):
        if number not in held:
            raise CopyLacks(_lacks(key, number))
        try:
            original = audit_hmac(source.get(key.store_path, number))
        except SecretMissing:  # retired meanwhile: nothing to compare, nothing to keep
            continue
        try:
            copy = audit_hmac(target.get(path, number))
        except SecretMissing:
            copy = ""
        if not (copy == original == fingerprint):
            raise CopyDiffers(f"The copy of version {number} of key {key.id} differs.")
        verified.append(number)
    strays = [n for n, destroyed in held.items() if not destroyed and n not in verified]
    if strays:
        # After the switch the path is the key's own: a version it gained there is no stray.
        if not TenantMove.objects.filter(pk=move.pk, state=MoveState.VERIFYING).exists():
            raise MoveLeftStep()
        target.destroy(path, strays)
    return verified


def _switch(move: TenantMove, actor: Actor) -> None:
    """Point every key of the tenant and the tenant at the target, in one transaction
    under their locks, with `tenant.store_moved`. A rotation that raced the start and
    still runs sends the move back to copying, to wait for it."""
    now = timezone.now()
    with transaction.atomic(durable=True):
        locked = _locked(move)
        if locked is None or locked.state != MoveState.SWITCHING:
            return
        tenant = Tenant.objects.select_for_update().get(pk=move.tenant_id)
        keys = list(ProviderKey.objects.select_for_update().filter(tenant=tenant))
        if Rotation.objects.filter(key__tenant=tenant, state__in=RUNNING_ROTATION).exists():
            wait = now + timedelta(seconds=ROTATION_WAIT)
            _change(locked, MoveState.COPYING, "switch", "waiting", "a rotation runs", wait)
            return
        plan: dict[str, Any] = dict(locked.keys)
        lacking = _changed_since_copy(keys, plan)
        if lacking:
            _back_to_copying(locked, "switch", lacking, actor)
            return
        for key in keys:
            entry = plan.setdefault(str(key.id), _revoked_entry(move, key))
            key.store, key.store_path = move.target, entry["path"]
            key.save(update_fields=["store", "store_path", "updated_at"])
        tenant.store = move.target
        tenant.save(update_fields=["store", "updated_at"])
        locked.keys, locked.switched_at = plan, now
        live = [plan[str(k.id)] for k in keys if k.status != KeyStatus.REVOKED]
        versions = sum(len(e["verified"]) for e in live)
        detail = f"{len(live)} keys, {versions} versions"
        _change(locked, MoveState.DESTROYING, "switch", "done", detail)
        record(
            "tenant.store_moved",
            actor=actor,
            tenant=tenant.slug,
            target=move_target(move),
            details={
                **_stores(move),
                "keys": len(live),
                "versions": versions,
                "revoked_keys": len(plan) - len(live),
            },
        )


def _changed_since_copy(keys: list[ProviderKey], plan: dict[str, Any]) -> str:
    """What the copy lacks: a live key that was not verified, or a version that was
    not ("" when nothing)."""
    for key in keys:
        if key.status == KeyStatus.REVOKED:
            continue
        entry = plan.get(str(key.id))
        if entry is None:
            return f"The copy lacks key {key.id}."
        unverified = sorted(set(live_versions(key)) - set(entry["verified"]))
        if unverified:
            return _lacks(key, unverified[0])
    return ""


def _lacks(key: ProviderKey, number: int) -> str:
    return f"The copy lacks version {number} of key {key.id}, live in the source."


def _back_to_copying(locked: TenantMove, step: str, lacking: str, actor: Actor) -> None:
    """Send the move back to copying what it lacks, a while later each time; one that
    keeps coming back fails (call under its lock)."""
    if locked.recopies >= RECOPY_LIMIT:
        _fail(locked, step, f"{lacking} Gave up after {RECOPY_LIMIT} attempts.", actor)
        return
    wait = timedelta(seconds=RECOPY_WAIT * 2**locked.recopies)
    locked.recopies += 1
    _change(locked, MoveState.COPYING, step, "waiting", lacking, timezone.now() + wait)


def _revoked_entry(move: TenantMove, key: ProviderKey) -> dict[str, Any]:
    """A key revoked before the switch: nothing copied, its old path emptied too."""
    return {"source": key.store, "source_path": key.store_path, "path": target_path(move, key.id)}


def _destroy(move: TenantMove, actor: Actor) -> None:
    """Empty the source of every switched key; a key revoked meanwhile loses its copies
    too, and a copied version retired since the copy is destroyed in the target."""
    target = get_store(move.target)
    for key_id, entry in move.keys.items():
        get_store(entry["source"]).purge(entry["source_path"])
        key = ProviderKey.objects.get(pk=key_id)
        if key.status == KeyStatus.REVOKED:
            target.purge(entry["path"])
            continue
        target.destroy(entry["path"], _copies_not_live(key, entry, target))
    with transaction.atomic(durable=True):
        locked = _locked(move)
        if locked is None or locked.state != MoveState.DESTROYING:
            return
        _change(locked, MoveState.COMPLETED, "destroy", "done", f"{len(move.keys)} paths emptied")
        record(
            "tenant.move_completed",
            actor=actor,
            tenant=move.tenant.slug,
            target=move_target(move),
            details={**_stores(move), "emptied": len(move.keys)},
        )


def _copies_not_live(key: ProviderKey, entry: dict[str, Any], target: SecretStore) -> list[int]:
    """The copied numbers the key no longer holds live (retired since the copy, whatever
    its row says yet); the versions the key gained in the target after the switch are
    above them and left alone."""
    copied, live = max(entry["verified"], default=0), live_versions(key)
    held = target.versions(entry["path"])
    return [
        v.version for v in held if not v.destroyed and v.version <= copied and v.version not in live
    ]


# -- failing and cleaning up ----------------------------------------------------------------
def fail_move(move: TenantMove, step: str, failure: str, actor: Actor) -> None:
    """End a move that has not switched: the tenant stays on the source; the copies are
    destroyed (now, or by the sweep while the target cannot answer)."""
    with transaction.atomic(durable=True):
        locked = _locked(move)
        if locked is None or locked.state not in BEFORE_SWITCH:
            return
        _fail(locked, step, failure, actor)
    move.state = MoveState.FAILED


def _fail(locked: TenantMove, step: str, failure: str, actor: Actor) -> None:
    """Mark the move failed with `tenant.move_failed` (call under its lock)."""
    locked.failure = failure[:500]
    _change(locked, MoveState.FAILED, step, "failed", failure)
    record(
        "tenant.move_failed",
        actor=actor,
        outcome=AuditOutcome.ERROR,
        tenant=locked.tenant.slug,
        target=move_target(locked),
        details={**_stores(locked), "step": step, "reason": failure[:300]},
    )


def do_cancel_move(move: TenantMove, *, actor: Actor) -> TenantMove:
    """Stop a move that has not switched: the tenant stays on its source and the copies
    are destroyed (now, or by the sweep while the target cannot answer); 409 once it
    has switched or ended."""
    with transaction.atomic(durable=True):
        locked = _locked(move)
        if locked is None or locked.state not in BEFORE_SWITCH:
            raise MoveNotCancellable()
        step = STEP_OF[MoveState(locked.state)]
        locked.failure = "Cancelled."
        _change(locked, MoveState.CANCELLED, step, "cancelled")
        record(
            "tenant.move_cancelled",
            actor=actor,
            tenant=locked.tenant.slug,
            target=move_target(locked),
            details={**_stores(locked), "step": step},
        )
    with contextlib.suppress(StoreUnavailable):  # the sweep finishes it
        discard_copies(locked)
    return _move(move.pk) or locked


def discard_copies(move: TenantMove) -> bool:
    """Empty the target of a failed or cancelled move's copies, for every key of the
    tenant (a killed run may have copied a key before it was noted); False if that was
    noted already (the purge runs again all the same)."""
    target = get_store(move.target)
    for key_id in ProviderKey.objects.filter(tenant_id=move.tenant_id).values_list("id", flat=True):
        target.purge(target_path(move, key_id))
    done = TenantMove.objects.filter(pk=move.pk, state__in=ABANDONED_MOVE, discarded_at=None)
    return bool(done.update(discarded_at=timezone.now()))


# -- state changes --------------------------------------------------------------------------
def _locked(move: TenantMove) -> TenantMove | None:
    return TenantMove.objects.select_for_update().filter(pk=move.pk).first()


def _set_state(
    move: TenantMove,
    old: str,
    new: str,
    *,
    step: str,
    detail: str = "",
    keys: dict[str, Any] | None = None,
) -> bool:
    """A compare-and-set from `old` to `new` under the move's lock."""
    with transaction.atomic(durable=True):
        locked = _locked(move)
        if locked is None or locked.state != old:
            return False
        if keys is not None:
            locked.keys = keys
        _change(locked, new, step, "done", detail)
    move.state = new
    return True


def _change(
    move: TenantMove,
    state: str,
    step: str,
    ended: str,
    detail: str = "",
    not_before: datetime | None = None,
) -> None:
    """The move's new state with `step` marked as it ended, and no step before
    `not_before` (call under its lock)."""
    now = timezone.now()
    mark = {"step": step, "state": ended, "at": now.isoformat()}
    if detail:
        mark["detail"] = detail[:500]
    move.steps = [mark if s["step"] == step else s for s in move.steps]
    move.state = state
    move.not_before = not_before
    if state in (MoveState.COMPLETED, *ABANDONED_MOVE):
        move.finished_at = now
    move.save()
