"""What an admin API adapter is: the calls a staged rotation makes at the provider to
create a key upstream, find the keys an interrupted attempt created, and retire an old key
after its grace period, with an admin credential that is never released or proxied.

Every call goes through `AdminAdapter.call`: the egress policy of now, the address that
was checked, no redirects, the provider timeout, and the provider's text redacted of every
secret it was given or returned before it reaches an exception, a log or an event."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from django.conf import settings

from kms import egress
from kms.exceptions import ForbiddenBaseUrl
from kms.providers.base import error_info, parse_retry_after, provider_timeout, redact


@dataclass(frozen=True)
class AdminCredential:
    """An admin credential in hand: its secret and its non-secret settings (a project,
    a resource, a key slot...), and where its API lives."""

    secret: str = field(repr=False)
    settings: dict[str, Any] = field(default_factory=dict)
    base_url: str = ""


@dataclass(frozen=True)
class Minted:
    """A key the provider created: its secret (in memory only) and the provider's id of
    it, kept with the key version so that the key can be retired upstream later."""

    secret: str = field(repr=False)
    upstream_id: str


# The name no rotation gives a key: listing it proves the credential may use the API.
PROBE = "keyward-credential-check"


class AdminError(Exception):
    """The provider refused or failed an admin call. `transient` (429, 5xx, timeouts)
    is tried again later and changes nothing; anything else fails the rotation step. The
    reason is already redacted."""

    def __init__(self, reason: str, *, transient: bool, retry_after: float | None = None):
        super().__init__(reason)
        self.reason = reason[:300]
        self.transient = transient
        self.retry_after = retry_after


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any
    headers: httpx.Headers


class AdminAdapter:
    """One provider's admin API. `creates_keys` says whether it can mint a key (else a
    person supplies the new secret and only `retire` runs upstream)."""

    provider = ""
    default_base_url = ""
    creates_keys = True
    # The settings an admin credential of this provider must carry, with what each means.
    required_settings: dict[str, str] = {}

    # -- what a rotation calls -------------------------------------------------------
    def mint(self, admin: AdminCredential, *, name: str, current_upstream_id: str = "") -> Minted:
        """Create a new key upstream named `name` (unique to the rotation);
        `current_upstream_id` is the provider's id of the key now current, where the
        provider needs it (Azure regenerates the slot not in use)."""
        raise NotImplementedError

    def minted(self, admin: AdminCredential, *, name: str) -> list[str]:
        """The upstream ids of keys named `name`: what an attempt that died after
        creating its key left behind (retired before minting again)."""
        raise NotImplementedError

    def identify(self, admin: AdminCredential, is_current: Callable[[str], bool]) -> str:
        """The provider's id of the key whose value `is_current` recognises, where the
        admin API can list key values (a key onboarded by hand has no id recorded); ""
        where it cannot, or no listed key matches."""
        return ""

    def retire(self, admin: AdminCredential, *, upstream_id: str, hint: str = "") -> None:
        """Make an old key stop working upstream (delete it, or disable it where the
        provider can only do that). Retiring a key that is already gone succeeds."""
        raise NotImplementedError

    def probe(self, admin: AdminCredential) -> None:
        """Prove, before the credential is stored, that it may use the admin API (an
        AdminError if not): by listing the keys of a name no rotation uses."""
        self.minted(admin, name=PROBE)

    def check_settings(self, values: dict[str, Any]) -> list[str]:
        """What is wrong with an admin credential's settings (empty when nothing)."""
        problems = [
            f"{name}: required ({meaning})"
            for name, meaning in self.required_settings.items()
            if not isinstance(values.get(name), str) or not values.get(name)
        ]
        unknown = sorted(set(values) - set(self.required_settings) - set(self.optional_settings))
        return problems + [f"{name}: unknown setting" for name in unknown]

    optional_settings: dict[str, str] = {}

    # -- HTTP --------------------------------------------------------------------------
    def base_url(self, admin: AdminCredential) -> str:
        configured = admin.base_url or settings.PROVIDER_ADMIN_BASE_URLS.get(self.provider)
        return (configured or self.default_base_url).rstrip("/")

    def auth_headers(self, admin: AdminCredential) -> dict[str, str]:
        return {"Authorization": f"Bearer {admin.secret}"}

    def call(
        self,
        admin: AdminCredential,
        method: str,
        path: str,
        *,
        body: Any = None,
        form: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
        ok: tuple[int, ...] = (200, 201, 202, 204),
        secrets: tuple[str, ...] = (),
    ) -> Answer:
        """One admin API call. An answer outside `ok` raises AdminError (transient for
        429, 5xx and no answer); `secrets` are further values to redact from any text.
        `form` is sent form-encoded instead of `body`; `headers` add to `auth_headers`."""
        url = self.base_url(admin) + path
        hidden = (admin.secret, *secrets)
        try:  # the policy of now, not of when the credential was stored
            destination = egress.pin(url)
        except ForbiddenBaseUrl:
            raise AdminError(
                "the egress policy refuses the admin API's address", transient=False
            ) from None
        try:
            with httpx.Client(
                timeout=provider_timeout(), follow_redirects=False, verify=egress.tls_context()
            ) as client:
                response = client.request(
                    method,
                    destination.url,
                    headers={
                        **self.auth_headers(admin),
                        **(headers or {}),
                        "Accept": "application/json",
                        **destination.headers(),
                    },
                    json=body,
                    data=form,
                    params=params,
                    extensions=destination.extensions(),
                )
        except httpx.TimeoutException:
            raise AdminError("timeout", transient=True) from None
        except httpx.HTTPError as exc:
            raise AdminError(f"unreachable ({type(exc).__name__})", transient=True) from None
        try:
            parsed: Any = response.json() if response.content else None
        except (json.JSONDecodeError, UnicodeDecodeError):
            parsed = None
        if response.status_code not in ok:
            raise self._refusal(response, parsed, hidden)
        return Answer(response.status_code, parsed, response.headers)

    def _refusal(self, response: httpx.Response, body: Any, hidden: tuple[str, ...]) -> AdminError:
        status = response.status_code
        info = error_info(body)
        reason = f"HTTP {status}" + (f": {info.message}" if info.message else "")
        for secret in hidden:
            reason = redact(reason, secret)
        transient = status == 429 or status >= 500
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        return AdminError(reason, transient=transient, retry_after=retry_after)


def text(value: Any) -> str:
    """A string field of a provider's answer ("" when absent or not a string)."""
    return value if isinstance(value, str) else ""
