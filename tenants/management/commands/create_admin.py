"""Create or update a human admin and print a new `kwa_` token once."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.validators import UnicodeUsernameValidator
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from audit.actors import Actor
from tenants.actions import do_set_admin_role
from tenants.exceptions import TenantNotFound
from tenants.models import Role


class Command(BaseCommand):
    help = "Create or update an admin user with a role and print a new API token (shown once)."

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

    def handle(self, *args: Any, **options: Any) -> None:
        username: str = options["username"]
        try:
            UnicodeUsernameValidator()(username)
        except ValidationError:
            raise CommandError("username: letters, digits and @/./+/-/_ only") from None
        if not username.isascii() or len(username) > 150:
            raise CommandError("username: at most 150 ASCII characters")
        try:
            _, token = do_set_admin_role(
                username, options["role"], options["tenant"], actor=Actor.system("create_admin")
            )
        except TenantNotFound as exc:
            raise CommandError(exc.message) from None
        scope = ", ".join(options["tenant"]) or "every tenant"
        self.stderr.write(f"{username}: {options['role']} for {scope}. API token (shown once):")
        self.stdout.write(token)
