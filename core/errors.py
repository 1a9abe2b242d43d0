"""The refusals services raise. The HTTP layer maps them to the one error shape; nothing
here knows about HTTP frameworks."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """A refusal a service can explain to its caller. Messages never contain secrets.

    `audited` is set once the refusal has its audit event, so that the HTTP layer does not
    record the same refusal a second time."""

    status = 400
    code = "invalid_request"
    message = "The request cannot be carried out."
    retry_after: int | None = None

    def __init__(
        self, message: str | None = None, *, retry_after: int | None = None, **extra: Any
    ) -> None:
        super().__init__(message or self.message)
        self.message = message or self.message
        if retry_after is not None:
            self.retry_after = retry_after
        self.extra = extra
        self.audited = False


class Conflict(DomainError):
    status = 409
    code = "conflict"


class NotFound(DomainError):
    status = 404
    code = "not_found"
    message = "Not found."


class ServiceUnavailable(DomainError):
    status = 503
    code = "service_unavailable"
    message = "A dependency is unavailable; try again shortly."
    retry_after = 5


class InvalidInput(DomainError):
    code = "invalid"
    message = "The request has invalid fields."
