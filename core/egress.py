"""Where Keyward may connect: the egress policy for every outbound call (provider
checks, webhooks).

Under the strict policy (the production default) a URL must be https, carry no
credentials, query or fragment, and its host must resolve only to public addresses: no
loopback, private, link-local (cloud metadata at 169.254.169.254 included), carrier-grade
NAT, multicast or reserved ranges, unless the policy's allowlist names the host or
a network containing the address (an entry may name a port: `host:8443`). An IPv6
address that carries an IPv4 one (IPv4-mapped, IPv4-compatible, 6to4, Teredo, NAT64) is
judged by the IPv4 address it carries as well.

The policy is applied on every outbound call, not only when a key is stored: `pin()`
checks the URL at the time of the call and names the address that was checked, and the
caller connects to that address (with the host name kept for TLS and the Host header),
so a DNS answer that changes between the check and the connection changes nothing.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import socket
import ssl
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit, urlunsplit

import certifi


class Refused(Exception):
    """The policy refuses a URL; the message says why and never repeats the URL."""


@dataclass(frozen=True)
class Policy:
    """`strict` or not, the allowlist entries, and what the URLs are called in refusals."""

    strict: bool
    allowlist: tuple[str, ...] = ()
    subject: str = "URL"


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


def _allowed(policy: Policy, host: str, address: IPAddress | None, port: int | None) -> bool:
    for entry in policy.allowlist:
        name, wanted = _entry(entry)
        if wanted is not None and wanted != port:
            continue
        if name.lower() == host.lower():
            return True
        try:
            network = ipaddress.ip_network(name, strict=False)
        except ValueError:
            continue
        if address is not None and address in network:
            return True
    return False


def _entry(entry: str) -> tuple[str, int | None]:
    """An allowlist entry as (host or network, port or None): `host`, `host:8443`,
    `10.0.0.0/8`, `[fd00::1]:8443`."""
    head, colon, tail = entry.rpartition(":")
    if colon and tail.isdigit() and (head.startswith("[") or ":" not in head):
        return head.strip("[]"), int(tail)
    return entry.strip("[]"), None


def _carried(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries, in every form a router would honour."""
    carried = [a for a in (address.ipv4_mapped, address.sixtofour) if a is not None]
    if address.teredo is not None:
        carried.extend(address.teredo)
    low32 = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if any(address in net for net in _NAT64):
        carried.append(low32)
    if address in _IPV4_COMPATIBLE and int(address) > 1:
        carried.append(low32)
    return carried


def _public(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address):
        carried = _carried(address)
        if carried:
            return all(_public(inner) for inner in carried)
    return not (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or address in _CGNAT
    )


def _addresses(policy: Policy, host: str) -> list[IPAddress]:
    try:
        return [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, 443, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise Refused(f"The host of the {policy.subject} does not resolve.") from None
    return [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]


def check(url: str, policy: Policy) -> str:
    """`url` without a trailing slash if the policy allows it now; Refused otherwise."""
    parts = _parts(url, policy)
    if policy.strict:
        _checked_address(policy, parts.scheme, parts.hostname or "", _port(parts))
    return url.rstrip("/")


@dataclass(frozen=True)
class Destination:
    """Where to connect for a URL the policy allowed just now: `url` names the checked
    address in place of the host (unless nothing was resolved), and `host` is the name to
    present in TLS (SNI and certificate check) and in the Host header."""

    url: str
    host: str
    pinned: bool

    def headers(self) -> dict[str, str]:
        return {"Host": self.host} if self.pinned else {}

    def extensions(self) -> dict[str, str]:
        """For httpx: the name to present in TLS."""
        return {"sni_hostname": self.host.rsplit(":", 1)[0].strip("[]")} if self.pinned else {}

    def tls_name(self) -> str | None:
        """For aiohttp (`server_hostname`): the name to present in TLS."""
        return self.extensions().get("sni_hostname")


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The one verifying TLS context of every outbound call in this process. Building one
    loads the whole CA bundle (tens of milliseconds of CPU), so a call that made its own
    paid that each time. The CAs are the ones an HTTP client trusts by default:
    `SSL_CERT_FILE` or `SSL_CERT_DIR` when set, else certifi's bundle."""
    if os.environ.get("SSL_CERT_FILE"):
        return ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"])
    if os.environ.get("SSL_CERT_DIR"):
        return ssl.create_default_context(capath=os.environ["SSL_CERT_DIR"])
    return ssl.create_default_context(cafile=certifi.where())


def pin(url: str, policy: Policy) -> Destination:
    """Check `url` against the policy now and name the address to connect to."""
    parts = _parts(url, policy)
    host = parts.hostname or ""
    if not policy.strict:
        return Destination(url, parts.netloc, pinned=False)
    address = _checked_address(policy, parts.scheme, host, _port(parts))
    if address is None:  # an allowlisted name: the operator vouches for it
        return Destination(url, parts.netloc, pinned=False)
    literal = f"[{address}]" if address.version == 6 else str(address)
    netloc = literal + (f":{parts.port}" if parts.port else "")
    return Destination(urlunsplit(parts._replace(netloc=netloc)), parts.netloc, pinned=True)


def _port(parts: SplitResult) -> int:
    return parts.port or (443 if parts.scheme == "https" else 80)


def _parts(url: str, policy: Policy) -> SplitResult:
    subject = policy.subject
    if len(url) > 2048 or not url.isascii() or any(c.isspace() for c in url):
        raise Refused(f"The {subject} must be a plain ASCII URL.")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:  # an unclosed IPv6 bracket, a port that is not a number
        raise Refused(f"The {subject} is malformed.") from None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise Refused(f"The {subject} must be an http(s) URL with a host.")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise Refused(f"The {subject} must not carry credentials, a query or a fragment.")
    return parts


def _checked_address(policy: Policy, scheme: str, host: str, port: int) -> IPAddress | None:
    """The first address of `host`, every one of which the strict policy allows; None for
    a host the allowlist names (it is not resolved here)."""
    if _allowed(policy, host, None, port):
        return None
    if scheme != "https":
        raise Refused(f"The {policy.subject} must use https.")
    addresses = _addresses(policy, host)
    for address in addresses:
        if not _public(address) and not _allowed(policy, host, address, port):
            raise Refused(
                f"The {policy.subject} points at a loopback, private, link-local or"
                " metadata address."
            )
    return addresses[0]
