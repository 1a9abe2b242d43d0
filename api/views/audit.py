"""Auditor endpoints: search the log, and compute the audit HMAC of a value."""

from __future__ import annotations

import re
from typing import Any

from django.db.models import QuerySet
from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import permissions, serializers
from rest_framework.exceptions import NotFound
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.pagination import Cursor, CursorPagination
from rest_framework.request import Request
from rest_framework.response import Response

from api.base import KeywardView, StrictSerializer
from api.schema import listing
from audit import queries as audit_queries
from audit.actions import do_lookup_hmac, do_note_search
from audit.filters import (
    FILTERS,
    BadFilter,
    narrowed,
    page_size,
    parsed_time,
    refuse_unknown,
)
from audit.models import AuditEvent, Outcome
from auditor import signing
from auditor.export import Export, Scope
from tenants import queries as tenant_queries
from tenants.access import SUPERUSER
from tenants.exceptions import TenantNotFound
from tenants.models import Role


class Auditor(permissions.BasePermission):
    def has_permission(self, request: Request, view: Any) -> bool:
        return view.access.role in (SUPERUSER, Role.AUDITOR)


class EventSerializer(serializers.ModelSerializer[AuditEvent]):
    actor = serializers.SerializerMethodField()
    # Null until the sequencer has integrated the event (within the merge delay).
    seq = serializers.IntegerField(source="link.seq", read_only=True, allow_null=True)
    prev_hash = serializers.CharField(source="link.prev_hash", read_only=True, allow_null=True)
    hash = serializers.CharField(source="link.hash", read_only=True, allow_null=True)

    class Meta:
        model = AuditEvent
        fields = (
            "id",
            "seq",
            "chain",
            "occurred_at",
            "actor",
            "action",
            "tenant",
            "target",
            "outcome",
            "request_id",
            "source_ip",
            "details",
            "prev_hash",
            "hash",
        )
        read_only_fields = fields

    def get_actor(self, event: AuditEvent) -> dict[str, str]:
        return {"type": event.actor_type, "id": event.actor_id}


_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")


class OldestFirst(CursorPagination):
    ordering = ("occurred_at", "id")
    page_size = 100
    max_page_size = 1000
    page_size_query_param = "limit"

    def get_page_size(self, request: Request) -> int:
        raw = request.query_params.get(self.page_size_query_param, "")
        return page_size(raw, self.page_size, self.max_page_size)

    def decode_cursor(self, request: Request) -> Cursor | None:
        """The cursor, or 400 when it is not one this API issued (its position must be a
        time, as the ordering's first field is)."""
        raw = request.query_params.get(self.cursor_query_param, "")
        try:
            if raw and not _BASE64.fullmatch(raw):  # b64decode would skip the strange bytes
                raise NotFound()
            cursor = super().decode_cursor(request)
        except NotFound:
            cursor = None
            bad = True
        else:
            bad = (
                cursor is not None
                and cursor.position is not None
                and (parsed_time(str(cursor.position)) is None)
            )
        if bad:
            raise BadFilter("Malformed cursor.", fields={"cursor": ["Not a cursor of this API."]})
        return cursor


def _query(name: str, description: str, **kwargs: Any) -> OpenApiParameter:
    return OpenApiParameter(
        name, location=OpenApiParameter.QUERY, description=description, **kwargs
    )


MOMENT = "an RFC 3339 time with a zone, e.g. 2026-01-31T12:00:00Z"
# Any URL refuses control characters (api.middleware.RequestLineMiddleware).
TEXT = {"type": "string", "pattern": "^[^\\u0000-\\u001f\\u007f]*$"}
SCOPE_PARAMETERS = [
    _query("tenant", "only events of this tenant (slug)", type=TEXT),
    _query("since", f"events at or after {MOMENT}", type=OpenApiTypes.DATETIME),
    _query("until", f"events before {MOMENT}", type=OpenApiTypes.DATETIME),
]
EVENT_PARAMETERS = [
    *SCOPE_PARAMETERS,
    _query("action", "a dotted action, e.g. key.created", type=TEXT),
    _query("actor", "an actor id, a type (user, principal, token, system) or type:id", type=TEXT),
    _query("outcome", "success, denied or error", type=str, enum=list(Outcome.values)),
    _query("cursor", "the cursor of a page, from a previous page's next or previous", type=TEXT),
    _query(
        "limit",
        "events per page (default 100)",
        type={"type": "integer", "minimum": 1, "maximum": 1000},
    ),
]


class AuditView(KeywardView):
    def named_tenant(self, slug: str) -> str:
        """A tenant named in a filter: 404 (audited when hidden) unless the caller covers
        it, as for any object of another tenant."""
        return self.visible(tenant_queries.tenants(), TenantNotFound, slug=slug).slug


class EventListView(AuditView):
    """Search the audit log (newest last, cursor-paginated). Every search is itself audited."""

    permissions_by_method = {"GET": (Auditor,)}

    def searchable(self) -> QuerySet[AuditEvent]:
        return audit_queries.events_of_tenants(self.access.slugs())

    def filtered(self, params: Any) -> QuerySet[AuditEvent]:
        refuse_unknown(params, {*FILTERS, "cursor", "limit"})
        # A number or a choice sent empty is not one: refused, never read as "not sent".
        blank = [name for name in ("limit", "outcome") if params.get(name) == ""]
        if blank:
            raise BadFilter(fields={name: ["May not be empty."] for name in blank})
        events = self.searchable()
        if params.get("tenant"):
            events = events.filter(tenant=self.named_tenant(params["tenant"]))
        return narrowed(events, params)

    @extend_schema(
        operation_id="audit_events_list",
        parameters=EVENT_PARAMETERS,
        responses=listing(EventSerializer, paginated=True),
    )
    def get(self, request: Request) -> Response:
        events = self.filtered(request.query_params)
        paginator = OldestFirst()
        page = paginator.paginate_queryset(events, request, view=self)
        searched = {k: request.query_params[k][:200] for k in FILTERS if k in request.query_params}
        do_note_search(searched, len(page or []), actor=self.actor)
        return paginator.get_paginated_response(EventSerializer(page, many=True).data)


class HmacSerializer(StrictSerializer):
    value = serializers.CharField(max_length=4096, trim_whitespace=False, write_only=True)


class HmacView(KeywardView):
    """The audit HMAC of a value, to find events about a secret without the log holding it
    (as Vault's sys/audit-hash). The value itself is never recorded."""

    permissions_by_method = {"POST": (Auditor,)}

    @extend_schema(request=HmacSerializer, responses=dict)
    def post(self, request: Request) -> Response:
        body = HmacSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        digest = do_lookup_hmac(body.validated_data["value"], actor=self.actor)
        return Response({"hmac": digest}, headers={"Cache-Control": "no-store"})


class _StreamNegotiation(DefaultContentNegotiation):
    """The export streams its own bytes; `format=` names the export format, not a renderer."""

    def select_renderer(self, request: Any, renderers: Any, format_suffix: Any = None) -> Any:
        return renderers[0], renderers[0].media_type


class ExportView(AuditView):
    """Stream a signed export (`format=jsonl|csv`); the manifest is the last line."""

    permissions_by_method = {"GET": (Auditor,)}
    content_negotiation_class = _StreamNegotiation

    @extend_schema(
        parameters=[
            _query("format", "jsonl (the default) or csv", type=str, enum=["jsonl", "csv"]),
            *SCOPE_PARAMETERS,
        ],
        responses={
            (200, "application/x-ndjson"): OpenApiTypes.STR,
            (200, "text/csv"): OpenApiTypes.STR,
        },
    )
    def get(self, request: Request) -> Any:
        params = request.query_params
        fmt = params.get("format", "jsonl")
        if fmt not in ("jsonl", "csv"):
            raise BadFilter(fields={"format": ["jsonl or csv."]})
        refuse_unknown(params, {"format", "since", "until", "tenant"})
        tenant = self.named_tenant(params["tenant"]) if params.get("tenant") else None
        scope = Scope.asked(params, tenant=tenant, tenants=self.access.slugs())
        content_type = "application/x-ndjson" if fmt == "jsonl" else "text/csv"
        response = StreamingHttpResponse(
            Export(scope, fmt, actor=self.actor).lines(), content_type=content_type
        )
        response["Content-Disposition"] = f'attachment; filename="keyward-audit.{fmt}"'
        return response


class PublicKeyView(KeywardView):
    """The public half of the export-signing key, and its fingerprint."""

    permissions_by_method = {"GET": (Auditor,)}

    @extend_schema(responses=dict)
    def get(self, request: Request) -> Response:
        public = signing.signer().public_pem()
        return Response(
            {
                "algorithm": "ed25519",
                "public_key_pem": public.decode(),
                "fingerprint": signing.fingerprint(public),
            }
        )
