"""Run the audit sequencer: integrate committed events into their chains, continuously.

Run one per deployment (more are harmless: a cluster-wide lock lets one work at a time).
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from django.db import DatabaseError, connection

from audit.sequencer import BATCH, integrate
from core.shutdown import stop_on_signals

logger = logging.getLogger("keyward.audit")


class Command(BaseCommand):
    help = "Integrate audit events into their chains within KEYWARD_AUDIT_MERGE_DELAY_MS."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--once", action="store_true", help="integrate what is pending, exit")

    def handle(self, *args: Any, **options: Any) -> None:
        stop = stop_on_signals()
        # Polling at a quarter of the merge delay keeps every event within it.
        pause = settings.AUDIT_MERGE_DELAY_MS / 4000
        while not stop.is_set():
            try:
                batch = integrate()
            except DatabaseError as exc:
                logger.warning("audit sequencer: database error (%s); retrying", type(exc).__name__)
                connection.close()  # the next round reconnects
                stop.wait(pause)
                continue
            if options["once"] and len(batch.integrated) + len(batch.rejected) < BATCH:
                return
            if len(batch.integrated) + len(batch.rejected) < BATCH:
                stop.wait(pause)
