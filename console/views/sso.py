"""Single sign-on over OpenID Connect: mozilla-django-oidc's authenticate and callback views,
under the console's own session, CSRF and CSP handling, mounted under /console/oidc/ where
the console's cookies are sent. Every refusal is explained on a page and audited as failed
password sign-ins are (`auth.failed`, repeats summarised)."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import SuspiciousOperation
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.urls import path
from django.views.decorators.http import require_GET
from mozilla_django_oidc.views import (
    OIDCAuthenticationCallbackView,
    OIDCAuthenticationRequestView,
)
from requests import HTTPError, RequestException

from audit.actors import Actor
from audit.recorder import AuditUnavailable, record_refusal
from console.pages import page
from console.security import console_view
from core.context import current_origin
from kms.ratelimit import note_auth_failure
from tenants.sso import SsoRefused

INCOMPLETE = "Single sign-on did not complete. Start again from the sign-in page."


class _Incomplete(Exception):
    """The callback came without a flow this session started, or the provider said no."""


class _Callback(OIDCAuthenticationCallbackView):  # type: ignore[misc]
    def login_failure(self) -> HttpResponse:
        raise _Incomplete()

    @property
    def success_url(self) -> str:
        """The console page the sign-in started from (the library checked its host), and
        only a console page."""
        wanted = self.request.session.get("oidc_login_next") or ""
        return wanted if wanted.startswith("/console/") else str(settings.LOGIN_REDIRECT_URL)


def _refused(
    request: HttpRequest, reason: str, message: str, status: int, username: str = ""
) -> HttpResponse:
    """The refusal's page; audited once per source, reason and minute, the rest summarised,
    so that failing to sign in cannot fill the append-only log."""
    details = {"method": "GET", "path": request.path[:200], "status": status}
    try:
        if note_auth_failure(current_origin().source_ip, f"oidc_{reason}") == 1:
            record_refusal(
                "auth.failed",
                actor=Actor.anonymous(),
                target=f"user:{username}" if username else "",
                details={**details, "via": "oidc", "reason": reason},
            )
    except (AuditUnavailable, DatabaseError):
        pass  # refused all the same
    return page(request, "sso_refused.html", {"message": message}, status)


def _off(request: HttpRequest) -> HttpResponse | None:
    if settings.OIDC_POLICY is None:
        return page(request, "not_found.html", {}, status=404)
    return None


def _needs_bounce(request: HttpRequest) -> bool:
    """The session cookie is SameSite=Strict, so a browser sent here by the provider's
    redirect (another site) leaves it out: one page of our own, which follows on at once,
    brings it back."""
    return (
        "state" in request.GET
        and "again" not in request.GET
        and settings.SESSION_COOKIE_NAME not in request.COOKIES
    )


def _bounce(request: HttpRequest) -> HttpResponse:
    again = f"{request.get_full_path()}&again=1"
    response = page(request, "sso_continue.html", {"again": again})
    response["Refresh"] = f"0; url={again}"
    return response


@console_view
@require_GET
def sso_start(request: HttpRequest) -> HttpResponseBase:
    """Send the browser to the identity provider, with a new state, nonce and PKCE verifier
    kept in this session."""
    response: HttpResponseBase = _off(request) or OIDCAuthenticationRequestView.as_view()(request)
    return response


def _state_known(request: HttpRequest) -> bool:
    states = request.session.get("oidc_states")
    return isinstance(states, dict) and request.GET.get("state", "") in states


@console_view
@require_GET
def sso_callback(request: HttpRequest) -> HttpResponseBase:
    """Where the provider sends the browser back: the code is exchanged, the ID token
    checked, and the claims give the user its role and tenants (or a refusal)."""
    if (off := _off(request)) is not None:
        return off
    if _needs_bounce(request):
        return _bounce(request)
    if "error" not in request.GET and not _state_known(request):
        return _refused(request, "state_mismatch", INCOMPLETE, 400)
    try:
        response: HttpResponseBase = _Callback.as_view()(request)
    except SsoRefused as refused:
        return _refused(request, refused.reason, refused.message, 403, refused.username)
    except (_Incomplete, SuspiciousOperation):
        return _refused(request, "invalid_response", INCOMPLETE, 400)
    except HTTPError:
        message = "The identity provider refused Keyward's request; ask your administrator."
        return _refused(request, "provider_refused", message, 502)
    except RequestException:
        message = "The identity provider could not be reached; try again shortly."
        return _refused(request, "provider_unavailable", message, 502)
    except (AuditUnavailable, DatabaseError):
        message = "Signing in is unavailable; try again shortly."
        return page(request, "sso_refused.html", {"message": message}, 503)
    return response


urlpatterns = [
    path("oidc/authenticate/", sso_start, name="oidc_start"),
    path("oidc/callback/", sso_callback, name="oidc_callback"),
]
