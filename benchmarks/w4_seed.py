"""Seed the benchmark database for W4: one tenant with an OpenAI key (its base URL comes from
KEYWARD_PROVIDER_BASE_URLS, the fake provider), one service principal granted the `proxy`
scope on it. Writes the principal's secret to the file named as the only argument (created
with mode 0600), never to standard output; the harness then issues the `kwt_` token through
`POST /api/v1/tokens`, as a service would.
"""

from __future__ import annotations

import json
import os
import sys

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings.settings")
django.setup()

from django.conf import settings  # noqa: E402

from benchmarks.seed_tokens import SYSTEM, tenant_with_key  # noqa: E402
from tenants.actions import do_create_grant, do_create_principal  # noqa: E402

TENANT = "bench-proxy"


def main() -> None:
    tenant = tenant_with_key(TENANT)
    principal, principal_secret = do_create_principal("bench-proxy-svc", actor=SYSTEM)
    do_create_grant(principal, tenant, "openai", ["proxy"], settings.TOKEN_MAX_TTL, actor=SYSTEM)
    fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump({"tenant": TENANT, "principal_secret": principal_secret}, out)


if __name__ == "__main__":
    main()
