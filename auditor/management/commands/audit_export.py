"""Write a signed audit export to a file; progress on a terminal, quiet otherwise."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.dateparse import parse_datetime

from audit.actors import Actor
from auditor import signing
from auditor.export import Export, Scope


class Command(BaseCommand):
    help = "Export audit events as JSON Lines or CSV with a signed manifest."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
        parser.add_argument("--since")
        parser.add_argument("--until")
        parser.add_argument("--tenant")
        parser.add_argument("--output", required=True, type=Path)
        parser.add_argument(
            "--public-key-out", type=Path, help="also write the public key (PEM) here"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        scope = Scope(
            since=_when(options["since"], "--since"),
            until=_when(options["until"], "--until"),
            tenant=options["tenant"],
        )
        export = Export(scope, options["format"], actor=Actor.system("audit_export"))
        show = sys.stderr.isatty()
        started = last = time.monotonic()
        with options["output"].open("wb") as out:
            for line in export.lines():
                out.write(line)
                now = time.monotonic()
                if show and now - last >= 0.5:
                    last = now
                    rate = export.count / max(now - started, 1e-9)
                    sys.stderr.write(
                        f"\r{export.count} events, {rate:,.0f} events/s, {now - started:.1f}s"
                    )
        if show:  # the final figures, whatever the size of the export
            elapsed = time.monotonic() - started
            rate = export.count / max(elapsed, 1e-9)
            sys.stderr.write(f"\r{export.count} events, {rate:,.0f} events/s, {elapsed:.1f}s\n")
        if options["public_key_out"]:
            options["public_key_out"].write_bytes(signing.signer().public_pem())
        self.stdout.write(f"exported {export.count} events to {options['output']}")


def _when(raw: str | None, name: str) -> Any:
    if raw is None:
        return None
    moment = parse_datetime(raw)
    if moment is None or moment.tzinfo is None:
        raise CommandError(f"{name}: an ISO 8601 time with a zone, e.g. 2026-11-01T00:00:00Z")
    return moment
