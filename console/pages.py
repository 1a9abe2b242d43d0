"""What every console page shares: rendering with the user's access, the refusals (403
audited as the API's, 404 hiding another tenant's object, a domain refusal explained) and
`staff_page`, the one place where a page checks who may see it."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable
from functools import wraps
from typing import Any, Literal, TypeVar

from django.db import DatabaseError
from django.db.models import Model, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseBase, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_http_methods

from audit.recorder import AuditUnavailable, record_refusal
from console.security import console_view
from core.errors import DomainError
from tenants.access import Access, access_for
from tenants.actors import actor_for
from tenants.models import Tenant

Need = Literal["reader", "admin", "global_admin"]
Page = Callable[..., HttpResponseBase]
M = TypeVar("M", bound=Model)


class Hidden(Exception):
    """A tenant's object this user may not know of: answered 404, like one that is absent."""

    def __init__(self, tenant: Tenant | None = None) -> None:
        super().__init__("hidden")
        self.tenant = tenant


def page(
    request: HttpRequest, template: str, context: dict[str, Any], status: int = 200
) -> HttpResponse:
    """Render a console template with the user's access (the navigation depends on it)."""
    access = access_for(request.user)
    return render(request, f"console/{template}", {"access": access, **context}, status=status)


def refuse(request: HttpRequest, slug: str | None = None) -> HttpResponse:
    """403 for a signed-in user whose role does not reach this page, audited as the API
    audits its 403s (`access.denied`): in the chain of the tenant the URL names, when it
    names one that exists, else in the global chain."""
    details = {"method": request.method, "path": request.path[:200], "status": 403}
    tenant = slug if slug and Tenant.objects.filter(slug=slug).exists() else None
    with contextlib.suppress(AuditUnavailable, DatabaseError):  # the refusal stands anyway
        record_refusal(
            "access.denied", actor=actor_for(request.user), tenant=tenant, details=details
        )
    return page(request, "forbidden.html", {}, status=403)


def hidden(request: HttpRequest, tenant: Tenant | None) -> HttpResponse:
    """404 for an object that does not exist or is not the user's, audited in its
    tenant's chain when that tenant exists, as the API audits the 404s that hide other
    tenants."""
    if tenant is not None:
        details = {"method": request.method, "path": request.path[:200], "status": 404}
        with contextlib.suppress(AuditUnavailable, DatabaseError):
            record_refusal(
                "access.denied", actor=actor_for(request.user), tenant=tenant.slug, details=details
            )
    return page(request, "not_found.html", {}, status=404)


def problem(request: HttpRequest, error: DomainError) -> HttpResponse:
    """A service's refusal, explained with its own message and status (and Retry-After);
    a 403 no service recorded is audited as the API's are."""
    if error.status == 403 and not error.audited:
        return refuse(request, getattr(request.resolver_match, "kwargs", {}).get("slug"))
    context = {"status": error.status, "message": error.message, "code": error.code}
    response = page(request, "problem.html", context, status=error.status)
    if error.retry_after:
        response["Retry-After"] = str(error.retry_after)
    return response


def sign_in_first(request: HttpRequest) -> HttpResponseRedirect:
    return HttpResponseRedirect(f"{reverse('console:login')}?next={request.path}")


def visible_tenant(access: Access, slug: str) -> Tenant:
    """The tenant `slug` names, if this user covers it; `Hidden` otherwise."""
    tenant = Tenant.objects.filter(slug=slug).first()
    if tenant is None or not access.covers(tenant):
        raise Hidden(tenant)
    return tenant


def visible_object(
    access: Access,
    queryset: QuerySet[M],
    raw_id: str,
    within: Callable[[M], bool] = lambda found: True,
) -> M:
    """The tenant's object `raw_id` names in `queryset`, if the user covers its tenant and
    it is `within` the page's scope; `Hidden` otherwise (audited in the object's own
    tenant when the user does not cover that one). A malformed id names nothing."""
    try:
        wanted = uuid.UUID(raw_id)
    except ValueError:
        raise Hidden() from None
    if str(wanted) != raw_id.lower():  # only the canonical form, as the API's routes
        raise Hidden()
    found = queryset.filter(pk=wanted).first()
    if found is None:
        raise Hidden()
    tenant: Tenant | None = getattr(found, "tenant", None)
    if tenant is not None and not access.covers(tenant):
        raise Hidden(tenant)
    if not within(found):
        raise Hidden()
    return found


def _allowed(access: Access, need: Need) -> bool:
    if need == "global_admin":
        return access.is_global_security_admin
    if need == "admin":
        return access.is_security_admin
    return access.is_staff_reader


def staff_page(need: Need, methods: tuple[str, ...] = ("GET",)) -> Callable[[Page], Page]:
    """A console page for signed-in users whose role reaches `need`: everyone else is
    sent to sign in or refused (403, audited). The view gets the user's `Access` after
    the request; `Hidden` and the services' refusals become their pages."""

    # The method is checked first, so that a method no page serves is a 405 (not a CSRF
    # refusal).
    allowed = list(methods)

    def decorate(view: Page) -> Page:
        @require_http_methods(allowed)
        @console_view
        @wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            if not request.user.is_authenticated:
                return sign_in_first(request)
            access = access_for(request.user)
            if not _allowed(access, need):
                return refuse(request, kwargs.get("slug"))
            try:
                return view(request, access, *args, **kwargs)
            except Hidden as unseen:
                return hidden(request, unseen.tenant)
            except DomainError as error:
                return problem(request, error)

        return wrapped

    return decorate
