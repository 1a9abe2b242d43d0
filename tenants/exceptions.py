"""Refusals raised by the tenants services."""

from core.errors import Conflict, DomainError, NotFound


class TenantExists(Conflict):
    code = "tenant_exists"
    message = "A tenant with this slug already exists."


class TenantNotFound(NotFound):
    code = "tenant_not_found"
    message = "No such tenant."


class PrincipalExists(Conflict):
    code = "principal_exists"
    message = "A service principal with this name already exists."


class PrincipalNotFound(NotFound):
    code = "principal_not_found"
    message = "No such service principal."


class PlatformTenantExists(Conflict):
    code = "platform_tenant_exists"
    message = "The platform tenant already exists; its keys are the deployment's own."


class PlatformTenantGranted(DomainError):
    code = "platform_tenant"
    message = (
        "The platform tenant's keys are used on behalf of other tenants by their key policy;"
        " grant access to those tenants instead."
    )


class PlatformTenantSettings(DomainError):
    code = "platform_tenant"
    message = (
        "The platform tenant has no status or key policy of its own: to stop its keys serving"
        " tenants, revoke them or set those tenants' key policy to byok_required."
    )
