"""OpenAI's Administration API, with an admin key (`sk-admin-...`): a rotation's key is the
API key of a project service account created for it, and retiring it deletes the account.

Endpoints (OpenAI API reference, "Project service accounts" and "Project API keys"):
- POST /organization/projects/{project_id}/service_accounts `{"name": ...}`: the account,
  its `id` and the unredacted `api_key.value` of its first key (mint);
- GET /organization/projects/{project_id}/service_accounts, paged by `limit`, `after` and
  `has_more` (minted: the accounts named after the rotation);
- DELETE /organization/projects/{project_id}/service_accounts/{service_account_id} (retire);
- GET /organization/projects/{project_id}/api_keys (`redacted_value`, `owner`) and
  DELETE /organization/projects/{project_id}/api_keys/{key_id}: retiring a key onboarded by
  hand, found by the last characters of its hint. OpenAI refuses that DELETE for a key
  of a service account, so such a key is retired by deleting its account, and only when
  the account holds no other key of the project. A hint that names no key, or several,
  deletes nothing: such a retirement is refused, even when the key was deleted before."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

from kms.providers.admin.base import AdminAdapter, AdminCredential, AdminError, Minted, text

# 100 is the largest page OpenAI serves; the page cap bounds a listing that never ends.
PAGE_SIZE = 100
MAX_PAGES = 100
# The fewest trailing characters a hint and a redacted value must share to name a key.
MIN_TAIL = 4
_TAIL = re.compile(r"[A-Za-z0-9_-]+$")


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
        """Delete the service account `upstream_id`, or without one the project's API key
        whose redacted value ends as `hint` does; an account already gone is success."""
        if upstream_id:
            self._delete(admin, f"service_accounts/{quote(upstream_id, safe='')}")
        else:
            self._retire_by_hint(admin, hint)

    # -- a key onboarded by hand -------------------------------------------------------
    def _retire_by_hint(self, admin: AdminCredential, hint: str) -> None:
        tail = _tail(hint)
        if len(tail) < MIN_TAIL:
            raise AdminError(
                f"no upstream id and a hint of fewer than {MIN_TAIL} characters: "
                "OpenAI's key cannot be told apart",
                transient=False,
            )
        keys = list(self._listing(admin, "api_keys"))
        found = [k for k in keys if _same_tail(tail, text(k.get("redacted_value")))]
        if len(found) != 1:
            raise AdminError(
                f"{len(found)} of the project's API keys end in the hint's characters "
                "(one is needed); none deleted",
                transient=False,
            )
        self._delete_key(admin, found[0], keys)

    def _delete_key(
        self, admin: AdminCredential, key: dict[str, Any], keys: list[dict[str, Any]]
    ) -> None:
        account = _service_account(key)
        if not account:
            self._delete(admin, f"api_keys/{quote(text(key.get('id')), safe='')}")
            return
        # OpenAI deletes a service account's key only with the account, which would take
        # every other key of that account with it.
        if sum(_service_account(k) == account for k in keys) > 1:
            raise AdminError(
                "the key belongs to a service account with other keys, which OpenAI "
                "deletes only together; none deleted",
                transient=False,
            )
        self._delete(admin, f"service_accounts/{quote(account, safe='')}")

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


def _tail(value: str) -> str:
    """The characters a hint or a redacted value shows at its end ("...WXYZ" -> "WXYZ")."""
    found = _TAIL.search(value.strip())
    return found.group() if found else ""


def _same_tail(tail: str, redacted: str) -> bool:
    shown = _tail(redacted)
    size = min(len(tail), len(shown))
    return size >= MIN_TAIL and tail[-size:] == shown[-size:]


def _service_account(key: dict[str, Any]) -> str:
    """The id of the service account owning a listed API key ("" for a person's key)."""
    owner = key.get("owner")
    if not isinstance(owner, dict) or owner.get("type") != "service_account":
        return ""
    account = owner.get("service_account")
    return text(account.get("id")) if isinstance(account, dict) else ""
