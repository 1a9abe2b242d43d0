"""What every console view runs under: its own session, user, CSRF and CSP handling.

The API reads and sets no cookie, so none of this is in settings.MIDDLEWARE: each console
view is wrapped instead (`console_view`), and its cookies are scoped to /console/.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth.middleware import AuthenticationMiddleware
from django.contrib.sessions.middleware import SessionMiddleware
from django.http import HttpRequest, HttpResponseBase
from django.utils.decorators import decorator_from_middleware
from django.utils.deprecation import MiddlewareMixin
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect
from django_htmx.middleware import HtmxDetails

# No 'unsafe-inline' anywhere: every script and style is a file Keyward serves itself.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "frame-ancestors 'none'",
        "form-action 'self'",
        "base-uri 'none'",
        "object-src 'none'",
    ]
)

View = Callable[..., HttpResponseBase]


class ContentSecurityPolicyMiddleware(MiddlewareMixin):
    """Sets the console's policy on every answer that has none. The referrer is kept within
    this origin (the API's `no-referrer` makes browsers send `Origin: null` with the
    console's forms, which CSRF protection rightly refuses) and never leaves it."""

    def process_response(
        self, request: HttpRequest, response: HttpResponseBase
    ) -> HttpResponseBase:
        response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        response.headers.setdefault("Referrer-Policy", "same-origin")
        return response


def _with_htmx(view: View) -> View:
    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        request.htmx = HtmxDetails(request)  # type: ignore[attr-defined]
        return view(request, *args, **kwargs)

    return wrapped


def console_view(view: View) -> View:
    """The policy outermost (so refusals carry it too), then the session, the user, htmx's
    request details and CSRF protection; never cached."""
    wrapped = csrf_protect(_with_htmx(never_cache(view)))
    wrapped = decorator_from_middleware(AuthenticationMiddleware)(wrapped)
    wrapped = decorator_from_middleware(SessionMiddleware)(wrapped)
    return decorator_from_middleware(ContentSecurityPolicyMiddleware)(wrapped)
