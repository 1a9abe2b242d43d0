"""Create or update a human admin and print a new `kwa_` token once; optionally set the
console password, read from standard input so that it is in no shell history or process
list."""

from __future__ import annotations

import getpass
import sys
from typing import Any

from django.contrib.auth import password_validation
from django.contrib.auth.validators import UnicodeUsernameValidator
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from audit.actors import Actor
from tenants.actions import do_set_admin_password, do_set_admin_role
from tenants.exceptions import TenantNotFound
from tenants.models import Role


class Command(BaseCommand):
    help = "Create or update an admin user with a role and print a new API token (shown once)."
    stealth_options = ("stdin",)

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--role", required=True, choices=[r.value for r in Role])
        parser.add_argument(
            "--tenant",
            action="append",
            default=[],
            metavar="SLUG",
            help="limit the role to this tenant (repeat for several); default: every tenant",
        )
        parser.add_argument(
            "--password-stdin",
            action="store_true",
            help="read a console password from standard input (its first line; prompted for, "
            "unechoed, on a terminal) and set it",
        )

    def _password(self, options: dict[str, Any]) -> str | None:
        """The password to set, checked against the validators before anything changes."""
        if not options["password_stdin"]:
            return None
        stream = options.get("stdin") or sys.stdin
        if stream.isatty():
            password = getpass.getpass("Console password: ")
        else:
            password = stream.readline().removesuffix("\n").removesuffix("\r")
        try:
            password_validation.validate_password(password)
        except ValidationError as exc:
            raise CommandError("password: " + " ".join(exc.messages)) from None
        return password

    def handle(self, *args: Any, **options: Any) -> None:
        username: str = options["username"]
        try:
            UnicodeUsernameValidator()(username)
        except ValidationError:
            raise CommandError("username: letters, digits and @/./+/-/_ only") from None
        if not username.isascii() or len(username) > 150:
            raise CommandError("username: at most 150 ASCII characters")
        password = self._password(options)
        try:
            _, token = do_set_admin_role(
                username, options["role"], options["tenant"], actor=Actor.system("create_admin")
            )
        except TenantNotFound as exc:
            raise CommandError(exc.message) from None
        if password is not None:
            do_set_admin_password(username, password, actor=Actor.system("create_admin"))
            self.stderr.write(f"{username}: console password set.")
        scope = ", ".join(options["tenant"]) or "every tenant"
        self.stderr.write(f"{username}: {options['role']} for {scope}. API token (shown once):")
        self.stdout.write(token)
