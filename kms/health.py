"""Readiness of the configured secret store."""

from __future__ import annotations

import os

from django.conf import settings


def secret_store_ready() -> bool:
    """The local store needs its master key ring and a writable data directory."""
    if settings.SECRET_STORE == "local":
        return bool(settings.MASTER_KEYS) and os.access(settings.DATA_DIR, os.W_OK)
    return False  # the vault store reports its own health once configured
