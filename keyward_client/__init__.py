"""A client for internal services: trade a service principal's secret for short-lived
scoped tokens, kept and renewed before they expire, and use them to call providers through
Keyward's proxy (the key never reaches the service) or to have a key released.

    kw = Keyward("https://keyward.internal", client_secret=os.environ["KEYWARD_SECRET"])
    gpt = openai.OpenAI(**kw.sdk("acme", "openai"))
    gpt.chat.completions.create(model="gpt-4o-mini", messages=[...])

`sdk()` gives the keyword arguments of the official `openai` and `anthropic` clients (and
of any SDK that takes `base_url`, `api_key` and an `httpx` client): the proxy's base URL
for the provider, a placeholder API key, and an httpx client whose transport puts a fresh
token on every request. `async_sdk()` does the same for `AsyncOpenAI`/`AsyncAnthropic`.
Only httpx is needed; nothing here imports Keyward's server code.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import httpx

__all__ = ["Keyward", "KeywardError", "Released"]

PLACEHOLDER_KEY = "keyward-proxy"  # what the SDK sends as its key; the proxy drops it
RENEW_BEFORE = 0.2  # share of a token's lifetime left when it is renewed
RENEW_AT_LEAST = 10.0  # seconds left, at least, when it is renewed


class KeywardError(Exception):
    """A refusal from Keyward: its status, error code and request id (never a secret)."""

    def __init__(self, status: int, code: str, message: str, request_id: str = "") -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.request_id = status, code, request_id

    @classmethod
    def of(cls, response: httpx.Response) -> KeywardError:
        try:
            error = response.json()["error"]
            return cls(response.status_code, error["code"], error["message"], error["request_id"])
        except (ValueError, KeyError, TypeError):
            return cls(response.status_code, "error", response.reason_phrase)


@dataclass(frozen=True)
class Released:
    """A key released by `/api/v1/exchange`; keep it no longer than the call needs."""

    provider: str
    api_key: str
    base_url: str
    key_id: str
    key_version: int

    def __repr__(self) -> str:  # never the key
        return f"Released(provider={self.provider!r}, key_id={self.key_id!r})"


@dataclass(frozen=True)
class _Ask:
    tenant: str
    provider: str
    scopes: tuple[str, ...]
    key: str = ""
    ttl_seconds: int | None = None

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "tenant": self.tenant,
            "provider": self.provider,
            "scopes": list(self.scopes),
        }
        if self.key:
            body["key"] = self.key
        if self.ttl_seconds:
            body["ttl_seconds"] = self.ttl_seconds
        return body


@dataclass
class _Held:
    token: str
    renew_at: float  # monotonic


class Keyward:
    """Tokens for one service principal, kept per (tenant, provider, scopes, key) and
    renewed before they expire; safe to share between threads and tasks."""

    def __init__(
        self,
        url: str,
        *,
        client_secret: str,
        proxy_url: str | None = None,
        ttl_seconds: int | None = None,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
        async_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """`url`: the API; `proxy_url`: where the proxy is served, when that is not the
        same address (`scripts/run` serves it on the next port)."""
        self.url = url.rstrip("/")
        self.proxy_url = (proxy_url or url).rstrip("/")
        self.ttl_seconds = ttl_seconds
        self._secret = client_secret
        self._timeout = timeout
        self._transport = transport
        self._async_transport = async_transport
        self._held: dict[_Ask, _Held] = {}
        self._lock = threading.Lock()
        self._async_locks: dict[_Ask, asyncio.Lock] = {}

    def __repr__(self) -> str:  # never the secret
        return f"Keyward({self.url!r})"

    # -- tokens ------------------------------------------------------------------------
    def token(
        self, tenant: str, provider: str, scopes: Iterable[str] = ("proxy",), key: str = ""
    ) -> str:
        """A live `kwt_` token for these, issued or renewed when needed."""
        ask = self._ask(tenant, provider, scopes, key)
        with self._lock:
            held = self._live(ask)
            if held is None:
                with httpx.Client(timeout=self._timeout, transport=self._transport) as http:
                    held = self._keep(ask, http.post(**self._issue(ask)))
            return held.token

    async def atoken(
        self, tenant: str, provider: str, scopes: Iterable[str] = ("proxy",), key: str = ""
    ) -> str:
        """`token` for asyncio code."""
        ask = self._ask(tenant, provider, scopes, key)
        async with self._async_locks.setdefault(ask, asyncio.Lock()):
            held = self._live(ask)
            if held is None:
                async with httpx.AsyncClient(
                    timeout=self._timeout, transport=self._async_transport
                ) as http:
                    held = self._keep(ask, await http.post(**self._issue(ask)))
            return held.token

    def forget(
        self, tenant: str, provider: str, scopes: Iterable[str] = ("proxy",), key: str = ""
    ) -> None:
        """Drop a kept token (after Keyward refused it: revoked, or out of uses)."""
        self._held.pop(self._ask(tenant, provider, scopes, key), None)

    def _ask(self, tenant: str, provider: str, scopes: Iterable[str], key: str) -> _Ask:
        return _Ask(tenant, provider, tuple(sorted(scopes)), key, self.ttl_seconds)

    def _live(self, ask: _Ask) -> _Held | None:
        held = self._held.get(ask)
        return held if held is not None and time.monotonic() < held.renew_at else None

    def _issue(self, ask: _Ask) -> dict[str, Any]:
        return {
            "url": f"{self.url}/api/v1/tokens",
            "json": ask.body(),
            "headers": {"Authorization": f"Bearer {self._secret}"},
        }

    def _keep(self, ask: _Ask, response: httpx.Response) -> _Held:
        if response.status_code != 201:
            raise KeywardError.of(response)
        issued = response.json()
        lifetime = float(issued["expires_in"])
        renew_in = lifetime - max(RENEW_AT_LEAST, lifetime * RENEW_BEFORE)
        held = _Held(issued["token"], time.monotonic() + max(0.0, renew_in))
        self._held[ask] = held
        return held

    # -- release -----------------------------------------------------------------------
    def exchange(self, tenant: str, provider: str, key: str = "") -> Released:
        """The tenant's key for `provider`, released (scope `release`)."""
        token = self.token(tenant, provider, ("release",), key)
        with httpx.Client(timeout=self._timeout, transport=self._transport) as http:
            response = http.post(f"{self.url}/api/v1/exchange", headers=_bearer(token))
        if response.status_code == 401:
            self.forget(tenant, provider, ("release",), key)
        return _released(response)

    async def aexchange(self, tenant: str, provider: str, key: str = "") -> Released:
        """`exchange` for asyncio code."""
        token = await self.atoken(tenant, provider, ("release",), key)
        async with httpx.AsyncClient(
            timeout=self._timeout, transport=self._async_transport
        ) as http:
            response = await http.post(f"{self.url}/api/v1/exchange", headers=_bearer(token))
        if response.status_code == 401:
            self.forget(tenant, provider, ("release",), key)
        return _released(response)

    # -- proxy -------------------------------------------------------------------------
    def base_url(self, provider: str) -> str:
        """The proxy's base URL for `provider`, as the provider's SDK expects it."""
        return f"{self.proxy_url}/api/v1/proxy/{provider}"

    def transport(self, tenant: str, provider: str, key: str = "") -> httpx.BaseTransport:
        """An httpx transport that sends each request with a live proxy token."""
        return _Transport(self, _Target(tenant, provider, key), self._transport)

    def async_transport(
        self, tenant: str, provider: str, key: str = ""
    ) -> httpx.AsyncBaseTransport:
        return _AsyncTransport(self, _Target(tenant, provider, key), self._async_transport)

    def sdk(self, tenant: str, provider: str, key: str = "", **client: Any) -> dict[str, Any]:
        """Keyword arguments for `openai.OpenAI(...)`, `anthropic.Anthropic(...)` and the
        like: their calls go through the proxy with the tenant's key added there."""
        http = httpx.Client(transport=self.transport(tenant, provider, key), **client)
        return {
            "base_url": self.base_url(provider),
            "api_key": PLACEHOLDER_KEY,
            "http_client": http,
        }

    def async_sdk(self, tenant: str, provider: str, key: str = "", **client: Any) -> dict[str, Any]:
        """`sdk` for `openai.AsyncOpenAI(...)`, `anthropic.AsyncAnthropic(...)`."""
        transport = self.async_transport(tenant, provider, key)
        http = httpx.AsyncClient(transport=transport, **client)
        return {
            "base_url": self.base_url(provider),
            "api_key": PLACEHOLDER_KEY,
            "http_client": http,
        }


@dataclass(frozen=True)
class _Target:
    tenant: str
    provider: str
    key: str


# The SDK's own key headers carry the placeholder; the token goes in Authorization.
_SDK_KEY_HEADERS = ("authorization", "x-api-key", "api-key", "x-goog-api-key")


def _with_token(request: httpx.Request, token: str) -> httpx.Request:
    for name in _SDK_KEY_HEADERS:
        request.headers.pop(name, None)
    request.headers["Authorization"] = f"Bearer {token}"
    return request


def _token_refused(response: httpx.Response) -> bool:
    """Keyward refused the token itself (revoked, expired early, out of uses)."""
    return response.status_code == 401 and "x-keyward-refusal" in response.headers


class _Transport(httpx.BaseTransport):
    def __init__(
        self, keyward: Keyward, target: _Target, inner: httpx.BaseTransport | None
    ) -> None:
        self.keyward, self.target = keyward, target
        self.inner = inner or httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        t = self.target
        response = self.inner.handle_request(
            _with_token(request, self.keyward.token(t.tenant, t.provider, key=t.key))
        )
        if _token_refused(response) and _replayable(request):
            response.close()
            self.keyward.forget(t.tenant, t.provider, key=t.key)
            token = self.keyward.token(t.tenant, t.provider, key=t.key)
            response = self.inner.handle_request(_with_token(request, token))
        return response

    def close(self) -> None:
        self.inner.close()


class _AsyncTransport(httpx.AsyncBaseTransport):
    def __init__(
        self, keyward: Keyward, target: _Target, inner: httpx.AsyncBaseTransport | None
    ) -> None:
        self.keyward, self.target = keyward, target
        self.inner = inner or httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        t = self.target
        token = await self.keyward.atoken(t.tenant, t.provider, key=t.key)
        response = await self.inner.handle_async_request(_with_token(request, token))
        if _token_refused(response) and _replayable(request):
            await response.aclose()
            self.keyward.forget(t.tenant, t.provider, key=t.key)
            token = await self.keyward.atoken(t.tenant, t.provider, key=t.key)
            response = await self.inner.handle_async_request(_with_token(request, token))
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


def _replayable(request: httpx.Request) -> bool:
    """A request whose body is in memory can be sent again with a new token."""
    try:
        request.content  # noqa: B018 - raises for a streamed body not yet read
    except httpx.RequestNotRead:
        return False
    return True


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _released(response: httpx.Response) -> Released:
    if response.status_code != 200:
        raise KeywardError.of(response)
    body = response.json()
    return Released(
        body["provider"], body["api_key"], body["base_url"], body["key_id"], body["key_version"]
    )
