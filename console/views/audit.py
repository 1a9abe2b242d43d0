"""The audit log for auditors: events (searched, newest first, paged by cursor), one event
with its chain position and inclusion proof, signed exports and verification. Each page
calls what the API's audit endpoints call, with their permissions and their audit events."""

from __future__ import annotations

import binascii
import contextlib
import json
import re
import uuid
from base64 import urlsafe_b64decode, urlsafe_b64encode
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import wraps
from typing import Any
from urllib.parse import urlencode

from django.db import DatabaseError
from django.db.models import Q, QuerySet
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    QueryDict,
    StreamingHttpResponse,
)
from django.urls import path, reverse

from audit import queries as audit_queries
from audit.actions import do_note_read, do_note_search
from audit.filters import FILTERS, BadFilter, narrowed, page_size, parsed_time, refuse_unknown
from audit.models import AuditEvent, AuditLink, AuditRejection, Outcome
from audit.recorder import AuditUnavailable, chain_for, record_refusal
from auditor import checkpoints, proofs
from auditor.export import Export, Scope
from auditor.verification import verification_report
from console.pages import Hidden, Page, page, refuse, staff_page, visible_tenant
from tenants.access import SUPERUSER, Access
from tenants.actors import actor_for
from tenants.models import Role, Tenant

# Who reads the log: the roles of the API's `Auditor` permission (security admins manage
# keys and tenants, and are refused here as they are there).
AUDITORS = (SUPERUSER, Role.AUDITOR)
PAGE_SIZE, MAX_PAGE_SIZE = 50, 1000  # the API's maximum
FORMATS = {"jsonl": "application/x-ndjson", "csv": "text/csv"}
EXPORT_FIELDS = ("format", "tenant", "since", "until")
_CURSOR = re.compile(r"[A-Za-z0-9_-]{1,200}")


def audit_page(methods: tuple[str, ...] = ("GET",)) -> Callable[[Page], Page]:
    """A staff page that only the API's auditors may open (403, audited, for others)."""

    def decorate(view: Page) -> Page:
        @staff_page("reader", methods)
        @wraps(view)
        def checked(
            request: HttpRequest, access: Access, *args: Any, **kwargs: Any
        ) -> HttpResponseBase:
            if access.role not in AUDITORS:
                return refuse(request)
            return view(request, access, *args, **kwargs)

        return checked

    return decorate


def _given(query: QueryDict) -> dict[str, str]:
    """The parameters a form sent with a value (an empty field filters nothing)."""
    return {name: str(value) for name, value in query.items() if value != ""}


def _covered_tenant(access: Access, params: Mapping[str, str]) -> str | None:
    """The tenant the parameters name, if the reader covers it (audited 404 otherwise)."""
    return visible_tenant(access, params["tenant"]).slug if params.get("tenant") else None


# Events: a keyset cursor over (occurred_at, id), newest first.


@dataclass(frozen=True)
class Cursor:
    older: bool  # which way the page goes from the position
    at: datetime
    event_id: uuid.UUID

    def encode(self) -> str:
        text = f"{'o' if self.older else 'n'}|{self.at.isoformat()}|{self.event_id}"
        return urlsafe_b64encode(text.encode()).decode().rstrip("=")

    @classmethod
    def of(cls, older: bool, event: AuditEvent) -> Cursor:
        return cls(older, event.occurred_at, event.id)

    @classmethod
    def decode(cls, raw: str) -> Cursor:
        """The cursor a page link carried; 400 for anything this page did not issue."""
        try:
            if not _CURSOR.fullmatch(raw):
                raise ValueError(raw)
            way, at, ident = urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode().split("|")
            moment = parsed_time(at)
            if way not in ("o", "n") or moment is None:
                raise ValueError(raw)
            return cls(way == "o", moment, uuid.UUID(ident))
        except (ValueError, binascii.Error):
            raise BadFilter(
                "Malformed cursor.", fields={"cursor": ["Not a cursor of this page."]}
            ) from None


@dataclass(frozen=True)
class EventPage:
    events: list[AuditEvent]
    older: Cursor | None
    newer: Cursor | None


def _page_of(events: QuerySet[AuditEvent], cursor: Cursor | None, size: int) -> EventPage:
    """One page of `events`, newest first, from the cursor's position."""
    newest_first = events.order_by("-occurred_at", "-id")
    if cursor is not None and not cursor.older:
        after = Q(occurred_at__gt=cursor.at) | Q(occurred_at=cursor.at, id__gt=cursor.event_id)
        rows = list(events.order_by("occurred_at", "id").filter(after)[: size + 1])
        shown = rows[:size][::-1]
        more_newer, more_older = len(rows) > size, True
    else:
        if cursor is not None:
            newest_first = newest_first.filter(
                Q(occurred_at__lt=cursor.at) | Q(occurred_at=cursor.at, id__lt=cursor.event_id)
            )
        rows = list(newest_first[: size + 1])
        shown = rows[:size]
        more_older, more_newer = len(rows) > size, cursor is not None
    return EventPage(
        shown,
        Cursor.of(True, shown[-1]) if shown and more_older else None,
        Cursor.of(False, shown[0]) if shown and more_newer else None,
    )


def _search(access: Access, params: dict[str, str]) -> EventPage:
    """The page of events the parameters ask for, checked as GET /api/v1/audit/events
    checks its query."""
    refuse_unknown(params, {*FILTERS, "cursor", "limit"})
    events = audit_queries.events_of_tenants(access.slugs())
    tenant = _covered_tenant(access, params)
    if tenant is not None:
        events = events.filter(tenant=tenant)
    events = narrowed(events, params)
    size = page_size(params.get("limit", ""), PAGE_SIZE, MAX_PAGE_SIZE)
    cursor = Cursor.decode(params["cursor"]) if "cursor" in params else None
    return _page_of(events, cursor, size)


def _link_to(params: dict[str, str], cursor: Cursor | None) -> str | None:
    if cursor is None:
        return None
    kept = {name: value for name, value in params.items() if name != "cursor"}
    return f"{reverse('console:audit')}?{urlencode({**kept, 'cursor': cursor.encode()})}"


def _events_page(
    request: HttpRequest,
    access: Access,
    params: dict[str, str],
    found: EventPage | None = None,
    refusal: BadFilter | None = None,
) -> HttpResponse:
    context = {
        "params": params,
        "tenants": list(access.tenants().order_by("slug")),
        "outcomes": Outcome.values,
        "found": found,
        "older": _link_to(params, found.older if found else None),
        "newer": _link_to(params, found.newer if found else None),
        "refusal": refusal,
        "field_errors": refusal.extra.get("fields", {}) if refusal else {},
    }
    htmx = getattr(request, "htmx", None)
    partial = bool(htmx) and not htmx.history_restore_request  # type: ignore[union-attr]
    template = "audit_results.html" if partial else "audit_events.html"
    return page(request, template, context, status=400 if refusal else 200)


@audit_page()
def event_list(request: HttpRequest, access: Access) -> HttpResponseBase:
    """Search the events of the tenants the reader covers (the global chain only for
    readers of every tenant); every search is audited (`audit.searched`), a refused one
    is a 400 that records nothing."""
    params = _given(request.GET)
    try:
        found = _search(access, params)
    except BadFilter as refusal:
        return _events_page(request, access, params, refusal=refusal)
    searched = {name: params[name][:200] for name in FILTERS if name in params}
    do_note_search({**searched, "via": "console"}, len(found.events), actor=actor_for(request.user))
    return _events_page(request, access, params, found)


# One event.


def _readable_event(request: HttpRequest, access: Access, event_id: uuid.UUID) -> AuditEvent:
    """The event, if the reader covers its tenant; a 404 otherwise, audited in the chain
    of the event's tenant (the global chain for an event of no tenant), as the API's
    proof endpoint audits it."""
    event = AuditEvent.objects.filter(pk=event_id).first()
    slugs = access.slugs()
    if event is None:
        raise Hidden()
    if slugs is not None and event.tenant not in slugs:
        owner = Tenant.objects.filter(slug=event.tenant).first() if event.tenant else None
        if owner is None:
            details = {"method": request.method, "path": request.path[:200], "status": 404}
            with contextlib.suppress(AuditUnavailable, DatabaseError):  # the 404 stands anyway
                record_refusal("access.denied", actor=actor_for(request.user), details=details)
        raise Hidden(owner)
    return event


@audit_page()
def event_detail(request: HttpRequest, access: Access, event_id: uuid.UUID) -> HttpResponseBase:
    """Every field of one event, its position in its chain (or why it has none yet);
    reading it is audited as a search by id."""
    event = _readable_event(request, access, event_id)
    do_note_search({"id": str(event.id), "via": "console"}, 1, actor=actor_for(request.user))
    context = {
        "event": event,
        "details": json.dumps(event.details, indent=2, sort_keys=True),
        "link": AuditLink.objects.filter(event_id=event.id).first(),
        "rejection": AuditRejection.objects.filter(event_id=event.id).first(),
    }
    return page(request, "audit_event.html", context)


@audit_page()
def event_proof(request: HttpRequest, access: Access, event_id: uuid.UUID) -> HttpResponseBase:
    """The event's inclusion proof in its chain's latest signed checkpoint, computed as
    GET /api/v1/audit/events/{id}/proof computes it and audited the same way."""
    event = _readable_event(request, access, event_id)
    link = AuditLink.objects.filter(event_id=event.id).first()
    if link is None:
        raise Hidden()  # not in a chain yet: nothing to prove, as the API answers
    answer = proofs.inclusion(link, None)
    read = {"kind": "inclusion", "event_id": answer["event_id"], "size": answer["size"]}
    do_note_read("audit.proof_read", read, actor=actor_for(request.user))
    return page(request, "audit_proof.html", {"event": event, "proof": answer})


# Exports.


def _export_page(
    request: HttpRequest, access: Access, params: dict[str, str], refusal: BadFilter | None
) -> HttpResponse:
    context = {
        "params": params,
        "tenants": list(access.tenants().order_by("slug")),
        "refusal": refusal,
        "field_errors": refusal.extra.get("fields", {}) if refusal else {},
    }
    return page(request, "audit_export.html", context, status=400 if refusal else 200)


@audit_page(methods=("GET", "POST"))
def export(request: HttpRequest, access: Access) -> HttpResponseBase:
    """The export form; its POST streams the signed export GET /api/v1/audit/export
    streams (audited `audit.export_started`, then `audit.exported`). A refused form is a
    400 and nothing is exported."""
    if request.method == "GET":
        return _export_page(request, access, {}, None)
    params = {k: v for k, v in _given(request.POST).items() if k in EXPORT_FIELDS}
    fmt = params.get("format", "jsonl")
    try:
        if fmt not in FORMATS:
            raise BadFilter(fields={"format": ["jsonl or csv."]})
        tenant = _covered_tenant(access, params)
        scope = Scope.asked(params, tenant=tenant, tenants=access.slugs())
    except BadFilter as refusal:
        return _export_page(request, access, params, refusal)
    lines = Export(scope, fmt, actor=actor_for(request.user)).lines()
    response = StreamingHttpResponse(lines, content_type=FORMATS[fmt])
    response["Content-Disposition"] = f'attachment; filename="keyward-audit.{fmt}"'
    return response


# Verification.


def _chains(access: Access) -> list[str]:
    """The chains the reader may read, as the API's proof endpoints list them: every chain
    (the global one included) for a reader of every tenant, else her tenants' chains."""
    slugs = access.slugs()
    if slugs is None:
        return checkpoints.chains()
    return sorted(chain_for(slug) for slug in slugs)


@audit_page(methods=("GET", "POST"))
def verify(request: HttpRequest, access: Access) -> HttpResponseBase:
    """Each chain's latest verification and signed checkpoint (read audited as the API's
    `audit.checkpoint_read`); POST verifies the chains now, as GET /api/v1/audit/verify
    does (`audit.verified`), and shows the result."""
    names, actor = _chains(access), actor_for(request.user)
    result = None
    if request.method == "POST":
        result = verification_report(names, whole_log=access.slugs() is None)
        do_note_read("audit.verified", {"chains": len(names), "ok": result["ok"]}, actor=actor)
    held = proofs.held_checkpoints(names)
    do_note_read("audit.checkpoint_read", {"chains": len(names)}, actor=actor)
    context = {
        "checks": list(audit_queries.chain_checks(None if access.slugs() is None else names)),
        "checkpoints": held,
        "log_key": str(checkpoints.verifier()),
        "result": result,
    }
    return page(request, "audit_verify.html", context)


urlpatterns = [
    path("audit/", event_list, name="audit"),
    path("audit/events/<uuid:event_id>/", event_detail, name="audit-event"),
    path("audit/events/<uuid:event_id>/proof/", event_proof, name="audit-proof"),
    path("audit/export/", export, name="audit-export"),
    path("audit/verify/", verify, name="audit-verify"),
]
