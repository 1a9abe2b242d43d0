"""OpenRouter's key management API, called with a management ("provisioning") key.

Endpoints, from OpenRouter's API reference ("API Keys") and its guide "Management API Keys",
all under https://openrouter.ai/api/v1 with the management key as a bearer token:

- `POST /keys` (create-keys) `{"name", "limit"}`: 201 `{"data": {"hash", "name", ...},
  "key": "sk-or-v1-..."}`; the key is shown in this answer only, the hash names it after.
- `GET /keys?include_disabled=true&offset=N` (list): `{"data": [{"hash", "name", ...}]}`,
  at most 100 keys a page, the most recent first.
- `PATCH /keys/{hash}` (update-keys) `{"disabled": true}`: 200 `{"data": {...}}`.
- `DELETE /keys/{hash}` (delete-keys): 200 `{"deleted": true}`.

Errors are `{"error": {"code": <status>, "message": ...}}`: 400, 401, 404 (a hash it does not
know), 429 and 500. Key names are not unique at OpenRouter, so `minted` lists every page
and keeps the keys named exactly as the rotation named its attempt."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any
from urllib.parse import quote

from kms.providers.admin.base import AdminAdapter, AdminCredential, AdminError, Minted, text

# US dollars, as OpenRouter's dashboard shows them; ASCII digits only.
LIMIT = re.compile(r"[0-9]{1,9}(\.[0-9]{1,6})?")
# A provider that ignored `offset` would answer the same page forever.
MAX_PAGES = 1000


class OpenRouterAdmin(AdminAdapter):
    """Creates keys with `POST /keys`, finds them by name and retires them by hash."""

    provider = "openrouter"
    default_base_url = "https://openrouter.ai/api/v1"
    optional_settings = {
        "limit": "a credit limit in US dollars given to each new key, as a decimal string",
    }

    def mint(self, admin: AdminCredential, *, name: str, current_upstream_id: str = "") -> Minted:
        """Create a key named `name`; its upstream id is the hash OpenRouter names it by."""
        body: dict[str, Any] = {"name": name}
        limit = admin.settings.get("limit")
        if limit:
            body["limit"] = credit_limit(limit)
        # No secrets= to give: a refusal means no key was made, and call() redacts
        # whatever is shaped like a key from the provider's text all the same.
        answer = self.call(admin, "POST", "/keys", body=body)
        payload = answer.body if isinstance(answer.body, dict) else {}
        data = payload.get("data")
        secret = text(payload.get("key"))
        upstream_id = text(data.get("hash")) if isinstance(data, dict) else ""
        if not secret or not upstream_id:
            # Never the answer's text: it may hold the new key. The key, if made, is
            # found again by its name.
            raise AdminError("the answer to POST /keys lacks the key or its hash", transient=False)
        return Minted(secret=secret, upstream_id=upstream_id)

    def minted(self, admin: AdminCredential, *, name: str) -> list[str]:
        """The hashes of every key named `name`, disabled ones included."""
        found: list[str] = []
        seen: set[str] = set()
        offset = 0
        for _ in range(MAX_PAGES):
            page = self._page(admin, offset=offset)
            hashes = {text(item.get("hash")) for item in page} - {""}
            if not hashes - seen:  # the end of the list, or a page already read
                break
            seen |= hashes
            offset += len(page)
            found += [text(i.get("hash")) for i in page if i.get("name") == name]
        return [upstream_id for upstream_id in dict.fromkeys(found) if upstream_id]

    def _page(self, admin: AdminCredential, *, offset: int) -> list[dict[str, Any]]:
        params = {"include_disabled": "true", "offset": str(offset)}
        answer = self.call(admin, "GET", "/keys", params=params)
        data = answer.body.get("data") if isinstance(answer.body, dict) else None
        if not isinstance(data, list):
            raise AdminError("the answer to GET /keys has no list of keys", transient=False)
        return [item for item in data if isinstance(item, dict)]

    def retire(self, admin: AdminCredential, *, upstream_id: str, hint: str = "") -> None:
        """Disable the key, so it stops working even if the delete fails, then delete it;
        a hash OpenRouter no longer knows is already retired."""
        if not upstream_id:
            raise AdminError("no hash names the key to retire", transient=False)
        path = "/keys/" + quote(upstream_id, safe="")
        if self._gone(admin, "PATCH", path, {"disabled": True}):
            return
        self._gone(admin, "DELETE", path, None)

    def _gone(self, admin: AdminCredential, method: str, path: str, body: Any) -> bool:
        """Whether OpenRouter answered that the key does not exist (its 404)."""
        answer = self.call(admin, method, path, body=body, ok=(200, 201, 202, 204, 404))
        if answer.status != 404:
            return False
        # Only OpenRouter's own error says the key is gone: a 404 from an address that is
        # not its API (a wrong base URL) must not pass for a retired key.
        error = answer.body.get("error") if isinstance(answer.body, dict) else None
        if not isinstance(error, dict):
            raise AdminError("HTTP 404 without OpenRouter's error body", transient=False)
        return True

    def check_settings(self, values: dict[str, Any]) -> list[str]:
        problems = super().check_settings(values)
        problem = credit_limit_problem(values["limit"]) if "limit" in values else ""
        return problems + ([f"limit: {problem}"] if problem else [])


def credit_limit_problem(value: Any) -> str:
    """What is wrong with a `limit` setting ("" when nothing)."""
    if not isinstance(value, str) or not LIMIT.fullmatch(value):
        return 'must be a decimal string such as "25.00"'
    if Decimal(value) == 0:
        return "must be more than zero"
    return ""


def credit_limit(value: Any) -> float:
    """The `limit` setting as the number OpenRouter's JSON takes."""
    if credit_limit_problem(value):
        raise AdminError("the limit setting is not a positive decimal", transient=False)
    return float(Decimal(value))
