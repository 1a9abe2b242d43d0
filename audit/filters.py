"""Filters of a search of the audit log, read from untrusted text as the API and the
console both read them: unknown names, malformed times and sizes are refused (400)."""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from datetime import datetime

from django.db.models import Q, QuerySet
from django.utils.dateparse import parse_datetime

from audit.models import AuditEvent, Outcome
from core.errors import DomainError
from core.numbers import decimal

FILTERS = ("tenant", "action", "actor", "outcome", "since", "until")

# RFC 3339 (the OpenAPI `date-time` format): a zone is required, seconds too.
_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:[Zz]|[+-]\d{2}:\d{2})", re.ASCII
)


class BadFilter(DomainError):
    code = "invalid"


def refuse_unknown(names: Collection[str], allowed: Collection[str], what: str = "filter") -> None:
    """400 naming every parameter that is not one of `allowed`."""
    unknown = sorted(set(names) - set(allowed))
    if unknown:
        label = f"Unknown {what}."
        raise BadFilter(label, fields={name: [label] for name in unknown})


def parsed_time(raw: str) -> datetime | None:
    """A time with a zone in any form Django reads (a cursor's position is one)."""
    try:
        moment = parse_datetime(raw)
    except ValueError:
        return None
    return moment if moment is not None and moment.tzinfo is not None else None


def moment(name: str, raw: str) -> datetime:
    """A filter's time: RFC 3339 only, and a time that exists (not month 13)."""
    found = parsed_time(raw.upper()) if _RFC3339.fullmatch(raw) else None
    if found is None:
        raise BadFilter(
            f"{name} must be an RFC 3339 time with a zone.",
            fields={name: ["Not an RFC 3339 time, such as 2026-01-31T12:00:00Z."]},
        )
    return found


def page_size(raw: str, default: int, maximum: int) -> int:
    """Events per page from `limit`: `default` when empty, else an integer 1..maximum."""
    if not raw:
        return default
    size = decimal(raw)
    if size is None or not 1 <= size <= maximum:
        raise BadFilter(fields={"limit": [f"An integer from 1 to {maximum}."]})
    return size


def narrowed(events: QuerySet[AuditEvent], params: Mapping[str, str]) -> QuerySet[AuditEvent]:
    """`events` narrowed by the filters other than `tenant` (whose visibility the caller
    checks): action, outcome, actor (an id, a type, or type:id), since and until."""
    if params.get("action"):
        events = events.filter(action=params["action"])
    if params.get("outcome"):
        if params["outcome"] not in Outcome.values:
            raise BadFilter(fields={"outcome": [f"One of {', '.join(Outcome.values)}."]})
        events = events.filter(outcome=params["outcome"])
    if params.get("actor"):
        kind, _, ident = params["actor"].partition(":")
        events = (
            events.filter(actor_type=kind, actor_id=ident)
            if ident
            else events.filter(Q(actor_id=kind) | Q(actor_type=kind))
        )
    if "since" in params:
        events = events.filter(occurred_at__gte=moment("since", params["since"]))
    if "until" in params:
        events = events.filter(occurred_at__lt=moment("until", params["until"]))
    return events
