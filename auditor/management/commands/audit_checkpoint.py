"""Sign each chain's new tree head now (the scheduled job does it every
KEYWARD_SCHEDULE_SIGN_CHECKPOINTS seconds); exit 1 when a chain's checkpoint is refused."""

from __future__ import annotations

import base64
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from auditor.checkpoints import verifier
from auditor.jobs import sign_checkpoints


class Command(BaseCommand):
    help = "Sign a checkpoint of every audit chain that grew since its last one."

    def handle(self, *args: Any, **options: Any) -> None:
        run = sign_checkpoints()
        self.stdout.write(f"log key: {verifier()}")
        for issued in run.issued:
            state = "signed" if issued.new else "unchanged"
            root = base64.b64encode(issued.checkpoint.root).decode()
            self.stdout.write(
                f"{issued.chain}: {state}, size {issued.checkpoint.size}, root {root}"
            )
        for chain in run.busy:
            self.stdout.write(f"{chain}: another signer replaced its checkpoint meanwhile")
        if run.refused:
            chain, reason = next(iter(run.refused.items()))
            raise CommandError(f"checkpoint refused: chain {chain}: {reason}", returncode=1)
