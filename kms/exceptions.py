"""Refusals raised by the key-management services."""

from __future__ import annotations

from core.errors import Conflict, DomainError, NotFound, ServiceUnavailable


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


class GrantMissing(DomainError):
    status = 403
    code = "no_grant"
    message = "No grant allows this principal a token for this tenant, provider and scopes."


class TenantSuspended(DomainError):
    status = 403
    code = "tenant_suspended"
    message = "The tenant is suspended."


class TtlTooLong(DomainError):
    status = 400
    code = "ttl_too_long"
    message = "The requested TTL exceeds what the grant allows."


class KeyVersionUnavailable(Conflict):
    code = "key_version_unavailable"
    message = "That version of the key is neither current nor within its grace period."


class KeyAmbiguous(Conflict):
    code = "key_ambiguous"
    message = "The tenant has several active keys for this provider; name one with `key`."


class TokenInactive(DomainError):
    """Any token that does not work, whatever the cause: the same 401 for all."""

    status = 401
    code = "unauthenticated"
    message = "Missing or invalid credentials."

    def __init__(self, audit_reason: str = "inactive") -> None:
        super().__init__()
        self.audit_reason = audit_reason  # for the audit log only, never the response


class ModelNotGranted(DomainError):
    status = 403
    code = "model_not_granted"
    message = "The grant does not allow every model asked for."


class ModelNotAllowed(DomainError):
    status = 403
    code = "model_not_allowed"
    message = "The token does not allow this model."


class ProviderMismatch(DomainError):
    status = 403
    code = "provider_mismatch"
    message = "The token is for another provider."


class InsufficientScope(DomainError):
    status = 403
    code = "insufficient_scope"
    message = "The token does not carry the scope this needs."


class RateLimiterUnavailable(ServiceUnavailable):
    code = "rate_limiter_unavailable"
    message = "Request counting is unavailable, so requests are refused; try again shortly."


class RateLimited(DomainError):
    status = 429
    code = "rate_limited"
    message = "Too many requests for this principal; slow down."


class RotationNotFound(NotFound):
    code = "rotation_not_found"
    message = "No such rotation."


class RotationInProgress(Conflict):
    code = "rotation_in_progress"
    message = "Another rotation of this key is running; wait for it or cancel it."


class RequestTokenReused(Conflict):
    code = "client_request_token_reused"
    message = "This client_request_token started a rotation with another secret."


class RotationNotCancellable(Conflict):
    code = "rotation_not_cancellable"
    message = "Only a rotation whose new version is not yet current can be cancelled."


class KeyPolicyRefused(Conflict):
    code = "key_policy_refused"
    message = "The tenant's key policy does not allow this key."


class ResidencyRefused(Conflict):
    code = "residency_refused"
    message = "The key is held in another region than the tenant's secret store."


class TenantHasKeys(Conflict):
    code = "tenant_has_keys"
    message = "The tenant has live keys in another secret store."


class PlatformTenantPinned(DomainError):
    status = 400
    code = "platform_tenant"
    message = (
        "The platform tenant is not pinned to a store: each platform key is placed in a store "
        "of its own, so that every region has its own."
    )


class MoveNotFound(NotFound):
    code = "move_not_found"
    message = "No such move."


class MoveInProgress(Conflict):
    code = "move_in_progress"
    message = "A move of this tenant between stores is running; wait for it to end."


class MoveNotCancellable(Conflict):
    code = "move_not_cancellable"
    message = "Only a move that has not switched the tenant's keys can be cancelled."


class TenantMoving(Conflict):
    code = "tenant_moving"
    message = (
        "The tenant's keys are being moved to another secret store; no key is added or "
        "rotated until its keys are switched. Try again shortly."
    )


class AlreadyOnStore(Conflict):
    code = "already_on_store"
    message = "The tenant's keys are already in this store."
