"""Re-wrap every local-store data key under the newest master key."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from audit.actors import Actor
from audit.recorder import record
from stores.local import rewrap_all


class Command(BaseCommand):
    help = "Re-wrap local-store data keys under the newest key of KEYWARD_MASTER_KEYS."

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.MASTER_KEYS:
            raise CommandError("KEYWARD_MASTER_KEYS is not configured: no local store in use.")
        changed = rewrap_all()
        newest = max(settings.MASTER_KEYS)
        with transaction.atomic():
            record(
                "store.master_key_rewrapped",
                actor=Actor.system("rewrap_master_key"),
                details={"master_key_id": newest, "rewrapped": changed},
            )
        self.stdout.write(f"re-wrapped {changed} data keys under master key {newest}")
