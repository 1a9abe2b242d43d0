"""Every state change of tenants, principals, admins and grants: one function each,
atomic, auditing inside its transaction. Deleting a grant deletes the tokens issued
under it."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from django.contrib.auth import get_user_model, password_validation
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.utils import timezone

from audit.actors import Actor
from audit.recorder import record
from tenants import credentials
from tenants.actors import actor_for
from tenants.exceptions import (
    PlatformTenantExists,
    PlatformTenantGranted,
    PlatformTenantSettings,
    PrincipalExists,
    PrincipalNotFound,
    TenantExists,
    TenantNotFound,
)
from tenants.models import (
    AdminToken,
    Grant,
    Role,
    ServicePrincipal,
    StaffRole,
    Tenant,
    TenantStatus,
)
from tenants.sso import SsoIdentity, SsoRefused, is_sso_username


def do_create_tenant(slug: str, name: str, *, actor: Actor, platform: bool = False) -> Tenant:
    """A customer tenant, or with `platform` the one tenant holding the deployment's own
    keys."""
    try:
        with transaction.atomic(durable=True):
            if platform and Tenant.objects.filter(is_platform=True).exists():
                raise PlatformTenantExists()
            tenant = Tenant.objects.create(slug=slug, name=name, is_platform=platform)
            record(
                "tenant.created",
                actor=actor,
                tenant=slug,
                target=f"tenant:{slug}",
                details={"name": name, "platform": platform},
            )
    except IntegrityError:
        if platform and Tenant.objects.filter(is_platform=True).exists():
            raise PlatformTenantExists() from None
        raise TenantExists() from None
    return tenant


def do_update_tenant(
    tenant: Tenant,
    *,
    actor: Actor,
    name: str | None = None,
    status: str | None = None,
    key_policy: str | None = None,
    platform_fallback: bool | None = None,
) -> Tenant:
    """Rename, suspend or reactivate a tenant, or set its key policy (which ends the
    tenant's live tokens): each kind of change is its own event, so an auditor searching
    for policy changes finds every one. The platform tenant is only renamed."""
    with transaction.atomic(durable=True):
        locked = Tenant.objects.select_for_update().get(pk=tenant.pk)
        asked = {
            "name": name,
            "status": status,
            "key_policy": key_policy,
            "platform_fallback": platform_fallback,
        }
        changes = {
            field: [getattr(locked, field), value]
            for field, value in asked.items()
            if value is not None and value != getattr(locked, field)
        }
        if not changes:
            return locked
        if locked.is_platform and set(changes) - {"name"}:
            raise PlatformTenantSettings()
        for field, (_, value) in changes.items():
            setattr(locked, field, value)
        fields = [*changes, "updated_at"]
        if changes.get("status", [None, None])[1] == TenantStatus.SUSPENDED:
            locked.tokens_revoked_before = timezone.now()
            fields.append("tokens_revoked_before")
        if {"key_policy", "platform_fallback"} & set(changes):
            locked.key_policy_changed_at = timezone.now()
            fields.append("key_policy_changed_at")
        locked.save(update_fields=fields)
        for action, part in _tenant_events(changes):
            record(
                action,
                actor=actor,
                tenant=locked.slug,
                target=f"tenant:{locked.slug}",
                details={"changes": part},
            )
    return locked


def _tenant_events(changes: dict[str, list[Any]]) -> list[tuple[str, dict[str, list[Any]]]]:
    """The events a tenant update records: its status, its key policy, its other fields."""
    events = []
    if "status" in changes:
        suspended = changes["status"][1] == TenantStatus.SUSPENDED
        events.append(
            ("tenant.suspended" if suspended else "tenant.activated", {"status": changes["status"]})
        )
    policy: dict[str, list[Any]] = {
        f: changes[f] for f in ("key_policy", "platform_fallback") if f in changes
    }
    if policy:
        events.append(("tenant.key_policy_changed", policy))
    if "name" in changes:
        events.append(("tenant.updated", {"name": changes["name"]}))
    return events


def do_create_principal(name: str, *, actor: Actor) -> tuple[ServicePrincipal, str]:
    """Create a principal; returns it and its `kwp_` secret, which is never shown again."""
    secret = credentials.mint(credentials.PRINCIPAL_PREFIX)
    try:
        with transaction.atomic(durable=True):
            principal = ServicePrincipal.objects.create(
                name=name,
                key_id=secret.key_id,
                digest=secret.digest,
                pepper_id=secret.pepper_id,
                created_by=actor.id,
            )
            record(
                "principal.created",
                actor=actor,
                target=f"principal:{principal.id}",
                details={"name": name},
            )
    except IntegrityError:
        raise PrincipalExists() from None
    return principal, secret.plaintext


def do_rotate_principal_secret(
    principal_id: uuid.UUID, *, actor: Actor
) -> tuple[ServicePrincipal, str]:
    """Replace a principal's secret; the old one, and every token issued under it, stops
    working when this commits."""
    secret = credentials.mint(credentials.PRINCIPAL_PREFIX)
    with transaction.atomic(durable=True):
        principal = _locked_principal(principal_id)
        principal.key_id, principal.digest = secret.key_id, secret.digest
        principal.pepper_id, principal.secret_rotated_at = secret.pepper_id, timezone.now()
        principal.last_used_at = None
        principal.save()
        record(
            "principal.secret_rotated",
            actor=actor,
            target=f"principal:{principal.id}",
            details={"name": principal.name},
        )
    return principal, secret.plaintext


def do_delete_principal(principal_id: uuid.UUID, *, actor: Actor) -> None:
    with transaction.atomic(durable=True):
        principal = _locked_principal(principal_id)
        record(
            "principal.deleted",
            actor=actor,
            target=f"principal:{principal.id}",
            details={"name": principal.name},
        )
        principal.delete()


def _locked_principal(principal_id: uuid.UUID) -> ServicePrincipal:
    principal = ServicePrincipal.objects.select_for_update().filter(pk=principal_id).first()
    if principal is None:
        raise PrincipalNotFound()
    return principal


def do_set_admin_role(
    username: str, role: str, tenant_slugs: Iterable[str], *, actor: Actor
) -> tuple[AbstractBaseUser, str]:
    """Create or update a human admin with `role` (over the given tenants, or all when none)
    and issue a new `kwa_` token, returned once."""
    slugs = sorted(set(tenant_slugs))
    token = credentials.mint(credentials.ADMIN_PREFIX)
    with transaction.atomic(durable=True):
        tenants = list(Tenant.objects.filter(slug__in=slugs))
        missing = set(slugs) - {t.slug for t in tenants}
        if missing:
            raise TenantNotFound(f"No such tenant: {', '.join(sorted(missing))}.")
        user_model = get_user_model()
        user, created = user_model.objects.get_or_create(username=username)
        if created:
            user.set_unusable_password()
            user.save()
        staff, _ = StaffRole.objects.update_or_create(
            user=user, defaults={"role": Role(role), "all_tenants": not slugs}
        )
        staff.tenants.set(tenants)
        AdminToken.objects.create(
            user=user, key_id=token.key_id, digest=token.digest, pepper_id=token.pepper_id
        )
        record(
            "admin.created" if created else "admin.updated",
            actor=actor,
            target=f"user:{username}",
            details={"role": role, "tenants": slugs or "*", "token": f"kwa_{token.key_id}"},
        )
    return user, token.plaintext


def do_set_admin_password(username: str, password: str, *, actor: Actor) -> AbstractBaseUser:
    """Give an existing admin a console password, checked against the password validators
    (Django's ValidationError when it fails them); audited without the password. A single
    sign-on user gets none: it would sign in without the identity provider."""
    if is_sso_username(username):
        raise SsoRefused("sso_user", "A single sign-on user signs in at its identity provider.")
    with transaction.atomic(durable=True):
        user = get_user_model().objects.select_for_update().get(username=username)
        password_validation.validate_password(password, user)
        user.set_password(password)
        user.save(update_fields=["password"])
        record("admin.password_set", actor=actor, target=f"user:{username}")
    return user


def do_sync_sso_user(identity: SsoIdentity, *, via: str) -> AbstractBaseUser:
    """Give a single sign-on user the role and tenants its claims grant now, then audit the
    sign-in, in one transaction. Creates the user (with no password and no `kwa_` token) on
    its first sign-in; `admin.created` or `admin.updated` only when something changed.
    Slugs of no tenant are ignored; `SsoRefused` when none is left, and nothing changes."""
    with transaction.atomic(durable=True):
        tenants = _sso_tenants(identity.tenant_slugs)
        user, created = _sso_user(identity.username)
        staff = StaffRole.objects.filter(user_id=user.pk).first()
        before = _staff_view(staff)
        after = {"role": identity.role, "tenants": [t.slug for t in tenants] if tenants else "*"}
        if before != after:
            staff, _ = StaffRole.objects.update_or_create(
                user_id=user.pk,
                defaults={"role": Role(identity.role), "all_tenants": tenants is None},
            )
            staff.tenants.set(tenants or [])
            record(
                "admin.created" if created else "admin.updated",
                actor=Actor.system(via),
                target=f"user:{identity.username}",
                details={**after, "via": via, **({} if created else {"before": before})},
            )
        _session_event("auth.signed_in", user, via)
    return user


def _sso_tenants(slugs: tuple[str, ...] | None) -> list[Tenant] | None:
    if slugs is None:
        return None
    tenants = list(Tenant.objects.filter(slug__in=slugs).order_by("slug"))
    if not tenants:
        raise SsoRefused("unknown_tenant", "None of the tenants your account names exists here.")
    return tenants


def _sso_user(username: str) -> tuple[AbstractBaseUser, bool]:
    user, created = get_user_model().objects.select_for_update().get_or_create(username=username)
    if created:
        user.set_unusable_password()
        user.save()
    elif not user.is_active:
        raise SsoRefused("inactive", "This account is disabled in Keyward.")
    return user, created


def _staff_view(staff: StaffRole | None) -> dict[str, Any] | None:
    if staff is None:
        return None
    tenants = "*" if staff.all_tenants else sorted(t.slug for t in staff.tenants.all())
    return {"role": staff.role, "tenants": tenants}


def do_record_sign_in(user: AbstractBaseUser, *, via: str) -> None:
    """Audit a console sign-in before the session is opened: no event, no session."""
    _record_session("auth.signed_in", user, via)


def do_record_sign_out(user: AbstractBaseUser, *, via: str) -> None:
    """Audit the end of a console session."""
    _record_session("auth.signed_out", user, via)


def _record_session(action: str, user: AbstractBaseUser, via: str) -> None:
    with transaction.atomic(durable=True):
        _session_event(action, user, via)


def _session_event(action: str, user: AbstractBaseUser, via: str) -> None:
    record(
        action, actor=actor_for(user), target=f"user:{user.get_username()}", details={"via": via}
    )


def do_create_grant(
    principal: ServicePrincipal,
    tenant: Tenant | None,
    provider: str,
    scopes: list[str],
    max_ttl_seconds: int,
    *,
    actor: Actor,
    models: list[str] | None = None,
) -> Grant:
    if tenant is not None and tenant.is_platform:
        raise PlatformTenantGranted()
    with transaction.atomic(durable=True):
        grant = Grant.objects.create(
            principal=principal,
            tenant=tenant,
            provider=provider,
            scopes=sorted(set(scopes)),
            max_ttl_seconds=max_ttl_seconds,
            allowed_models=sorted(set(models or [])),
            created_by=actor.id,
        )
        record(
            "grant.created",
            actor=actor,
            tenant=tenant.slug if tenant else None,
            target=f"grant:{grant.id}",
            details={
                "principal": str(principal.id),
                "principal_name": principal.name,
                "tenant": tenant.slug if tenant else "*",
                "provider": provider,
                "scopes": grant.scopes,
                "max_ttl_seconds": max_ttl_seconds,
                "models": grant.allowed_models,
            },
        )
    return grant


def do_delete_grant(grant: Grant, *, actor: Actor) -> int:
    """Delete a grant and every token issued under it; returns how many tokens went."""
    with transaction.atomic(durable=True):
        locked = (
            Grant.objects.select_for_update(of=("self",)).select_related("tenant").get(pk=grant.pk)
        )
        tokens = locked.tokens.count()
        record(
            "grant.deleted",
            actor=actor,
            tenant=locked.tenant.slug if locked.tenant else None,
            target=f"grant:{locked.id}",
            details={"principal": str(locked.principal_id), "tokens_revoked": tokens},
        )
        locked.delete()
    return tokens
