"""Streaming exports of the audit log, JSON Lines or CSV, in constant memory, closed by a
signed manifest (range, count, each chain's first and last link, the previous checkpoint,
the digest of every line) that `audit.offline` verifies without the database."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db.models import QuerySet
from django.utils import timezone

from audit.actors import Actor
from audit.chain import HASHED_FIELDS, canonical_time
from audit.models import AuditEvent, Checkpoint
from audit.offline import FORMAT, canonical
from audit.queries import integrated_events
from auditor import signing
from auditor.actions import do_note_export, do_save_checkpoint
from core.logging import log_unhandled

COLUMNS = (*HASHED_FIELDS, "prev_hash", "hash")
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class Scope:
    since: datetime | None = None
    until: datetime | None = None
    tenant: str | None = None
    tenants: tuple[str, ...] | None = None  # what a tenant-limited auditor may see

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

    def describe(self) -> dict[str, str | None]:
        return {
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "tenant": self.tenant,
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
        if self.fmt == "csv":
            yield self._csv_row(COLUMNS)
        for row in self.scope.events().values_list(*COLUMNS).iterator(chunk_size=2000):
            event = _record(row)
            line = canonical(event) + b"\n"
            digest.update(line)
            self._follow(chains, event)
            self.count += 1
            yield (
                line
                if self.fmt == "jsonl"
                else self._csv_row([_neutral(event[c]) for c in COLUMNS])
            )
        yield self._trailer(self._signed_manifest(digest.hexdigest(), chains))

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

    def _signed_manifest(self, digest: str, chains: dict[str, dict[str, Any]]) -> dict[str, Any]:
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
        }
        signature = base64.b64encode(signer.sign(canonical(manifest))).decode()
        do_save_checkpoint(hashlib.sha256(canonical(manifest)).hexdigest(), self.count, chains)
        return {"manifest": manifest, "signature": signature}
