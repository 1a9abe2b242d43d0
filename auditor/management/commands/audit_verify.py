"""Check every audit chain against its signed checkpoint held outside the database, and
that every event is accounted for; exit 0 when intact, 1 naming the first bad event or the
checkpoint a chain contradicts."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from audit.verify import integration
from auditor.archive import archive
from auditor.verification import verify_with_checkpoints


class Command(BaseCommand):
    help = (
        "Verify every audit chain in the database against its signed checkpoint, "
        "and that no event is hidden."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        results = [verified.result for verified in verify_with_checkpoints()]
        broken = [r for r in results if not r.ok]
        checked = sum(r.events_checked for r in results)
        for result in results:
            state = "ok" if result.ok else "BROKEN"
            count = result.events_checked
            self.stdout.write(
                f"{result.chain}: {state}, {count} events verified, head {result.head}"
            )
        if broken:
            first = broken[0].first_bad
            where = first.describe() if first is not None else broken[0].chain
            raise CommandError(f"audit chain broken: {where}", returncode=1)
        report = integration()
        if report.unaccounted:
            raise CommandError(
                f"events in no chain and not pending (hidden from the sequencer): "
                f"{', '.join(report.unaccounted)}",
                returncode=1,
            )
        if report.rejected:
            raise CommandError(
                f"events kept out of the chains: {'; '.join(report.rejected)}",
                returncode=1,
            )
        pending = f", {report.pending} awaiting integration" if report.pending else ""
        if report.lagging():
            pending += " (the sequencer is behind: is `manage.py audit_sequencer` running?)"
        self.stdout.write(
            f"ok: {len(results)} chains, {checked} events{pending}; "
            f"checkpoints held in {archive().describe()}"
        )
