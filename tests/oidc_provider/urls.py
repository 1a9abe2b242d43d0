"""The provider's pages: django-oauth-toolkit under /o/, a sign-in form, and /forged-jwks/,
which publishes another key under the real key's id."""

from __future__ import annotations

import os
from pathlib import Path

from django.contrib.auth import authenticate, login
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.middleware.csrf import get_token
from django.urls import include, path
from django.utils.html import escape
from jwcrypto import jwk
from oauth2_provider.settings import oauth2_settings


def sign_in(request: HttpRequest) -> HttpResponse:
    wanted = request.POST.get("next") or request.GET.get("next", "/")
    if request.method == "POST":
        user = authenticate(
            request, username=request.POST.get("username"), password=request.POST.get("password")
        )
        if user is not None:
            login(request, user)
            return HttpResponseRedirect(wanted if wanted.startswith("/") else "/")
    form = (
        '<!doctype html><title>Provider sign-in</title><form method="post" action="/login/">'
        f'<input type="hidden" name="csrfmiddlewaretoken" value="{get_token(request)}">'
        f'<input type="hidden" name="next" value="{escape(wanted)}">'
        '<label>Username <input name="username" id="username"></label>'
        '<label>Password <input name="password" id="password" type="password"></label>'
        '<button type="submit">Sign in</button></form>'
    )
    return HttpResponse(form, status=200 if request.method == "GET" else 401)


def forged_jwks(request: HttpRequest) -> JsonResponse:
    real = jwk.JWK.from_pem(oauth2_settings.OIDC_RSA_PRIVATE_KEY.encode())
    other = jwk.JWK.from_pem((Path(os.environ["OIDC_PROVIDER_DIR"]) / "other-key.pem").read_bytes())
    public = other.export_public(as_dict=True)
    public.update({"kid": real.thumbprint(), "alg": "RS256", "use": "sig"})
    return JsonResponse({"keys": [public]})


urlpatterns = [
    path("o/", include("oauth2_provider.urls", namespace="oauth2_provider")),
    path("login/", sign_in),
    path("forged-jwks/", forged_jwks),
]
