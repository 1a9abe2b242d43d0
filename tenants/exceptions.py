"""Refusals raised by the tenants services."""

from core.errors import Conflict, NotFound


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
