"""A provider key's state changes from onboarding to rotation: onboard, set its admin
credential, validate, read, rotate in one step (revocation and retirement are in
`kms.actions.retirement`).

Order of effects, so that a failure anywhere leaves nothing half-done: refuse bad input
first, then ask the provider, then write the secret store, then commit the metadata and
its audit event in one transaction (destroying the new store version if that commit
fails). Failures that stop an action are audited in a transaction of their own. No call
to the secret store or a provider runs inside a transaction or under a row lock.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from audit.actors import Actor
from audit.hmac import audit_hmac
from audit.models import Outcome as AuditOutcome
from audit.recorder import record, record_refusal
from core import asql
from core.errors import InvalidInput
from kms import queries
from kms.egress import check_base_url
from kms.exceptions import (
    DuplicateKey,
    InvalidSecret,
    KeyNotActive,
    KeyRejectedByProvider,
    LabelTaken,
    ProviderUnavailable,
    ResidencyRefused,
    RotationInProgress,
    TenantMoving,
)
from kms.models import (
    RUNNING_ROTATION,
    KeyKind,
    KeyStatus,
    KeyVersion,
    ProviderKey,
    Rotation,
    Stage,
    Validation,
    ValidationResult,
)
from kms.placement import residency_message, store_for_new_key
from kms.providers import (
    AUTHENTIC,
    TRANSIENT,
    CheckOutcome,
    CheckResult,
    check_secret_shape,
    get_adapter,
)
from kms.providers.admin import (
    check_admin_credential,
    check_admin_input,
)
from notify.tasks import notify
from stores.exceptions import StoreConflict, StoreUnavailable
from stores.registry import get_store, store_region
from tenants.models import Tenant

MAX_GRACE_SECONDS = 30 * 24 * 3600


@dataclass(frozen=True)
class KeyInput:
    provider: str
    label: str
    secret: str
    rotation_period_days: int = 90
    base_url: str = ""
    kind: str = KeyKind.API_KEY
    # An admin credential's settings; for a key, the admin credential that rotates it.
    upstream: dict[str, Any] = field(default_factory=dict)
    admin_credential: ProviderKey | None = None
    # The secret store asked for ("": the tenant's own, else the default one).
    store: str = ""


def hint_of(secret: str) -> str:
    return "..." + secret[-4:]


def key_target(key_id: uuid.UUID | str) -> str:
    return f"key:{key_id}"


def _record_store_outage(
    outage: StoreUnavailable, action: str, *, actor: Actor, tenant: str, target: str, **facts: Any
) -> None:
    """Audit an action that the secret store's outage stopped."""
    record_refusal(
        action,
        actor=actor,
        outcome=AuditOutcome.ERROR,
        tenant=tenant,
        target=target,
        details={"reason": "secret store unavailable", **facts},
        refusal=outage,
    )


# -- onboarding --------------------------------------------------------------------------
def do_onboard_key(tenant: Tenant, data: KeyInput, *, validate: bool, actor: Actor) -> ProviderKey:
    """Check, store and register a tenant's provider key; returns its metadata."""
    adapter = get_adapter(data.provider)
    if data.kind == KeyKind.ADMIN:
        if data.admin_credential is not None:
            raise InvalidInput(
                fields={"admin_credential": ["An admin credential is not rotated by another."]}
            )
        check_admin_input(data.provider, data.secret, data.upstream)
        base_url = check_base_url(data.base_url) if data.base_url else ""
    else:
        check_secret_shape(data.provider, data.secret)
        _check_admin_link(tenant, data)
        base_url = _checked_base_url(data.provider, data.base_url)
    fingerprint = audit_hmac(data.secret)
    _refuse_duplicates(tenant, data, fingerprint)
    if queries.tenant_moving(tenant.pk):
        raise TenantMoving()
    key_id = uuid.uuid4()
    facts = {
        "provider": data.provider,
        "label": data.label,
        "fingerprint": fingerprint,
        "hint": hint_of(data.secret),
    }
    store_name = _placed(tenant, data.store, key_target(key_id), facts, actor)
    check = None
    if validate:
        check = (
            check_admin_credential(data.provider, data.secret, data.upstream, base_url)
            if data.kind == KeyKind.ADMIN
            else adapter.check(data.secret, base_url)
        )
    _refuse_on_check(check, "key.onboard_refused", tenant, key_target(key_id), facts, actor)
    if queries.tenant_moving(tenant.pk):  # again: a move may have started during the check
        raise TenantMoving()
    path = f"{tenant.id}/{key_id}"
    store = get_store(store_name)
    try:
        version = store.put(path, data.secret, expected_version=0)
    except StoreUnavailable as outage:
        _record_store_outage(
            outage,
            "key.onboard_failed",
            actor=actor,
            tenant=tenant.slug,
            target=key_target(key_id),
            **facts,
        )
        raise
    try:
        return _register(
            tenant, key_id, data, base_url, fingerprint, store_name, path, version, check, actor
        )
    except ResidencyRefused as refusal:
        # The tenant was pinned elsewhere while the secret was being written.
        _purge_quietly(store_name, path)  # the new key's own path: nothing else in it
        pinned = Tenant.objects.values_list("store", flat=True).get(pk=tenant.pk)
        _record_residency_refusal(
            refusal, tenant, pinned, store_name, key_target(key_id), facts, actor
        )
        raise
    except BaseException:
        _purge_quietly(store_name, path)  # the new key's own path: nothing else in it
        raise


def _placed(tenant: Tenant, asked: str, target: str, facts: dict[str, Any], actor: Actor) -> str:
    """The store the new key goes to; naming a store outside a pinned tenant's is refused
    and audited before anything is written anywhere."""
    try:
        return store_for_new_key(tenant, asked)
    except ResidencyRefused as refusal:
        _record_residency_refusal(refusal, tenant, tenant.store, asked, target, facts, actor)
        raise


def _record_residency_refusal(
    refusal: ResidencyRefused,
    tenant: Tenant,
    pinned: str,
    asked: str,
    target: str,
    facts: dict[str, Any],
    actor: Actor,
) -> None:
    record_refusal(
        "key.onboard_refused",
        actor=actor,
        outcome=AuditOutcome.DENIED,
        tenant=tenant.slug,
        target=target,
        details={
            **facts,
            "reason": "residency",
            "store": asked,
            "region": store_region(asked),
            "tenant_store": pinned,
            "tenant_region": store_region(pinned),
        },
        refusal=refusal,
    )


def _check_admin_link(tenant: Tenant, data: KeyInput) -> None:
    """Only admin credentials have settings; a new key's admin credential is one that
    may rotate it."""
    if data.upstream:
        raise InvalidInput(fields={"upstream": ["Only an admin credential has settings."]})
    _check_admin_for(tenant, data.provider, data.admin_credential)


def _check_admin_for(tenant: Tenant, provider: str, admin: ProviderKey | None) -> None:
    """A key's admin credential is a live admin credential of its tenant and provider."""
    if admin is None:
        return
    if (
        admin.kind != KeyKind.ADMIN
        or admin.tenant_id != tenant.pk
        or admin.provider != provider
        or admin.status == KeyStatus.REVOKED
    ):
        raise InvalidInput(
            fields={
                "admin_credential": [
                    "Must be a live admin credential of this tenant for the same provider."
                ]
            }
        )


def _checked_base_url(provider: str, base_url: str) -> str:
    adapter = get_adapter(provider)
    if base_url:
        return check_base_url(base_url)
    if adapter.base_url_required and not adapter.base_url(""):
        raise InvalidSecret(
            "This provider needs a base_url.", fields={"base_url": ["Required for this provider."]}
        )
    return ""


def _refuse_duplicates(tenant: Tenant, data: KeyInput, fingerprint: str) -> None:
    refuse_known_secret(tenant, fingerprint)
    live = ProviderKey.objects.filter(tenant=tenant).exclude(status=KeyStatus.REVOKED)
    if live.filter(provider=data.provider, label=data.label).exists():
        raise LabelTaken()


def refuse_known_secret(tenant: Tenant, fingerprint: str) -> None:
    """409 naming the live key that already holds this secret, as its current version or
    as a version not yet destroyed."""
    live = ProviderKey.objects.filter(tenant=tenant).exclude(status=KeyStatus.REVOKED)
    existing = live.filter(fingerprint=fingerprint).first()
    if existing is None:
        version = (
            KeyVersion.objects.filter(key__in=live, fingerprint=fingerprint, destroyed_at=None)
            .select_related("key")
            .first()
        )
        existing = version.key if version is not None else None
    if existing is not None:
        raise DuplicateKey(existing_key=str(existing.id))


def _refuse_on_check(
    check: CheckResult | None,
    action: str,
    tenant: Tenant,
    target: str,
    facts: dict[str, Any],
    actor: Actor,
) -> None:
    if check is None or check.outcome in AUTHENTIC:
        return
    details = {
        **facts,
        "result": str(check.outcome),
        "reason": check.reason,
        "http_status": check.http_status,
    }
    refusal: ProviderUnavailable | KeyRejectedByProvider
    if check.outcome in TRANSIENT:
        refusal = ProviderUnavailable(result=str(check.outcome), reason=check.reason)
        action, outcome = action.replace("_refused", "_failed"), AuditOutcome.ERROR
    else:
        refusal = KeyRejectedByProvider(result=str(check.outcome), reason=check.reason)
        outcome = AuditOutcome.DENIED
    record_refusal(
        action,
        actor=actor,
        outcome=outcome,
        tenant=tenant.slug,
        target=target,
        details=details,
        refusal=refusal,
    )
    raise refusal


def _register(
    tenant: Tenant,
    key_id: uuid.UUID,
    data: KeyInput,
    base_url: str,
    fingerprint: str,
    store_name: str,
    path: str,
    version: int,
    check: CheckResult | None,
    actor: Actor,
) -> ProviderKey:
    now = timezone.now()
    try:
        with transaction.atomic(durable=True):
            _still_placed(tenant, store_name)
            key = ProviderKey.objects.create(
                id=key_id,
                tenant=tenant,
                provider=data.provider,
                label=data.label,
                store=store_name,
                store_path=path,
                fingerprint=fingerprint,
                hint=hint_of(data.secret),
                base_url=base_url,
                rotation_period_days=data.rotation_period_days,
                current_version=version,
                rotation_due_at=now + timedelta(days=data.rotation_period_days),
                created_by=actor.id,
                kind=data.kind,
                upstream=data.upstream if data.kind == KeyKind.ADMIN else {},
                admin_credential=data.admin_credential,
            )
            KeyVersion.objects.create(
                key=key,
                version=version,
                stage=Stage.CURRENT,
                fingerprint=fingerprint,
                hint=key.hint,
                created_by=actor.id,
                promoted_at=now,
            )
            if check is not None:
                _note_check(key, version, check, "onboard")
            record(
                "key.created",
                actor=actor,
                tenant=tenant.slug,
                target=key_target(key.id),
                details={
                    "provider": key.provider,
                    "label": key.label,
                    "fingerprint": fingerprint,
                    "hint": key.hint,
                    "version": version,
                    "store": store_name,
                    "region": store_region(store_name),
                    "validated": check is not None,
                    "base_url": base_url,
                },
            )
    except IntegrityError:
        raise DuplicateKey() from None
    return key


def _still_placed(tenant: Tenant, store_name: str) -> None:
    """Under the tenant's row lock (which pinning takes too): its pin, read again, still
    allows the store the secret was written to."""
    pinned = Tenant.objects.select_for_update().values_list("store", flat=True).get(pk=tenant.pk)
    if pinned and pinned != store_name:
        raise ResidencyRefused(residency_message(pinned, store_name))


def _note_check(
    key: ProviderKey, version: int, check: CheckResult, trigger: str
) -> ValidationResult:
    result = ValidationResult.objects.create(
        key=key,
        version=version,
        result=str(check.outcome),
        http_status=check.http_status,
        reason=check.reason,
        duration_ms=check.duration_ms,
        trigger=trigger,
    )
    summary = (
        Validation.OK
        if check.outcome == CheckOutcome.VALID
        else (Validation.INVALID if check.outcome == CheckOutcome.INVALID else Validation.ERROR)
    )
    key.last_validated_at, key.last_validation = result.checked_at, summary
    key.last_validation_result, key.last_validation_reason = str(check.outcome), check.reason
    key.save(
        update_fields=[
            "last_validated_at",
            "last_validation",
            "last_validation_result",
            "last_validation_reason",
            "updated_at",
        ]
    )
    return result


def _permission_failures_exhausted(key: ProviderKey) -> bool:
    """True when the configured number of latest checks all said insufficient_permissions."""
    threshold = settings.INVALID_AFTER_PERMISSION_FAILURES
    if threshold <= 0:
        return False
    latest = list(
        key.validations.order_by("-checked_at", "-id").values_list("result", flat=True)[:threshold]
    )
    return len(latest) == threshold and all(
        r == CheckOutcome.INSUFFICIENT_PERMISSIONS for r in latest
    )


def _key_payload(key: ProviderKey, **extra: Any) -> dict[str, Any]:
    return {
        "tenant": key.tenant.slug,
        "key_id": str(key.id),
        "provider": key.provider,
        "label": key.label,
        **extra,
    }


def _destroy_quietly(store_name: str, path: str, versions: list[int]) -> None:
    # An orphan left by a store outage is unreferenced, and `versions()` still finds it.
    with contextlib.suppress(StoreUnavailable):
        get_store(store_name).destroy(path, versions)


def _purge_quietly(store_name: str, path: str) -> None:
    with contextlib.suppress(StoreUnavailable):
        get_store(store_name).purge(path)


# -- reading a secret --------------------------------------------------------------------
def read_secret(
    key: ProviderKey, version: int, *, actor: Actor, purpose: str, tenant: str = ""
) -> str:
    """The cleartext of one version, for the duration of the caller's use. A store outage
    is audited, in the chain of `tenant` (on whose behalf it was read; by default the
    key's), and fails closed."""
    try:
        return get_store(key.store).get(key.store_path, version)
    except StoreUnavailable as outage:
        _record_read_outage(outage, key, version, actor, purpose, tenant)
        raise


async def aread_secret(
    key: ProviderKey,
    version: int,
    *,
    actor: Actor,
    purpose: str,
    begun: Awaitable[str] | None = None,
    tenant: str = "",
) -> str:
    """`read_secret` on an event loop, or the end of the same read `begun` earlier; the
    outage event, when there is one, is written in a thread."""
    try:
        return await (begun or get_store(key.store).aget(key.store_path, version))
    except StoreUnavailable as outage:
        await asql.in_thread(_record_read_outage)(outage, key, version, actor, purpose, tenant)
        raise


def _record_read_outage(
    outage: StoreUnavailable,
    key: ProviderKey,
    version: int,
    actor: Actor,
    purpose: str,
    tenant: str = "",
) -> None:
    _record_store_outage(
        outage,
        f"{purpose}_failed",
        actor=actor,
        tenant=tenant or key.tenant.slug,
        target=key_target(key.id),
        version=version,
    )


# -- validation --------------------------------------------------------------------------
@dataclass(frozen=True)
class KeyCheck:
    """A validation's stored result and the provider's Retry-After, for a job's retry."""

    result: ValidationResult
    retry_after: float | None


def do_validate_key(key: ProviderKey, *, actor: Actor, trigger: str = "manual") -> KeyCheck:
    """Check the current version with its provider. Only `invalid` changes the status."""
    if key.status == KeyStatus.REVOKED:
        raise KeyNotActive("The key is revoked.")
    version = key.current_version
    secret = read_secret(key, version, actor=actor, purpose="key.validate")
    check = check_now(key, secret)
    del secret
    if check is None:
        raise InvalidInput(f"Keyward has no way to check a {key.provider} admin credential.")
    with transaction.atomic(durable=True):
        locked = ProviderKey.objects.select_for_update().get(pk=key.pk)
        result = _note_check(locked, version, check, trigger)
        previous = locked.status
        if locked.status != KeyStatus.REVOKED and locked.current_version == version:
            if check.outcome == CheckOutcome.INVALID or _permission_failures_exhausted(locked):
                if locked.status != KeyStatus.INVALID:
                    notify(
                        "key.invalid", _key_payload(locked, reason=check.reason, version=version)
                    )
                locked.status = KeyStatus.INVALID
            elif check.outcome == CheckOutcome.VALID and locked.status == KeyStatus.INVALID:
                locked.status = KeyStatus.ACTIVE
            locked.save(update_fields=["status", "updated_at"])
        record(
            "key.validated",
            actor=actor,
            tenant=locked.tenant.slug,
            target=key_target(locked.id),
            outcome=AuditOutcome.ERROR if check.outcome in TRANSIENT else AuditOutcome.SUCCESS,
            details={
                "version": version,
                "result": str(check.outcome),
                "reason": check.reason,
                "http_status": check.http_status,
                "status": [previous, locked.status],
                "trigger": trigger,
            },
        )
    return KeyCheck(result, check.retry_after)


def check_now(key: ProviderKey, secret: str) -> CheckResult | None:
    """A secret of `key` checked with its provider, or, for an admin credential, with
    its admin API (None where that API offers no check)."""
    if key.kind != KeyKind.ADMIN:
        return get_adapter(key.provider).check(secret, key.base_url)
    return check_admin_credential(key.provider, secret, key.upstream, key.base_url)


def shape_check(key: ProviderKey, secret: str) -> None:
    """Refuse a new secret that cannot be this key's, before any network call."""
    if key.kind == KeyKind.ADMIN:
        check_admin_input(key.provider, secret, key.upstream)
    else:
        check_secret_shape(key.provider, secret)


def do_set_admin_credential(
    key: ProviderKey, admin: ProviderKey | None, *, actor: Actor
) -> ProviderKey:
    """Name (or, with None, clear) the admin credential that rotates `key` at its
    provider; audited as `key.admin_credential_set`."""
    if key.kind == KeyKind.ADMIN and admin is not None:
        raise InvalidInput(
            fields={"admin_credential": ["An admin credential is not rotated by another."]}
        )
    _check_admin_for(key.tenant, key.provider, admin)
    with transaction.atomic(durable=True):
        locked = ProviderKey.objects.select_for_update().select_related("tenant").get(pk=key.pk)
        if locked.status == KeyStatus.REVOKED:
            raise KeyNotActive("The key is revoked.")
        previous = locked.admin_credential_id
        locked.admin_credential = admin
        locked.save(update_fields=["admin_credential", "updated_at"])
        record(
            "key.admin_credential_set",
            actor=actor,
            tenant=locked.tenant.slug,
            target=key_target(locked.id),
            details={
                "admin_credential": str(admin.id) if admin else None,
                "previous": str(previous) if previous else None,
            },
        )
    return locked


# -- rotation ----------------------------------------------------------------------------
def do_rotate_key(
    key: ProviderKey, *, secret: str, grace_period_seconds: int, validate: bool, actor: Actor
) -> ProviderKey:
    """Make `secret` the current version; the old one stays usable for the grace period."""
    if key.status == KeyStatus.REVOKED:
        raise KeyNotActive("The key is revoked.")
    if Rotation.objects.filter(key=key, state__in=RUNNING_ROTATION).exists():
        raise RotationInProgress()
    if queries.tenant_moving(key.tenant_id):
        raise TenantMoving()
    shape_check(key, secret)
    fingerprint = audit_hmac(secret)
    refuse_known_secret(key.tenant, fingerprint)
    facts = {
        "provider": key.provider,
        "label": key.label,
        "fingerprint": fingerprint,
        "hint": hint_of(secret),
    }
    check = check_now(key, secret) if validate else None
    _refuse_on_check(check, "key.rotate_refused", key.tenant, key_target(key.id), facts, actor)
    # Read again just before the write: a whole move may have run during the check, and
    # the secret must go where the key is now, never to the store it left.
    key = ProviderKey.objects.select_related("tenant").get(pk=key.pk)
    if queries.tenant_moving(key.tenant_id):
        raise TenantMoving()
    store = get_store(key.store)
    try:
        version = store.put(key.store_path, secret, expected_version=store_head(key))
    except StoreUnavailable as outage:
        _record_store_outage(
            outage,
            "key.rotate_failed",
            actor=actor,
            tenant=key.tenant.slug,
            target=key_target(key.id),
            **facts,
        )
        raise
    try:
        return _promote(
            key, version, fingerprint, hint_of(secret), grace_period_seconds, check, actor
        )
    except BaseException:
        _discard_written(key, version)
        raise


def _discard_written(key: ProviderKey, version: int) -> None:
    """Destroy a version written for `key` and not recorded; if the key moved to another
    store meanwhile, the path it left holds nothing else of it and is purged whole."""
    moved = ProviderKey.objects.filter(pk=key.pk).exclude(store_path=key.store_path).exists()
    if not moved:
        _destroy_quietly(key.store, key.store_path, [version])
        return
    _purge_quietly(key.store, key.store_path)


def _promote(
    key: ProviderKey,
    version: int,
    fingerprint: str,
    hint: str,
    grace: int,
    check: CheckResult | None,
    actor: Actor,
) -> ProviderKey:
    now = timezone.now()
    with transaction.atomic(durable=True):
        locked = ProviderKey.objects.select_for_update().get(pk=key.pk)
        if (
            locked.status == KeyStatus.REVOKED
            or locked.current_version != key.current_version
            or locked.store_path != key.store_path  # moved to another store meanwhile
        ):
            raise StoreConflict("The key changed meanwhile; nothing was rotated.")
        if Rotation.objects.filter(key=locked, state__in=RUNNING_ROTATION).exists():
            raise RotationInProgress()  # a staged rotation started meanwhile
        new = KeyVersion(
            key=locked, version=version, fingerprint=fingerprint, hint=hint, created_by=actor.id
        )
        old = make_current(locked, new, grace, now)
        if check is not None:
            _note_check(locked, version, check, "rotate")
        record_rotated(locked, new, old, actor, validated=check is not None)
    return locked


def store_head(key: ProviderKey) -> int:
    """The newest version the store holds for the key, the one a new version must follow:
    the store's own count, since an attempt that died after writing a version and before
    recording it leaves one no row names (destroyed with the key when it is revoked)."""
    versions = get_store(key.store).versions(key.store_path)
    return max((v.version for v in versions), default=0)


def make_current(key: ProviderKey, new: KeyVersion, grace: int, now: datetime) -> KeyVersion:
    """Under the key's row lock: `new` becomes the current version and the current one
    previous for `grace` seconds (in that order: one current version at every instant);
    returns the one it replaced."""
    old = KeyVersion.objects.get(key=key, stage=Stage.CURRENT)
    old.stage, old.retire_after = Stage.PREVIOUS, now + timedelta(seconds=grace)
    old.save(update_fields=["stage", "retire_after"])
    new.stage, new.promoted_at = Stage.CURRENT, now
    new.save()
    key.current_version, key.fingerprint, key.hint = new.version, new.fingerprint, new.hint
    key.status = KeyStatus.ACTIVE
    key.rotation_due_at = now + timedelta(days=key.rotation_period_days)
    key.save()
    return old


def record_rotated(
    key: ProviderKey, new: KeyVersion, old: KeyVersion, actor: Actor, **facts: Any
) -> None:
    """`key.rotated`: the new current version and the previous one's end of grace."""
    record(
        "key.rotated",
        actor=actor,
        tenant=key.tenant.slug,
        target=key_target(key.id),
        details={
            "version": new.version,
            "previous_version": old.version,
            "fingerprint": new.fingerprint,
            "hint": new.hint,
            "previous_retire_after": old.retire_after.isoformat() if old.retire_after else None,
            **facts,
        },
    )
