"""Console users with passwords, and clients that come from their own address (the sign-in
limits count per source, and tests run in parallel)."""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Any

from django.test import Client
from django.utils import timezone

from audit.actors import Actor
from audit.models import ChainCheck
from audit.recorder import chain_for, record_refusal
from kms.models import KeyStatus, ProviderKey
from tenants.models import Tenant
from tests.factories import make_admin, rand

PASSWORD = "correct horse battery staple"
POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'"
)


def make_console_user(role: str, tenants: list[Tenant] | None = None, name: str = "user") -> Any:
    user, _ = make_admin(role, tenants, username=rand(name))
    user.set_password(PASSWORD)
    user.save()
    return user


def browser_client(**extra: Any) -> Client:
    """A test client from an address of its own."""
    address = "10.{}.{}.{}".format(*secrets.token_bytes(3))
    return Client(REMOTE_ADDR=address, **extra)


def signed_in(user: Any) -> Client:
    client = browser_client()
    client.force_login(user)
    return client


def key_url(key: ProviderKey, action: str = "") -> str:
    """A key's console page, or the page of one of its actions."""
    tail = f"{action}/" if action else ""
    return f"/console/tenants/{key.tenant.slug}/keys/{key.pk}/{tail}"


def sign_in(client: Client, username: str, password: str = PASSWORD) -> Any:
    return client.post("/console/login/", {"username": username, "password": password})


def dashboard_world(world: Any) -> tuple[Tenant, Tenant]:
    """Key A due for rotation, key B invalid, tenant A's chain verified and B's broken, and
    one refusal in each tenant's chain."""
    a, b = world.actors.tenant_a, world.actors.tenant_b
    ProviderKey.objects.filter(pk=world.key_b.pk).update(
        status=KeyStatus.INVALID, label="label-of-b", last_validation_reason="revoked upstream"
    )
    ProviderKey.objects.filter(pk=world.key_a.pk).update(
        label="label-of-a", rotation_due_at=timezone.now() - timedelta(days=3)
    )
    now = timezone.now()
    for tenant, ok in ((a, True), (b, False)):
        ChainCheck.objects.create(
            chain=chain_for(tenant.slug),
            ok=ok,
            events_checked=3,
            head="0" * 64,
            first_bad="" if ok else "seq 2: hash mismatch",
            checked_at=now,
        )
        record_refusal(
            "access.denied",
            actor=Actor("user", f"refused-in-{tenant.slug}"),
            tenant=tenant.slug,
            details={"status": 403},
        )
    return a, b
