"""Mapping an authenticated caller to the actor named in audit events."""

from __future__ import annotations

from typing import Any

from audit.actors import Actor
from tenants.models import ServicePrincipal


def actor_for(identity: Any) -> Actor:
    if isinstance(identity, ServicePrincipal):
        return Actor("principal", str(identity.id))
    if identity is not None and getattr(identity, "is_authenticated", False):
        return Actor("user", str(identity.get_username()))
    return Actor.anonymous()
