"""The console's pages: sign-in and sign-out, the dashboard, tenants (list, create,
suspend and reactivate).

Every page reads through the same queries and the same tenant scoping as the API
(`tenants.access`), and records the same audit events for what it refuses.
"""

from __future__ import annotations

import contextlib
from typing import Any

from django import forms
from django.contrib.auth import authenticate, get_user_model, login, logout
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, HttpResponseBase, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from audit import queries as audit_queries
from audit.actions import do_note_search
from audit.actors import Actor
from audit.models import Outcome
from audit.recorder import AuditUnavailable, chain_for, record_refusal
from console.security import console_view
from core.context import current_origin
from kms import queries as key_queries
from kms.exceptions import RateLimited, RateLimiterUnavailable
from kms.models import KeyStatus
from kms.ratelimit import check_sign_in, note_auth_failure
from tenants.access import Access, access_for
from tenants.actions import (
    do_create_tenant,
    do_record_sign_in,
    do_record_sign_out,
    do_update_tenant,
)
from tenants.actors import actor_for
from tenants.exceptions import TenantExists
from tenants.models import Tenant, TenantStatus
from tenants.validators import NO_CONTROL_CHARACTERS, validate_slug

# The one message for an unknown user, a wrong password and an account that may not sign in.
BAD_CREDENTIALS = "The username or password is not right."
LISTED = 20  # rows per dashboard list


class TenantForm(forms.Form):
    """A new tenant, checked as the API checks one (POST /api/v1/tenants)."""

    slug = forms.CharField(max_length=63, strip=False, validators=[validate_slug])
    name = forms.CharField(max_length=200, strip=False, validators=[NO_CONTROL_CHARACTERS])


class SignInForm(forms.Form):
    username = forms.CharField(max_length=150, strip=True)
    password = forms.CharField(max_length=1024, strip=False, widget=forms.PasswordInput)


def _page(
    request: HttpRequest, template: str, context: dict[str, Any], status: int = 200
) -> HttpResponse:
    access = access_for(request.user)
    return render(request, f"console/{template}", {"access": access, **context}, status=status)


def _refuse(request: HttpRequest) -> HttpResponse:
    """403 for a signed-in user whose role does not reach this page, audited as the API
    audits its 403s (`access.denied`)."""
    details = {"method": request.method, "path": request.path[:200], "status": 403}
    with contextlib.suppress(AuditUnavailable, DatabaseError):  # the refusal stands anyway
        record_refusal("access.denied", actor=actor_for(request.user), details=details)
    return _page(request, "forbidden.html", {}, status=403)


def _sign_in_first(request: HttpRequest) -> HttpResponseRedirect:
    return HttpResponseRedirect(f"{reverse('console:login')}?next={request.path}")


def _next_page(request: HttpRequest) -> str:
    wanted = request.POST.get("next") or request.GET.get("next") or ""
    safe = url_has_allowed_host_and_scheme(
        wanted, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    )
    return wanted if safe and wanted.startswith("/console/") else reverse("console:dashboard")


def _sign_in_failed(
    request: HttpRequest, form: SignInForm, reason: str, username: str
) -> HttpResponse:
    """The one answer for every bad credential; the audit event keeps the reason, and the
    username only when it names a user (an unknown one may be a mistyped password). As
    the API's, the first failure of a source, reason and minute is audited on its own and
    the rest are counted and summarised (`auth.failed_repeated`), so that no one can fill
    the append-only log by failing to sign in."""
    known = get_user_model().objects.filter(username=username).exists()
    reason = reason if known else "unknown_user"
    details = {"method": "POST", "path": request.path[:200], "status": 401, "via": "console"}
    details["reason"] = reason
    try:
        if note_auth_failure(current_origin().source_ip, reason) == 1:
            record_refusal(
                "auth.failed",
                actor=Actor.anonymous(),
                target=f"user:{username}" if known else "",
                details=details,
            )
    except (AuditUnavailable, DatabaseError):
        return _unavailable(request, form)
    return _login_page(request, form, BAD_CREDENTIALS, 401)


def _rate_limited(request: HttpRequest, form: SignInForm, retry_after: int) -> HttpResponse:
    """429; counted and audited as the API's failed authentications are: the first of each
    source and minute at once, the rest summarised (`auth.failed_repeated`)."""
    source = current_origin().source_ip
    try:
        if note_auth_failure(source, "sign_in_rate_limited") == 1:
            details = {"method": "POST", "path": request.path[:200], "status": 429}
            record_refusal(
                "auth.failed",
                actor=Actor.anonymous(),
                details={**details, "via": "console", "reason": "rate_limited"},
            )
    except (AuditUnavailable, DatabaseError):
        pass  # refused all the same
    message = f"Too many sign-in attempts; try again in {retry_after} seconds."
    response = _login_page(request, form, message, 429)
    response["Retry-After"] = str(retry_after)
    return response


def _unavailable(request: HttpRequest, form: SignInForm) -> HttpResponse:
    response = _login_page(request, form, "Signing in is unavailable; try again shortly.", 503)
    response["Retry-After"] = "5"
    return response


def _login_page(
    request: HttpRequest, form: SignInForm, error: str = "", status: int = 200
) -> HttpResponse:
    context = {"form": form, "error": error, "next": _next_page(request)}
    return _page(request, "login.html", context, status)


@console_view
@require_http_methods(["GET", "POST"])
def sign_in(request: HttpRequest) -> HttpResponseBase:
    """Sign in with a Django user's password; rate-limited per source and per username
    before the password is looked at, and audited whatever the outcome."""
    if request.method == "GET":
        if request.user.is_authenticated:
            return HttpResponseRedirect(_next_page(request))
        return _login_page(request, SignInForm())
    form = SignInForm(request.POST)
    if not form.is_valid():
        return _login_page(request, form, "Enter a username and a password.", 400)
    username, password = form.cleaned_data["username"], form.cleaned_data["password"]
    try:
        check_sign_in(current_origin().source_ip, username)
    except RateLimited as limited:
        return _rate_limited(request, form, limited.retry_after or 60)
    except (RateLimiterUnavailable, DatabaseError):
        return _unavailable(request, form)  # never admitted uncounted
    user = authenticate(request, username=username, password=password)
    if user is None:
        return _sign_in_failed(request, form, "wrong_password", username)
    try:
        do_record_sign_in(user, via="console")
    except (AuditUnavailable, DatabaseError):
        return _unavailable(request, form)  # no event, no session
    login(request, user)
    return HttpResponseRedirect(_next_page(request))


@console_view
@require_POST
def sign_out(request: HttpRequest) -> HttpResponseBase:
    """End the session (POST only, with its CSRF token); audited."""
    if request.user.is_authenticated:
        with contextlib.suppress(AuditUnavailable, DatabaseError):  # never kept signed in
            do_record_sign_out(request.user, via="console")
    logout(request)
    return HttpResponseRedirect(reverse("console:login"))


def _dashboard_context(access: Access) -> dict[str, Any]:
    keys = access.restrict(key_queries.keys())
    counts = key_queries.key_counts_by_status(keys)
    slugs = access.slugs()
    refusals = audit_queries.events_of_tenants(slugs).filter(outcome=Outcome.DENIED)
    return {
        "counts": [
            (status.label, status.value, counts.get(status.value, 0)) for status in KeyStatus
        ],
        "invalid": list(
            keys.filter(status=KeyStatus.INVALID).order_by("tenant__slug", "label")[:LISTED]
        ),
        "due": list(key_queries.rotation_due(keys)[:LISTED]),
        "checks": list(
            audit_queries.chain_checks(None if slugs is None else [chain_for(s) for s in slugs])
        ),
        "refusals": list(refusals.order_by("-occurred_at")[:LISTED]),
        "tenant_count": access.tenants().count(),
    }


@console_view
@require_GET
def dashboard(request: HttpRequest) -> HttpResponseBase:
    """Keys by status, invalid and rotation-due keys, the chains' latest verification and
    recent refusals, for the tenants the user covers; readable by auditors too. Reading
    the refusals is a search of the audit log, audited as the API's are."""
    if not request.user.is_authenticated:
        return _sign_in_first(request)
    access = access_for(request.user)
    if not access.is_staff_reader:
        return _refuse(request)
    context = _dashboard_context(access)
    searched = {"outcome": Outcome.DENIED.value, "via": "console"}
    do_note_search(searched, len(context["refusals"]), actor=actor_for(request.user))
    htmx = getattr(request, "htmx", None)
    template = "dashboard_panels.html" if htmx else "dashboard.html"
    return _page(request, template, context)


def _tenants_page(
    request: HttpRequest, access: Access, form: TenantForm | None = None, status: int = 200
) -> HttpResponse:
    context = {
        "tenants": list(access.tenants().order_by("slug")),
        "form": form or TenantForm(),
        "statuses": TenantStatus,
    }
    return _page(request, "tenants.html", context, status)


@console_view
@require_http_methods(["GET", "POST"])
def tenant_list(request: HttpRequest) -> HttpResponseBase:
    """The tenants a security admin covers, with their status, and a new tenant (global
    security admins, as in the API); 403 for anyone else."""
    if not request.user.is_authenticated:
        return _sign_in_first(request)
    access = access_for(request.user)
    if not access.is_security_admin:
        return _refuse(request)
    if request.method == "GET":
        return _tenants_page(request, access)
    if not access.is_global_security_admin:
        return _refuse(request)
    form = TenantForm(request.POST)
    if not form.is_valid():
        return _tenants_page(request, access, form, 400)
    try:
        do_create_tenant(**form.cleaned_data, actor=actor_for(request.user))
    except TenantExists as exists:
        form.add_error("slug", exists.message)
        return _tenants_page(request, access, form, 409)
    return HttpResponseRedirect(reverse("console:tenants"))


@console_view
@require_POST
def tenant_status(request: HttpRequest, slug: str) -> HttpResponseBase:
    """Suspend or reactivate a tenant the security admin covers (404, audited, for one it
    does not: its existence is not told)."""
    if not request.user.is_authenticated:
        return _sign_in_first(request)
    access = access_for(request.user)
    if not access.is_security_admin:
        return _refuse(request)
    tenant = Tenant.objects.filter(slug=slug).first()
    if tenant is None or not access.covers(tenant):
        return _hidden(request, tenant)
    wanted = request.POST.get("status", "")
    if wanted not in TenantStatus.values:
        return _tenants_page(request, access, status=400)
    do_update_tenant(tenant, status=wanted, actor=actor_for(request.user))
    return HttpResponseRedirect(reverse("console:tenants"))


def _hidden(request: HttpRequest, tenant: Tenant | None) -> HttpResponse:
    """404 for a tenant that does not exist or is not the user's, audited in that tenant's
    chain when it exists, as the API audits the 404s that hide other tenants."""
    if tenant is not None:
        details = {"method": request.method, "path": request.path[:200], "status": 404}
        with contextlib.suppress(AuditUnavailable, DatabaseError):
            record_refusal(
                "access.denied", actor=actor_for(request.user), tenant=tenant.slug, details=details
            )
    return _page(request, "not_found.html", {}, status=404)


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """CSRF_FAILURE_VIEW: a console page, not Django's debug text."""
    return render(request, "console/csrf_failure.html", {"access": None}, status=403)
