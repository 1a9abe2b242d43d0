"""Verify an export offline: the file and the public key are all it needs."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from audit.offline import add_trust_arguments, trust_of, verify_file


class Command(BaseCommand):
    help = (
        "Verify an audit export against the signing public key (exit 1 naming the first bad line)."
    )
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("export", type=Path)
        parser.add_argument("--public-key", type=Path, required=True)
        parser.add_argument("--previous", type=Path, help="an earlier export this one must extend")
        add_trust_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        report = verify_file(
            options["export"],
            options["public_key"].read_bytes(),
            options["previous"],
            trust_of(argparse.Namespace(**options)),
        )
        if not report.ok:
            raise CommandError(report.problems[0], returncode=1)
        proven = f", {len(report.roots)} chains proven in their checkpoints" if report.roots else ""
        self.stdout.write(f"ok: {report.events} events, signature valid{proven}")
