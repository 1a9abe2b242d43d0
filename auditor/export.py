"""Streaming exports of the audit log, JSON Lines or CSV, in constant memory, closed by a
signed manifest (range, count, each chain's first and last link, the previous checkpoint,
the digest of every line) that `audit.offline` verifies without the database.

Each exported chain also carries its signed tree checkpoint (signed for the export when
the chain grew since the last one) and what proves every exported event to be in it: the
complete subtrees left of the first exported event, and a consistency proof from the last
exported event's tree size to the checkpoint's. Events integrated after that checkpoint
wait for the next export.

Each exported event also carries `region`: the region of its tenant's secret store at the
time of the export (null for global events, and for the platform tenant's, whose keys are
placed per key: each key's `key.created` event names its store and region). It is not
part of the event's hash (a tenant's region can change after the event), but it is in the
lines the manifest's `lines_sha256` digests, so the manifest's signature covers it."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db.models import QuerySet
from django.utils import timezone

from audit import merkle, tree
from audit.actors import Actor
from audit.chain import HASHED_FIELDS, canonical_time
from audit.filters import moment
from audit.models import AuditEvent, AuditLink, Checkpoint
from audit.offline import FORMAT, canonical
from audit.queries import integrated_events
from audit.recorder import chain_for
from auditor import checkpoints, proofs, signing
from auditor.actions import do_note_export, do_save_checkpoint
from auditor.archive import ArchiveConflict
from auditor.checkpoints import CheckpointRefused
from core.logging import log_unhandled
from stores.registry import DEFAULT_STORE, store_region
from tenants.models import Tenant

COLUMNS = (*HASHED_FIELDS, "prev_hash", "hash")
EXPORTED = (*COLUMNS, "region")
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class Scope:
    since: datetime | None = None
    until: datetime | None = None
    tenant: str | None = None
    tenants: tuple[str, ...] | None = None  # what a tenant-limited auditor may see

    @classmethod
    def asked(
        cls, params: Mapping[str, str], *, tenant: str | None, tenants: list[str] | None
    ) -> Scope:
        """The scope an export's `since` and `until` ask for (read as searches read them)
        within `tenant` and the tenants the caller covers (None: every tenant)."""
        return cls(
            since=moment("since", params["since"]) if "since" in params else None,
            until=moment("until", params["until"]) if "until" in params else None,
            tenant=tenant,
            tenants=None if tenants is None else tuple(tenants),
        )

    def events(self) -> QuerySet[AuditEvent]:
        events = integrated_events().order_by("chain", "link__seq")
        if self.tenants is not None:
            events = events.filter(tenant__in=self.tenants)
        if self.tenant is not None:
            events = events.filter(tenant=self.tenant)
        if self.since is not None:
            events = events.filter(occurred_at__gte=self.since)
        if self.until is not None:
            events = events.filter(occurred_at__lt=self.until)
        return events

    def chains(self) -> list[str]:
        """The chains this scope's events can be in (those that hold any event)."""
        linked = AuditLink.objects.order_by().values_list("chain", flat=True).distinct()
        if self.tenant is not None:
            linked = linked.filter(chain=chain_for(self.tenant))
        elif self.tenants is not None:
            linked = linked.filter(chain__in=[chain_for(t) for t in self.tenants])
        return sorted(linked)

    def describe(self) -> dict[str, str | None]:
        return {
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "tenant": self.tenant,
        }


def _proof(signed: proofs.Signed, chain: dict[str, Any]) -> dict[str, Any]:
    """What proves a chain's exported run [first_seq, last_seq] to be in its checkpoint."""
    name, size = signed.chain, signed.checkpoint.size
    first, last = chain["first_seq"] - 1, chain["last_seq"]
    left = merkle.Frontier.of(first, tree.reader(name)).hashes()
    onward = tree.consistency(name, last, size) if last < size else []
    return {
        "checkpoint": signed.note,
        "left": [proofs.b64(h) for h in left],
        "consistency": [proofs.b64(h) for h in onward],
    }


def _record(row: tuple[Any, ...]) -> dict[str, Any]:
    event = dict(zip(COLUMNS, row, strict=True))
    event["id"], event["occurred_at"] = str(event["id"]), canonical_time(event["occurred_at"])
    return event


def _neutral(value: Any) -> str:
    """A CSV cell that no spreadsheet will run as a formula."""
    text = (
        value if isinstance(value, str) else canonical(value).decode() if value is not None else ""
    )
    # An apostrophe is added before formula characters, and before a leading apostrophe, so
    # the offline verifier can take exactly one off again.
    return "'" + text if text.startswith((*_FORMULA_STARTS, "'")) else text


class Export:
    """Iterate `lines()`; the last line is the signed manifest (a final CSV row for CSV)."""

    def __init__(self, scope: Scope, fmt: str = "jsonl", *, actor: Actor) -> None:
        self.scope, self.fmt, self.actor = scope, fmt, actor
        self.count = 0
        self._regions: dict[str, str | None] = {}

    def lines(self) -> Iterator[bytes]:
        """The export's lines. If anything stops it before the signed manifest, the file
        ends with an `incomplete` line instead, which no verifier accepts, and the failure
        is audited; `audit.exported` is recorded only once the manifest has been sent."""
        described = self.scope.describe()
        do_note_export(self.fmt, described, actor=self.actor, phase="export_started")
        try:
            yield from self._body()
        except Exception as exc:
            log_unhandled(exc)
            do_note_export(
                self.fmt, described, actor=self.actor, phase="export_failed", lines=self.count
            )
            yield self._trailer({"incomplete": True, "events_sent": self.count})
            return
        do_note_export(self.fmt, described, actor=self.actor, phase="exported", count=self.count)

    def _body(self) -> Iterator[bytes]:
        digest = hashlib.sha256()
        chains: dict[str, dict[str, Any]] = {}
        signed, unproven = self._checkpoints()
        if self.fmt == "csv":
            yield self._csv_row(EXPORTED)
        for row in self.scope.events().values_list(*COLUMNS).iterator(chunk_size=2000):
            event = _record(row)
            held = signed.get(event["chain"])
            if held is not None and event["seq"] > held.checkpoint.size:
                continue  # after the chain's checkpoint: in the next export
            event["region"] = self._region(event["tenant"])
            line = canonical(event) + b"\n"
            digest.update(line)
            self._follow(chains, event)
            self.count += 1
            yield (
                line
                if self.fmt == "jsonl"
                else self._csv_row([_neutral(event[c]) for c in EXPORTED])
            )
        proofs = {
            name: _proof(signed[name], chain) for name, chain in chains.items() if name in signed
        }
        extra = {
            "log_key": str(checkpoints.verifier()),
            "proofs": proofs,
            "unproven": {name: unproven[name] for name in chains if name in unproven},
        }
        yield self._trailer(self._signed_manifest(digest.hexdigest(), chains, extra))

    def _region(self, tenant: str) -> str | None:
        """The region of the tenant's store now, looked up once per tenant; None for a
        global event and for the platform tenant, which has no region of its own."""
        if not tenant:
            return None
        if tenant not in self._regions:
            found = Tenant.objects.filter(slug=tenant).values_list("store", "is_platform").first()
            region = None
            if found is not None and not found[1]:
                region = store_region(found[0] or DEFAULT_STORE)
            self._regions[tenant] = region
        return self._regions[tenant]

    def _checkpoints(self) -> tuple[dict[str, proofs.Signed], dict[str, str]]:
        """Each chain of the scope's latest checkpoint, signed now if the chain grew; a
        chain the signer refuses is exported unproven (its verification will fail)."""
        signed, unproven = {}, {}
        for chain in self.scope.chains():
            try:
                checkpoints.sign_chain(chain)
            except ArchiveConflict:
                pass  # another signer got there first: its checkpoint is read below
            except CheckpointRefused as refusal:
                unproven[chain] = refusal.reason
                continue
            found = proofs.latest(chain)
            if found is not None:
                signed[chain] = found
        return signed, unproven

    def _trailer(self, content: dict[str, Any]) -> bytes:
        """The last line: the signed manifest, or the mark of an incomplete file."""
        text = canonical(content)
        if self.fmt == "jsonl":
            return text + b"\n"
        return self._csv_row(
            ["#manifest" if "manifest" in content else "#incomplete", text.decode()]
        )

    @staticmethod
    def _follow(chains: dict[str, dict[str, Any]], event: dict[str, Any]) -> None:
        chain = chains.setdefault(
            event["chain"],
            {"count": 0, "first_seq": event["seq"], "first_prev_hash": event["prev_hash"]},
        )
        chain["count"] += 1
        chain["last_seq"], chain["head"] = event["seq"], event["hash"]

    @staticmethod
    def _csv_row(cells: Any) -> bytes:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerow(cells)
        return buffer.getvalue().encode()

    def _signed_manifest(
        self, digest: str, chains: dict[str, dict[str, Any]], extra: dict[str, Any]
    ) -> dict[str, Any]:
        signer = signing.signer()
        public = signer.public_pem()
        previous = Checkpoint.objects.first()
        manifest = {
            "format": FORMAT,
            "exported_at": timezone.now().isoformat(),
            "range": self.scope.describe(),
            "count": self.count,
            "lines_sha256": digest,
            "chains": chains,
            "previous_checkpoint": previous.manifest_sha256 if previous else None,
            "algorithm": "ed25519",
            "key_fingerprint": signing.fingerprint(public),
            **extra,
        }
        signature = base64.b64encode(signer.sign(canonical(manifest))).decode()
        do_save_checkpoint(hashlib.sha256(canonical(manifest)).hexdigest(), self.count, chains)
        return {"manifest": manifest, "signature": signature}
