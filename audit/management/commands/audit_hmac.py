"""Print the audit HMAC of a value read from standard input (never from the command line,
so it stays out of shell history and process lists)."""

from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from audit.actions import do_lookup_hmac
from audit.actors import Actor


class Command(BaseCommand):
    help = "Read a value on standard input and print its hmac-sha256 under the audit key."

    def handle(self, *args: Any, **options: Any) -> None:
        value = sys.stdin.readline().rstrip("\r\n")
        if not value:
            raise CommandError("no value on standard input")
        self.stdout.write(do_lookup_hmac(value, actor=Actor.system("audit_hmac")))
