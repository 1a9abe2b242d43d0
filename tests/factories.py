"""Test data with random identifiers, and the actors of every tenancy test:

alice  security admin for every tenant
bob    security admin for tenant A only
carol  auditor for every tenant
dave   auditor for tenant A only
charlie  authenticated, no role: refused everywhere
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from audit.actors import Actor
from tenants import credentials
from tenants.actions import do_create_principal, do_create_tenant, do_set_admin_role
from tenants.models import AdminToken, Tenant

SYSTEM = Actor.system("tests")


def rand(prefix: str = "t") -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def make_tenant(slug: str | None = None, name: str = "Tenant") -> Tenant:
    return do_create_tenant(slug or rand("tenant"), name, actor=SYSTEM)


def make_admin(
    role: str, tenants: list[Tenant] | None = None, username: str | None = None
) -> tuple[Any, str]:
    slugs = [t.slug for t in tenants or []]
    return do_set_admin_role(username or rand("user"), role, slugs, actor=SYSTEM)


def make_roleless_user() -> tuple[Any, str]:
    user = get_user_model().objects.create(username=rand("nobody"))
    minted = credentials.mint(credentials.ADMIN_PREFIX)
    AdminToken.objects.create(
        user=user, key_id=minted.key_id, digest=minted.digest, pepper_id=minted.pepper_id
    )
    return user, minted.plaintext


def make_principal(name: str | None = None) -> tuple[Any, str]:
    return do_create_principal(name or rand("svc"), actor=SYSTEM)


def client(token: str | None = None) -> APIClient:
    api = APIClient()
    if token:
        api.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return api


@dataclass
class Actors:
    tenant_a: Tenant
    tenant_b: Tenant
    tokens: dict[str, str] = field(default_factory=dict)

    def as_(self, name: str) -> APIClient:
        return client(self.tokens[name] if name != "anonymous" else None)


def make_actors() -> Actors:
    a, b = make_tenant(name="Tenant A"), make_tenant(name="Tenant B")
    actors = Actors(a, b)
    actors.tokens["alice"] = make_admin("security_admin", username=rand("alice"))[1]
    actors.tokens["bob"] = make_admin("security_admin", [a], username=rand("bob"))[1]
    actors.tokens["carol"] = make_admin("auditor", username=rand("carol"))[1]
    actors.tokens["dave"] = make_admin("auditor", [a], username=rand("dave"))[1]
    actors.tokens["charlie"] = make_roleless_user()[1]
    actors.tokens["principal"] = make_principal()[1]
    return actors
