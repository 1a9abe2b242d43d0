"""Run the audit sequencer: integrate committed events into their chains, continuously.

Run one per deployment (more are harmless: a cluster-wide lock lets one work at a time).
"""

from __future__ import annotations

import signal
import time
from types import FrameType
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from django.db import DatabaseError, connection

from audit.sequencer import BATCH, integrate


class Command(BaseCommand):
    help = "Integrate audit events into their chains within KEYWARD_AUDIT_MERGE_DELAY_MS."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--once", action="store_true", help="integrate what is pending, exit")

    def handle(self, *args: Any, **options: Any) -> None:
        stopping = False

        def stop(signum: int, frame: FrameType | None) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        # Polling at a quarter of the merge delay keeps every event within it.
        pause = settings.AUDIT_MERGE_DELAY_MS / 4000
        while not stopping:
            try:
                batch = integrate()
            except DatabaseError:
                connection.close()  # the next round reconnects
                time.sleep(pause)
                continue
            if options["once"] and len(batch.integrated) + len(batch.rejected) < BATCH:
                return
            if len(batch.integrated) + len(batch.rejected) < BATCH:
                time.sleep(pause)
