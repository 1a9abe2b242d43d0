"""Anthropic through its Admin API, with an Admin API key (`sk-ant-admin...`) as the
admin credential. The Admin API cannot create API keys, so a person supplies the new
secret and only the retirement of the old key reaches Anthropic.

Endpoints, as Anthropic documents them ("Admin API: API keys"):
- `GET /v1/organizations/api_keys/{api_key_id}` (Get API Key): whether the key is still active.
- `GET /v1/organizations/api_keys` (List API Keys, paged by `after_id` while `has_more`,
  optionally narrowed by `workspace_id`): the key whose `partial_key_hint` ends with the
  version's hint, when the version carries no upstream id.
- `POST /v1/organizations/api_keys/{api_key_id}` (Update API Key) with
  `{"status": "inactive"}`: the key stops working. Keys cannot be deleted, only made
  inactive or archived; a key already inactive or archived, or unknown (404), is retired."""

from __future__ import annotations

import re
from typing import Any, NoReturn

from kms.providers.admin.base import AdminAdapter, AdminCredential, AdminError, Minted, text

VERSION = "2023-06-01"
KEYS = "/v1/organizations/api_keys"
PAGE_SIZE = "100"
_KEY_ID = re.compile(r"apikey_[A-Za-z0-9]+")
_SUFFIX = 4  # the characters a version's hint keeps ("...WXYZ")


class AnthropicAdmin(AdminAdapter):
    """Anthropic API keys: retired (made inactive) upstream, never created."""

    provider = "anthropic"
    default_base_url = "https://api.anthropic.com"
    creates_keys = False
    optional_settings = {"workspace_id": "only look for keys of this workspace (wrkspc_...)"}
    max_pages = 100

    def auth_headers(self, admin: AdminCredential) -> dict[str, str]:
        return {"x-api-key": admin.secret, "anthropic-version": VERSION}

    # -- what a rotation calls -------------------------------------------------------
    def mint(self, admin: AdminCredential, *, name: str, current_upstream_id: str = "") -> Minted:
        """Never called (`creates_keys` is False): the Admin API has no way to create a key."""
        raise NotImplementedError("Anthropic's Admin API cannot create API keys")

    def minted(self, admin: AdminCredential, *, name: str) -> list[str]:
        """Nothing: no attempt creates a key at Anthropic, so none can be left behind."""
        return []

    def retire(self, admin: AdminCredential, *, upstream_id: str, hint: str = "") -> None:
        """Make the key inactive: `upstream_id` (apikey_...) or else the one key whose
        partial hint ends as `hint` does."""
        key = self._key(admin, upstream_id) if upstream_id else self._matching(admin, hint)
        if key is None or key.get("status") != "active":
            return
        key_id = _checked_id(key.get("id"))
        self.call(admin, "POST", f"{KEYS}/{key_id}", body={"status": "inactive"}, ok=(200, 404))

    def probe(self, admin: AdminCredential) -> None:
        """Read one page of the keys: `minted` asks Anthropic nothing, and retiring a key
        needs the same read."""
        self.call(admin, "GET", KEYS, params=_within(admin, limit="1"), ok=(200,))

    # -- finding the key ------------------------------------------------------------
    def _key(self, admin: AdminCredential, upstream_id: str) -> dict[str, Any] | None:
        """The key named by its id, None when Anthropic no longer knows it."""
        answer = self.call(admin, "GET", f"{KEYS}/{_checked_id(upstream_id)}", ok=(200, 404))
        if answer.status == 404:
            return None
        return answer.body if isinstance(answer.body, dict) else _unreadable()

    def _matching(self, admin: AdminCredential, hint: str) -> dict[str, Any] | None:
        """The one key ending as `hint` does; None when every such key is already retired."""
        suffix = hint.rsplit("...", 1)[-1]
        if len(suffix) < _SUFFIX:
            raise AdminError("no upstream id and no hint to find the key by", transient=False)
        found = [k for k in self._keys(admin) if text(k.get("partial_key_hint")).endswith(suffix)]
        if not found:
            raise AdminError(f"no API key of the organization ends in {suffix}", transient=False)
        active = [k for k in found if k.get("status") == "active"]
        if not active:
            return None
        if len(found) > 1:
            # Another key with the same last characters could be the one in use: refuse
            # rather than guess.
            raise AdminError(f"{len(found)} API keys end in {suffix}", transient=False)
        return active[0]

    def _keys(self, admin: AdminCredential) -> list[dict[str, Any]]:
        """Every API key of the organization (or of the workspace), page after page."""
        params = _within(admin, limit=PAGE_SIZE)
        keys: list[dict[str, Any]] = []
        for _ in range(self.max_pages):
            page = self.call(admin, "GET", KEYS, params=params, ok=(200,)).body
            page = page if isinstance(page, dict) else _unreadable()
            keys += [k for k in page.get("data") or [] if isinstance(k, dict)]
            last = text(page.get("last_id"))
            if page.get("has_more") is not True or not last:
                return keys
            params = {**params, "after_id": last}
        raise AdminError("the key listing did not end", transient=True)


def _within(admin: AdminCredential, **params: str) -> dict[str, str]:
    """A listing's query, narrowed to the credential's workspace when it names one."""
    workspace = text(admin.settings.get("workspace_id"))
    return {**params, "workspace_id": workspace} if workspace else params


def _checked_id(value: Any) -> str:
    """An API key id of the documented shape: nothing else goes into a URL path."""
    if isinstance(value, str) and _KEY_ID.fullmatch(value):
        return value
    raise AdminError("the key's upstream id is not an Anthropic API key id", transient=False)


def _unreadable() -> NoReturn:
    raise AdminError("the provider's answer was unreadable", transient=True)
