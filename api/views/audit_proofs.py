"""Auditor endpoints for checking the log as a transparency log: signed checkpoints,
inclusion and consistency proofs, and verification against the checkpoints. Each read is
itself audited."""

from __future__ import annotations

import uuid

from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response

from api.errors import audit_refusal
from api.views.audit import Auditor, AuditView, _query
from audit.actions import do_note_read
from audit.filters import BadFilter, refuse_unknown
from audit.models import AuditLink
from audit.recorder import GLOBAL_CHAIN, chain_for
from auditor import checkpoints, proofs
from auditor.verification import verification_report
from core.errors import NotFound
from tenants.models import Tenant
from tenants.validators import SLUG, SLUG_PATTERN

CHAIN = {"type": "string", "pattern": f"^(global|tenant:{SLUG_PATTERN[1:-2]})$"}
SIZE = {"type": "integer", "minimum": 1, "maximum": 2**63 - 1}
ONE_CHAIN = _query("chain", "one chain: global, or tenant:<slug>", type=CHAIN)


class ChainNotFound(NotFound):
    code = "chain_not_found"
    message = "No such audit chain."


class EventNotFound(NotFound):
    code = "event_not_found"
    message = "No such audit event in a chain."


class ProofView(AuditView):
    permissions_by_method = {"GET": (Auditor,)}
    allowed_params: tuple[str, ...] = ()

    def params(self) -> dict[str, str]:
        params = self.request.query_params
        refuse_unknown(params, self.allowed_params, "parameter")
        return {name: params[name] for name in self.allowed_params if name in params}

    def chains(self) -> list[str]:
        """The chains this caller may read: its tenants' (every chain, the global one
        included, when it covers every tenant)."""
        slugs = self.access.slugs()
        if slugs is None:
            return checkpoints.chains()
        return sorted(chain_for(slug) for slug in slugs)

    def asked_chains(self, params: dict[str, str]) -> list[str]:
        """The one chain `?chain=` names (404 unless readable), or every readable one."""
        return [self.chain(params["chain"])] if "chain" in params else self.chains()

    def chain(self, name: str) -> str:
        """`name` when it is a chain this caller may read; 400 when it names no chain at
        all, 404 (audited in the tenant's chain when the tenant exists) otherwise."""
        slug = name.removeprefix("tenant:")
        if name != GLOBAL_CHAIN and (slug == name or not SLUG.match(slug)):
            raise BadFilter(fields={"chain": ["`global` or `tenant:<slug>`."]})
        if name not in self.chains():
            known = name != GLOBAL_CHAIN and Tenant.objects.filter(slug=slug).exists()
            audit_refusal(self.request, 404, actor=self.actor, tenant=slug if known else None)
            hidden = ChainNotFound()
            hidden.audited = True
            raise hidden
        return name


class CheckpointView(ProofView):
    """The latest signed checkpoint of each chain (C2SP signed-note text, with any witness
    cosignature lines), as held outside the database, and the log's verifier key."""

    allowed_params = ("chain",)

    @extend_schema(parameters=[ONE_CHAIN], responses=dict)
    def get(self, request: Request) -> Response:
        names = self.asked_chains(self.params())
        found = proofs.held_checkpoints(names)
        do_note_read("audit.checkpoint_read", {"chains": len(names)}, actor=self.actor)
        return Response({"log_key": str(checkpoints.verifier()), "checkpoints": found})


class EventProofView(ProofView):
    """The inclusion proof of one event in its chain's tree (`size`: by default its latest
    checkpoint's), with that checkpoint."""

    allowed_params = ("size",)

    @extend_schema(
        parameters=[_query("size", "a tree size; default: the latest checkpoint's", type=SIZE)],
        responses=dict,
    )
    def get(self, request: Request, event_id: uuid.UUID) -> Response:
        params = self.params()
        link = self._link(event_id)
        answer = proofs.inclusion(link, params.get("size"))
        do_note_read(
            "audit.proof_read",
            {"kind": "inclusion", "event_id": answer["event_id"], "size": answer["size"]},
            actor=self.actor,
        )
        return Response(answer)

    def _link(self, event_id: uuid.UUID) -> AuditLink:
        link = AuditLink.objects.select_related("event").filter(event_id=event_id).first()
        slugs = self.access.slugs()
        if link is None or link.event is None:
            raise EventNotFound()
        if slugs is not None and link.event.tenant not in slugs:
            audit_refusal(self.request, 404, actor=self.actor, tenant=link.event.tenant or None)
            hidden = EventNotFound()
            hidden.audited = True
            raise hidden
        return link


class ConsistencyView(ProofView):
    """The consistency proof of a chain's tree between two sizes."""

    allowed_params = ("chain", "from", "to")

    @extend_schema(
        parameters=[
            _query("chain", "the chain: global, or tenant:<slug>", type=CHAIN, required=True),
            _query("from", "the older tree size", type=SIZE, required=True),
            _query("to", "the newer tree size; default: the latest checkpoint's", type=SIZE),
        ],
        responses=dict,
    )
    def get(self, request: Request) -> Response:
        params = self.params()
        if "chain" not in params:
            raise BadFilter(fields={"chain": ["Required."]})
        answer = proofs.consistency(
            self.chain(params["chain"]), params.get("from"), params.get("to")
        )
        do_note_read(
            "audit.proof_read",
            {
                "kind": "consistency",
                "chain": answer["chain"],
                "from": answer["from"],
                "to": answer["to"],
            },
            actor=self.actor,
        )
        return Response(answer)


class VerifyView(ProofView):
    """Verify the chains this caller may read, against their signed checkpoints."""

    allowed_params = ("chain",)

    @extend_schema(parameters=[ONE_CHAIN], responses=dict)
    def get(self, request: Request) -> Response:
        params = self.params()
        names = self.asked_chains(params)
        # The hidden events of every chain only when every chain is asked for.
        whole_log = self.access.slugs() is None and "chain" not in params
        answer = verification_report(names, whole_log=whole_log)
        do_note_read("audit.verified", {"chains": len(names), "ok": answer["ok"]}, actor=self.actor)
        return Response(answer)
