"""Signing in and out of the console with a Django user's password."""

from __future__ import annotations

import contextlib

from django import forms
from django.conf import settings
from django.contrib.auth import authenticate, get_user_model, login, logout
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, HttpResponseBase, HttpResponseRedirect
from django.shortcuts import render
from django.urls import path, reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_http_methods, require_POST

from audit.actors import Actor
from audit.recorder import AuditUnavailable, record_refusal
from console.pages import page
from console.security import console_view
from core.context import current_origin
from kms.exceptions import RateLimited, RateLimiterUnavailable
from kms.ratelimit import check_sign_in, note_auth_failure
from tenants.actions import do_record_sign_in, do_record_sign_out

# The one message for an unknown user, a wrong password and an account that may not sign in.
BAD_CREDENTIALS = "The username or password is not right."


class SignInForm(forms.Form):
    username = forms.CharField(max_length=150, strip=True)
    password = forms.CharField(max_length=1024, strip=False, widget=forms.PasswordInput)


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
    context["sso"] = settings.OIDC_POLICY
    return page(request, "login.html", context, status)


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


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """CSRF_FAILURE_VIEW: a console page, not Django's debug text."""
    return render(request, "console/csrf_failure.html", {"access": None}, status=403)


urlpatterns = [
    path("login/", sign_in, name="login"),
    path("logout/", sign_out, name="logout"),
]
