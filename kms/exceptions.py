"""Refusals raised by the key-management services."""

from __future__ import annotations

from settings.errors import Conflict, DomainError, NotFound, ServiceUnavailable


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


class KeyNotFound(NotFound):
    code = "key_not_found"
    message = "No such key."


class KeyNotActive(Conflict):
    code = "key_not_active"
    message = "The key is not active."


class DuplicateKey(Conflict):
    code = "duplicate_key"
    message = "This secret is already onboarded for this tenant."


class LabelTaken(Conflict):
    code = "label_taken"
    message = "This tenant already has a key with this label for this provider."


class InvalidSecret(DomainError):
    status = 400
    code = "invalid_secret"
    message = "The secret is not acceptable."


class ForbiddenBaseUrl(DomainError):
    status = 400
    code = "forbidden_base_url"
    message = "This base_url is not allowed."


class KeyRejectedByProvider(DomainError):
    status = 422
    code = "key_rejected"
    message = "The provider does not accept this key; nothing was stored."


class ProviderUnavailable(ServiceUnavailable):
    code = "provider_unavailable"
    message = (
        "The provider could not be reached to check the key; retry, or skip with validate=false."
    )
