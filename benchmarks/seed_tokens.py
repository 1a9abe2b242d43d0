"""Seed the benchmark database for W1-W3 in its two shapes, and write the credentials the
load generator needs to the file named as the only argument (created with mode 0600),
never to standard output.

- worst case: one tenant, one principal, one token;
- refused: for the refusal timing, credentials of the worst case's token and principal
  spelled with another secret, and with a lookup id that does not exist;
- mix: 16 tenants with a key each, 64 principals (four per tenant, each granted its own
  tenant), each holding one long-lived token that it reuses, as a service would.
"""

from __future__ import annotations

import json
import os
import sys

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings.settings")
django.setup()

from audit.actors import Actor  # noqa: E402
from kms.actions import keys, tokens  # noqa: E402
from tenants import credentials  # noqa: E402
from tenants.actions import (  # noqa: E402
    do_create_grant,
    do_create_principal,
    do_create_tenant,
)
from tenants.models import Tenant  # noqa: E402

SYSTEM = Actor.system("benchmark")
MIX_TENANTS, PRINCIPALS_PER_TENANT = 16, 4


def tenant_with_key(slug: str) -> Tenant:
    """A new tenant with one OpenAI key (not validated: the benchmark has no provider)."""
    tenant = do_create_tenant(slug, f"Benchmark tenant {slug}", actor=SYSTEM)
    secret = "sk-proj-" + f"Benchmark{slug}Key0123456789".ljust(44, "x")
    keys.do_onboard_key(
        tenant, keys.KeyInput("openai", "prod", secret), validate=False, actor=SYSTEM
    )
    return tenant


def _principal(name: str, tenant: Tenant) -> dict[str, str]:
    principal, principal_secret = do_create_principal(name, actor=SYSTEM)
    do_create_grant(principal, tenant, "openai", ["release", "proxy"], 3600, actor=SYSTEM)
    _, token = tokens.do_issue_token(
        principal,
        tokens.TokenRequest(
            tenant=tenant.slug, provider="openai", scopes=["release", "proxy"], ttl_seconds=3600
        ),
        actor=Actor("principal", str(principal.id)),
    )
    return {"tenant": tenant.slug, "principal_secret": principal_secret, "token": token}


def _refused(presented: str) -> dict[str, str]:
    """Two well-formed credentials that must be refused: the known lookup id with another
    secret, and a lookup id that does not exist."""
    parsed = credentials.parse(presented)
    assert parsed is not None
    other = "A" * credentials.SECRET_LEN
    return {
        "wrong_secret": credentials.spell(parsed.prefix, parsed.key_id, other),
        "unknown_id": credentials.spell(parsed.prefix, "Z" * credentials.KEY_ID_LEN, other),
    }


def main() -> None:
    worst = _principal("bench-svc", tenant_with_key("bench"))
    mix = []
    for t in range(MIX_TENANTS):
        tenant = tenant_with_key(f"mix-{t:02d}")
        mix += [_principal(f"mix-{t:02d}-svc-{p}", tenant) for p in range(PRINCIPALS_PER_TENANT)]
    fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        refused = {
            "token": _refused(worst["token"]),
            "principal": _refused(worst["principal_secret"]),
        }
        json.dump({"worst": worst, "mix": mix, "refused": refused}, out)


if __name__ == "__main__":
    main()
