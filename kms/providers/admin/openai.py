"""OpenAI's Administration API, with an admin key (`sk-admin-...`): a rotation's key is the
API key of a project service account created for it, and retiring it deletes the account.

Endpoints (OpenAI API reference, "Project service accounts"):
- POST /organization/projects/{project_id}/service_accounts `{"name": ...}`: the account,
  its `id` and the unredacted `api_key.value` of its first key (mint);
- GET /organization/projects/{project_id}/service_accounts, paged by `limit`, `after` and
  `has_more` (minted: the accounts named after the rotation);
- DELETE /organization/projects/{project_id}/service_accounts/{service_account_id} (retire)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

from kms.providers.admin.base import AdminAdapter, AdminCredential, AdminError, Minted, text

# 100 is the largest page OpenAI serves; the page cap bounds a listing that never ends.
PAGE_SIZE = 100
MAX_PAGES = 100


class OpenAIAdmin(AdminAdapter):
    """Project service accounts as rotation keys, under an organization admin key."""

    provider = "openai"
    default_base_url = "https://api.openai.com/v1"
    required_settings = {"project_id": "the id (proj_...) of the project the keys belong to"}

    def mint(self, admin: AdminCredential, *, name: str, current_upstream_id: str = "") -> Minted:
        """A new service account named `name`; its upstream id is the account's id."""
        answer = self.call(
            admin, "POST", self._project(admin, "service_accounts"), body={"name": name}
        )
        body = answer.body if isinstance(answer.body, dict) else {}
        key = body.get("api_key")
        secret = text(key.get("value")) if isinstance(key, dict) else ""
        account = text(body.get("id"))
        if not secret or not account:
            # An account created without a usable answer is found again by minted(name).
            raise AdminError("OpenAI's answer named no service account or no key", transient=False)
        return Minted(secret=secret, upstream_id=account)

    def minted(self, admin: AdminCredential, *, name: str) -> list[str]:
        """The ids of the project's service accounts named `name`."""
        accounts = self._listing(admin, "service_accounts")
        return [text(a.get("id")) for a in accounts if a.get("name") == name and text(a.get("id"))]

    def retire(self, admin: AdminCredential, *, upstream_id: str, hint: str = "") -> None:
        """Delete the service account `upstream_id`; an account already gone is success."""
        if not upstream_id:
            raise AdminError("no upstream id: the key was not created by Keyward", transient=False)
        self._delete(admin, f"service_accounts/{quote(upstream_id, safe='')}")

    # -- HTTP ----------------------------------------------------------------------------
    def _project(self, admin: AdminCredential, rest: str) -> str:
        project = quote(text(admin.settings.get("project_id")), safe="")
        return f"/organization/projects/{project}/{rest}"

    def _delete(self, admin: AdminCredential, rest: str) -> None:
        # 404: already deleted, by an earlier attempt or by hand.
        self.call(admin, "DELETE", self._project(admin, rest), ok=(200, 204, 404))

    def _listing(self, admin: AdminCredential, what: str) -> Iterator[dict[str, Any]]:
        """Every object of one of the project's lists, page after page."""
        params = {"limit": str(PAGE_SIZE)}
        for _ in range(MAX_PAGES):
            body = self.call(admin, "GET", self._project(admin, what), params=params).body
            page = body if isinstance(body, dict) else {}
            data = page.get("data")
            yield from (
                (item for item in data if isinstance(item, dict)) if isinstance(data, list) else ()
            )
            after = text(page.get("last_id"))
            if page.get("has_more") is not True or not after:
                return
            params = {"limit": str(PAGE_SIZE), "after": after}
        raise AdminError(f"OpenAI's {what} list runs past {MAX_PAGES} pages", transient=False)
