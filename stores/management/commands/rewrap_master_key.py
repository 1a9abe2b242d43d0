"""Re-wrap every local-store data key under the newest master key."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from audit.actors import Actor
from stores.actions import do_rewrap_master_key


class Command(BaseCommand):
    help = "Re-wrap local-store data keys under the newest key of KEYWARD_MASTER_KEYS."

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.MASTER_KEYS:
            raise CommandError("KEYWARD_MASTER_KEYS is not configured: no local store in use.")
        changed, newest = do_rewrap_master_key(actor=Actor.system("rewrap_master_key"))
        self.stdout.write(f"re-wrapped {changed} data keys under master key {newest}")
