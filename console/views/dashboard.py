"""The dashboard: keys by status, invalid and rotation-due keys, the chains' latest
verification and recent refusals."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponseBase
from django.urls import path

from audit import queries as audit_queries
from audit.actions import do_note_search
from audit.models import Outcome
from audit.recorder import chain_for
from console.pages import page, staff_page
from kms import queries as key_queries
from kms.models import KeyStatus
from tenants.access import Access
from tenants.actors import actor_for

LISTED = 20  # rows per dashboard list


def _dashboard_context(access: Access) -> dict[str, Any]:
    keys = access.restrict(key_queries.keys())
    counts = key_queries.key_counts_by_status(keys)
    slugs = access.slugs()
    refusals = audit_queries.events_of_tenants(slugs).filter(outcome=Outcome.DENIED)
    return {
        "counts": [
            (status.label, status.value, counts.get(status.value, 0)) for status in KeyStatus
        ],
        "invalid": list(
            keys.filter(status=KeyStatus.INVALID).order_by("tenant__slug", "label")[:LISTED]
        ),
        "due": list(key_queries.rotation_due(keys)[:LISTED]),
        "checks": list(
            audit_queries.chain_checks(None if slugs is None else [chain_for(s) for s in slugs])
        ),
        "refusals": list(refusals.order_by("-occurred_at")[:LISTED]),
        "tenant_count": access.tenants().count(),
    }


@staff_page("reader")
def dashboard(request: HttpRequest, access: Access) -> HttpResponseBase:
    """Keys by status, invalid and rotation-due keys, the chains' latest verification and
    recent refusals, for the tenants the user covers; readable by auditors too. Reading
    the refusals is a search of the audit log, audited as the API's are."""
    context = _dashboard_context(access)
    searched = {"outcome": Outcome.DENIED.value, "via": "console"}
    do_note_search(searched, len(context["refusals"]), actor=actor_for(request.user))
    htmx = getattr(request, "htmx", None)
    template = "dashboard_panels.html" if htmx else "dashboard.html"
    return page(request, template, context)


urlpatterns = [path("", dashboard, name="dashboard")]
