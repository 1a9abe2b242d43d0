"""The egress policy for provider calls: `core.egress` under KEYWARD_PROVIDER_URL_POLICY and
KEYWARD_PROVIDER_URL_ALLOWLIST, refusing with the API's `forbidden_base_url`."""

from __future__ import annotations

from django.conf import settings

from core import egress
from core.egress import Destination, tls_context
from kms.exceptions import ForbiddenBaseUrl

__all__ = ["Destination", "check_base_url", "pin", "tls_context"]


def policy() -> egress.Policy:
    return egress.Policy(
        strict=settings.PROVIDER_URL_POLICY == "strict",
        allowlist=tuple(settings.PROVIDER_URL_ALLOWLIST),
        subject="base_url",
    )


def check_base_url(url: str) -> str:
    """The normalised base_url if the policy allows it now; ForbiddenBaseUrl otherwise."""
    try:
        return egress.check(url, policy())
    except egress.Refused as refused:
        raise ForbiddenBaseUrl(str(refused)) from None


def pin(url: str) -> Destination:
    """Check a provider URL against the policy now and name the address to connect to."""
    try:
        return egress.pin(url, policy())
    except egress.Refused as refused:
        raise ForbiddenBaseUrl(str(refused)) from None
