"""How audit events refer to a secret without holding it: `hmac-sha256:<hex>` under the
deployment's audit key (KEYWARD_AUDIT_HMAC_KEY), as Vault's audit devices do."""

from __future__ import annotations

import hashlib
import hmac

from django.conf import settings

PREFIX = "hmac-sha256:"


def audit_hmac(value: str) -> str:
    key: bytes = settings.AUDIT_HMAC_KEY
    return PREFIX + hmac.new(key, value.encode(), hashlib.sha256).hexdigest()
