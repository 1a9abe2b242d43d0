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


def actor_of(request: Any) -> Actor:
    """The actor behind a DRF request (anonymous when unauthenticated or None)."""
    if request is None:
        return Actor.anonymous()
    return actor_for(getattr(request, "user", None))
