"""Single sign-on: how an identity provider's claims become a Keyward role and tenants.

The claims are the source of truth at every sign-in, so what the provider takes away is
taken away here too. Usernames are namespaced (`oidc:<subject>`): a local user's name may
not contain a colon, so the two can never be the same account.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from core.errors import DomainError

USERNAME_PREFIX = "oidc:"
MAX_SUBJECT = 150 - len(USERNAME_PREFIX)
# tenants.models.Role's values (this module is read by the settings, before the models),
# the role that reaches more first: a user the claims give both gets that one.
ROLE_ORDER = ("security_admin", "auditor")
_SEPARATORS = re.compile(r"[\s,]+")


class SsoRefused(DomainError):
    """An identity the provider vouched for that may not sign in to Keyward."""

    status = 403
    code = "sso_refused"

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.username = ""  # the Keyward username the claims gave, once known


@dataclass(frozen=True)
class SsoPolicy:
    """Which claims name the user, the role and the tenants, and how their values map."""

    role_map: Mapping[str, str]
    role_claim: str = "groups"
    tenant_claim: str = "keyward_tenants"
    all_tenants_value: str = ""
    username_claim: str = "sub"
    label: str = "Sign in with single sign-on"


@dataclass(frozen=True)
class SsoIdentity:
    """What the claims grant: a username, a role, and tenant slugs (None: every tenant)."""

    username: str
    role: str
    tenant_slugs: tuple[str, ...] | None


def claim_values(claims: Mapping[str, Any], name: str) -> list[str]:
    """A claim as a list of strings: a JSON list, or one string of comma- or space-separated
    values (providers send either); anything else counts as absent."""
    value = claims.get(name)
    if isinstance(value, str):
        return [part for part in _SEPARATORS.split(value) if part]
    if isinstance(value, list):
        return [item.strip() for item in value if isinstance(item, str) and item.strip()]
    return []


def username_for(policy: SsoPolicy, claims: Mapping[str, Any]) -> str:
    subject = claims.get(policy.username_claim)
    if isinstance(subject, int) and not isinstance(subject, bool):
        subject = str(subject)
    if (
        not isinstance(subject, str)
        or not subject
        or len(subject) > MAX_SUBJECT
        or not subject.isprintable()
        or any(c.isspace() for c in subject)
    ):
        raise SsoRefused("no_username", "The identity provider sent no usable user name.")
    return USERNAME_PREFIX + subject


def role_for(policy: SsoPolicy, claims: Mapping[str, Any]) -> str:
    granted = {
        policy.role_map[v] for v in claim_values(claims, policy.role_claim) if v in policy.role_map
    }
    for role in ROLE_ORDER:
        if role in granted:
            return role
    raise SsoRefused("no_role", "Your account has no Keyward role at the identity provider.")


def tenants_for(policy: SsoPolicy, claims: Mapping[str, Any]) -> tuple[str, ...] | None:
    """The tenant slugs the claim names (None for every tenant); a user whose claim names
    none is refused, never given every tenant by default."""
    slugs = claim_values(claims, policy.tenant_claim)
    if policy.all_tenants_value and policy.all_tenants_value in slugs:
        return None
    if not slugs:
        raise SsoRefused(
            "no_tenant", "Your account covers no Keyward tenant at the identity provider."
        )
    return tuple(sorted(set(slugs)))


def identity_for(policy: SsoPolicy, claims: Mapping[str, Any]) -> SsoIdentity:
    """Map a signed-in user's claims to a Keyward identity, or refuse it (`SsoRefused`)."""
    return SsoIdentity(
        username=username_for(policy, claims),
        role=role_for(policy, claims),
        tenant_slugs=tenants_for(policy, claims),
    )


def is_sso_username(username: str) -> bool:
    return username.startswith(USERNAME_PREFIX)
