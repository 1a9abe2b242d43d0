"""Recording refused requests (401 and 403) so that probing shows up in the audit log."""

from __future__ import annotations

import logging
from typing import Any

from django.db import DatabaseError

from audit.models import Outcome
from audit.recorder import AuditUnavailable, record
from tenants.actors import actor_of

logger = logging.getLogger("keyward.audit")


def record_denial(request: Any, status: int, tenant: str | None = None) -> None:
    """Audit a 401 or 403 (or a 404 that hides another tenant's object), in the chain of the
    tenant it concerns; a failure to record is logged and the refusal still stands."""
    failure: dict[str, str] = getattr(request._request, "keyward_auth_failure", {})
    details: dict[str, Any] = {
        "method": request.method,
        "path": request.path[:200],
        "status": status,
        **failure,
    }
    action = "auth.failed" if status == 401 else "access.denied"
    actor = actor_of(None) if status == 401 else actor_of(request)
    try:
        record(action, actor=actor, outcome=Outcome.DENIED, tenant=tenant, details=details)
    except (AuditUnavailable, DatabaseError):
        logger.error("could not record %s for request", action)
