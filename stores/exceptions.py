"""Refusals raised by the secret stores: every one fails closed."""

from __future__ import annotations

from core.errors import Conflict, NotFound, ServiceUnavailable


class StoreUnavailable(ServiceUnavailable):
    """The secret store is sealed, unreachable, slow or refusing us: fail closed."""

    code = "secret_store_unavailable"
    message = "The secret store is unavailable; nothing was changed. Try again shortly."


class StoreConflict(Conflict):
    code = "secret_store_conflict"
    message = "The secret changed in the store meanwhile; try again."


class SecretMissing(NotFound):
    code = "secret_missing"
    message = "The secret is no longer in the store."
