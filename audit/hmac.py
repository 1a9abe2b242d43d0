"""How audit events refer to a secret without holding it: `hmac-sha256:<hex>` under the
deployment's audit key (KEYWARD_AUDIT_HMAC_KEY), as Vault's audit devices do."""

from __future__ import annotations

import hashlib
import hmac
from functools import lru_cache

from django.conf import settings

PREFIX = "hmac-sha256:"


def audit_hmac(value: str) -> str:
    key: bytes = settings.AUDIT_HMAC_KEY
    return PREFIX + hmac.new(key, value.encode(), hashlib.sha256).hexdigest()


def event_mac_key() -> bytes:
    """The key of event MACs, derived from the audit key with its own label so that the
    two uses never share a key."""
    return _derived(settings.AUDIT_HMAC_KEY)


@lru_cache(maxsize=4)
def _derived(key: bytes) -> bytes:
    # Derived once per audit key, not on every audited request.
    return hmac.new(key, b"keyward/audit-event-mac/v1", hashlib.sha256).digest()
