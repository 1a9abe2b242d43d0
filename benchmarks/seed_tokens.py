"""Seed the benchmark database: a tenant, a key in Vault, a principal with a grant, and a
long-lived token. Writes the credentials the load generator needs to the file named as the
only argument (created with mode 0600), never to standard output."""

from __future__ import annotations

import json
import os
import sys

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings.settings")
django.setup()

from audit.actors import Actor  # noqa: E402
from kms.actions import keys, tokens  # noqa: E402
from tenants.actions import (  # noqa: E402
    do_create_grant,
    do_create_principal,
    do_create_tenant,
)

SYSTEM = Actor.system("benchmark")


def main() -> None:
    tenant = do_create_tenant("bench", "Benchmark tenant", actor=SYSTEM)
    secret = "sk-proj-" + "BenchmarkKey0123456789" * 2
    keys.do_onboard_key(
        tenant, keys.KeyInput("openai", "prod", secret), validate=False, actor=SYSTEM
    )
    principal, principal_secret = do_create_principal("bench-svc", actor=SYSTEM)
    do_create_grant(principal, tenant, "openai", ["release", "proxy"], 3600, actor=SYSTEM)
    _, token = tokens.do_issue_token(
        principal,
        tokens.TokenRequest(
            tenant="bench", provider="openai", scopes=["release", "proxy"], ttl_seconds=3600
        ),
        actor=Actor("principal", str(principal.id)),
    )
    fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump({"principal_secret": principal_secret, "token": token, "tenant": "bench"}, out)


if __name__ == "__main__":
    main()
