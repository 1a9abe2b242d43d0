"""Where Keyward may send a provider key: the base_url policy.

Under the strict policy (the production default) a base_url must be https, carry no
credentials, query or fragment, and its host must resolve only to public addresses: no
loopback, private, link-local (cloud metadata at 169.254.169.254 included), carrier-grade
NAT, multicast or reserved ranges, unless KEYWARD_PROVIDER_URL_ALLOWLIST names the host or
a network containing the address.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from django.conf import settings

from kms.exceptions import ForbiddenBaseUrl

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_CGNAT = ipaddress.ip_network("100.64.0.0/10")


def _allowed(host: str, address: IPAddress | None) -> bool:
    for entry in settings.PROVIDER_URL_ALLOWLIST:
        if entry.lower() == host.lower():
            return True
        try:
            network = ipaddress.ip_network(entry, strict=False)
        except ValueError:
            continue
        if address is not None and address in network:
            return True
    return False


def _public(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return _public(address.ipv4_mapped)
    return not (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or address in _CGNAT
    )


def _addresses(host: str) -> list[IPAddress]:
    try:
        return [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, 443, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise ForbiddenBaseUrl(f"The host {host!r} does not resolve.") from None
    return [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]


def check_base_url(url: str) -> str:
    """The normalised base_url if the policy allows it; ForbiddenBaseUrl otherwise."""
    if len(url) > 2048 or not url.isascii() or any(c.isspace() for c in url):
        raise ForbiddenBaseUrl("The base_url must be a plain ASCII URL.")
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ForbiddenBaseUrl("The base_url must be an http(s) URL with a host.")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ForbiddenBaseUrl("The base_url must not carry credentials, a query or a fragment.")
    if settings.PROVIDER_URL_POLICY == "strict":
        _check_strict(parts.scheme, parts.hostname)
    return url.rstrip("/")


def _check_strict(scheme: str, host: str) -> None:
    if _allowed(host, None):
        return
    if scheme != "https":
        raise ForbiddenBaseUrl("The base_url must use https.")
    for address in _addresses(host):
        if not _public(address) and not _allowed(host, address):
            raise ForbiddenBaseUrl(
                "The base_url points at a loopback, private, link-local or metadata address."
            )
