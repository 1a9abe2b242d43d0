"""The `vault` secret store: HashiCorp Vault or OpenBao, KV version 2, through hvac.

This is the only module that imports hvac. One KV path per provider key, KV versions as
key versions, check-and-set on every write. Token, AppRole or Kubernetes auth; renewable
tokens are renewed before they run out, and a login method logs in again when its token
expires. Every failure to get an answer (sealed, unreachable, slow, refused) becomes
StoreUnavailable: the caller fails closed and nothing falls back anywhere.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import aiohttp
import hvac
import hvac.exceptions
import requests
import urllib3

from core import asql
from stores.base import SecretStore, VersionInfo
from stores.exceptions import SecretMissing, StoreConflict, StoreUnavailable

logger = logging.getLogger("keyward.vault")
T = TypeVar("T")
DEFAULT_JWT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount/token"


@dataclass(frozen=True)
class VaultOptions:
    addr: str
    auth: str = "token"  # token | approle | kubernetes
    token: str = ""
    role_id: str = ""
    secret_id: str = ""
    approle_mount: str = "approle"
    k8s_role: str = ""
    k8s_jwt_path: str = DEFAULT_JWT_PATH
    k8s_mount: str = "kubernetes"
    namespace: str = ""
    ca_cert: str = ""
    kv_mount: str = "secret"
    transit_mount: str = "transit"
    path_prefix: str = "keyward"
    timeout: float = 5.0

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> VaultOptions:
        known = {f: values[f] for f in cls.__dataclass_fields__ if f in values}
        return cls(**known)


class VaultStore(SecretStore):
    backend = "vault"

    def __init__(self, name: str, options: VaultOptions) -> None:
        super().__init__(name)
        self.options = options
        self._lock = threading.Lock()
        self._client: hvac.Client | None = None
        self._renew_at = 0.0
        self._expires_at = float("inf")
        # Keep-alive connections for KV reads, shared by the process's threads.
        tls = {"ca_certs": options.ca_cert} if options.ca_cert else {}
        self._async: tuple[asyncio.AbstractEventLoop, aiohttp.ClientSession] | None = None
        self._pool = urllib3.connection_from_url(
            options.addr, maxsize=16, timeout=urllib3.Timeout(total=options.timeout), **tls
        )

    # -- the interface -------------------------------------------------------------
    def put(self, path: str, secret: str, *, expected_version: int) -> int:
        def write(client: hvac.Client) -> int:
            response = client.secrets.kv.v2.create_or_update_secret(
                path=self._path(path),
                secret={"api_key": secret},
                cas=expected_version,
                mount_point=self.options.kv_mount,
            )
            return int(response["data"]["version"])

        return self._call(write)

    def get(self, path: str, version: int) -> str:
        """One KV v2 read over this process's pooled connection: the exchange's hot path,
        so it skips hvac's request machinery (hvac still logs in and renews the token)."""
        try:
            token = self._ready_client().token
        except (hvac.exceptions.VaultError, requests.RequestException):
            raise StoreUnavailable() from None
        url, headers = self._read_request(path, version, token)
        try:
            response = self._pool.request(
                "GET", url, headers=headers, retries=False, redirect=False
            )
        except urllib3.exceptions.HTTPError:
            raise StoreUnavailable() from None
        return self._secret_of(response.status, response.data)

    async def aget(self, path: str, version: int) -> str:
        """`get` on an event loop (the proxy's path): the same read over an asyncio pool of
        keep-alive connections; logging in or renewing, when due, runs in a thread."""
        try:
            token = self._fresh_token() or (await self._aready_client()).token
        except (hvac.exceptions.VaultError, requests.RequestException):
            raise StoreUnavailable() from None
        url, headers = self._read_request(path, version, token)
        try:
            async with self._async_pool().get(url, headers=headers, allow_redirects=False) as got:
                status, body = got.status, await got.read()
        except (aiohttp.ClientError, TimeoutError):
            raise StoreUnavailable() from None
        return self._secret_of(status, body)

    async def aclose(self) -> None:
        if self._async is not None and self._async[0] is asyncio.get_running_loop():
            await self._async[1].close()
            self._async = None

    def _read_request(self, path: str, version: int, token: str) -> tuple[str, dict[str, str]]:
        headers = {"X-Vault-Token": token}
        if self.options.namespace:
            headers["X-Vault-Namespace"] = self.options.namespace
        url = "/v1/{}/data/{}?version={}".format(
            quote(self.options.kv_mount.strip("/")), quote(self._path(path)), int(version)
        )
        return url, headers

    def _fresh_token(self) -> str | None:
        """The token, when it is there and not yet due for renewal."""
        client, now = self._client, time.monotonic()
        if client is None or now >= self._renew_at or now >= self._expires_at:
            return None
        return str(client.token)

    async def _aready_client(self) -> hvac.Client:
        return await asql.in_thread(self._ready_client)()

    def _async_pool(self) -> aiohttp.ClientSession:
        """The asyncio connection pool of the running event loop (aiohttp: a fifth of the
        CPU per request of httpx's AsyncClient, spent on the loop every proxied stream
        shares)."""
        loop = asyncio.get_running_loop()
        if self._async is None or self._async[0] is not loop:
            tls = ssl.create_default_context(cafile=self.options.ca_cert or None)
            client = aiohttp.ClientSession(
                base_url=self.options.addr,
                connector=aiohttp.TCPConnector(ssl=tls, limit=32),
                timeout=aiohttp.ClientTimeout(total=self.options.timeout),
                cookie_jar=aiohttp.DummyCookieJar(),
            )
            self._async = (loop, client)
        return self._async[1]

    def _secret_of(self, status: int, body: bytes) -> str:
        """The secret in a KV v2 read's answer, with hvac's meaning of each status."""
        if status == 404:  # never written, deleted or destroyed
            raise SecretMissing()
        if status == 403:
            self._forget_token()
            raise StoreUnavailable("The secret store refused Keyward's credentials.")
        if status != 200:  # 503 sealed, 429 or 5xx overloaded, 400 refused
            raise StoreUnavailable()
        try:
            value = (json.loads(body).get("data") or {}).get("data") or {}
        except (ValueError, AttributeError):
            raise StoreUnavailable() from None
        if "api_key" not in value:
            raise SecretMissing()
        return str(value["api_key"])

    def versions(self, path: str) -> list[VersionInfo]:
        def read(client: hvac.Client) -> list[VersionInfo]:
            response = client.secrets.kv.v2.read_secret_metadata(
                path=self._path(path), mount_point=self.options.kv_mount
            )
            found = response["data"]["versions"]
            return [
                VersionInfo(int(v), bool(found[v]["destroyed"])) for v in sorted(found, key=int)
            ]

        try:
            return self._call(read)
        except SecretMissing:
            return []

    def destroy(self, path: str, versions: list[int]) -> None:
        if not versions:
            return

        def destroy(client: hvac.Client) -> None:
            client.secrets.kv.v2.destroy_secret_versions(
                path=self._path(path), versions=versions, mount_point=self.options.kv_mount
            )

        self._call(destroy)

    def purge(self, path: str) -> None:
        def purge(client: hvac.Client) -> None:
            client.secrets.kv.v2.delete_metadata_and_all_versions(
                path=self._path(path), mount_point=self.options.kv_mount
            )

        with contextlib.suppress(SecretMissing):  # nothing there (any more)
            self._call(purge)

    def transit_sign(self, key_name: str, data: bytes) -> bytes:
        """An Ed25519 signature by a Transit key (created on first use); the key never leaves."""

        def sign(client: hvac.Client) -> bytes:
            self._ensure_transit_key(client, key_name)
            response = client.secrets.transit.sign_data(
                name=key_name,
                hash_input=base64.b64encode(data).decode(),
                mount_point=self.options.transit_mount,
            )
            return base64.b64decode(response["data"]["signature"].split(":")[-1])

        return self._call(sign)

    def transit_public_key(self, key_name: str) -> bytes:
        def read(client: hvac.Client) -> bytes:
            self._ensure_transit_key(client, key_name)
            keys = client.secrets.transit.read_key(
                name=key_name, mount_point=self.options.transit_mount
            )["data"]
            latest = keys["keys"][str(keys["latest_version"])]
            return base64.b64decode(latest["public_key"])

        return self._call(read)

    def _ensure_transit_key(self, client: hvac.Client, key_name: str) -> None:
        try:
            client.secrets.transit.read_key(name=key_name, mount_point=self.options.transit_mount)
        except hvac.exceptions.InvalidPath:
            client.secrets.transit.create_key(
                name=key_name, key_type="ed25519", mount_point=self.options.transit_mount
            )

    def health(self) -> bool:
        try:
            status = self._call(lambda client: client.sys.read_health_status(method="GET"))
        except StoreUnavailable:
            return False
        return isinstance(status, dict) and not status.get("sealed", True)

    # -- plumbing --------------------------------------------------------------------
    def _path(self, path: str) -> str:
        prefix = self.options.path_prefix.strip("/")
        return f"{prefix}/{path}" if prefix else path

    def _call(self, operation: Callable[[hvac.Client], T]) -> T:
        try:
            return operation(self._ready_client())
        except hvac.exceptions.InvalidPath:
            raise SecretMissing() from None
        except hvac.exceptions.InvalidRequest as exc:
            if "check-and-set" in str(exc):
                raise StoreConflict() from None
            raise StoreUnavailable("The secret store refused the request.") from None
        except hvac.exceptions.Forbidden:
            self._forget_token()
            raise StoreUnavailable("The secret store refused Keyward's credentials.") from None
        except (hvac.exceptions.VaultDown, hvac.exceptions.VaultError, requests.RequestException):
            raise StoreUnavailable() from None

    def _ready_client(self) -> hvac.Client:
        with self._lock:
            now = time.monotonic()
            if self._client is None or now >= self._expires_at:
                self._client = self._login()
            elif now >= self._renew_at:
                self._renew(self._client)
            return self._client

    def _forget_token(self) -> None:
        with self._lock:
            if self.options.auth != "token":
                self._client = None

    def _new_client(self, token: str | None = None) -> hvac.Client:
        verify: bool | str = self.options.ca_cert or True
        return hvac.Client(
            url=self.options.addr,
            token=token,
            namespace=self.options.namespace or None,
            verify=verify,
            timeout=self.options.timeout,
        )

    def _login(self) -> hvac.Client:
        opts = self.options
        if opts.auth == "token":
            client = self._new_client(opts.token)
            self._schedule(client.auth.token.lookup_self()["data"])
            return client
        client = self._new_client()
        if opts.auth == "approle":
            auth = client.auth.approle.login(
                role_id=opts.role_id, secret_id=opts.secret_id, mount_point=opts.approle_mount
            )
        else:
            jwt = Path(opts.k8s_jwt_path).read_text(encoding="utf-8").strip()
            auth = client.auth.kubernetes.login(
                role=opts.k8s_role, jwt=jwt, mount_point=opts.k8s_mount
            )
        self._schedule(
            {"ttl": auth["auth"]["lease_duration"], "renewable": auth["auth"]["renewable"]}
        )
        return client

    def _schedule(self, token_info: dict[str, Any]) -> None:
        ttl = int(token_info.get("ttl") or 0)
        now = time.monotonic()
        if ttl <= 0:  # root or periodic without TTL: nothing to renew
            self._renew_at, self._expires_at = float("inf"), float("inf")
            return
        renewable = bool(token_info.get("renewable"))
        self._renew_at = now + ttl * 2 / 3 if renewable else float("inf")
        # A non-renewable token from a login method is replaced shortly before it expires.
        self._expires_at = (
            now + ttl * 0.9 if self.options.auth != "token" or not renewable else now + ttl
        )

    def _renew(self, client: hvac.Client) -> None:
        try:
            response = client.auth.token.renew_self()
            self._schedule(
                {
                    "ttl": response["auth"]["lease_duration"],
                    "renewable": response["auth"]["renewable"],
                }
            )
        except (hvac.exceptions.VaultError, requests.RequestException):
            logger.warning("vault token renewal failed; logging in again when possible")
            self._renew_at = time.monotonic() + 10
