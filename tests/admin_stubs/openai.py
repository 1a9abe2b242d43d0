"""OpenAI's Administration API on loopback: one project's service accounts and API keys,
answered with the shapes of OpenAI's API reference ("Project service accounts", "Project
API keys"), under `/v1`."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from tests.provider_stub import ProviderStub, Reply, Seen

ADMIN_KEY = "sk-admin-" + "Q7r8S9t0" * 6
PROJECT = "proj_abc"


def error(message: str, type_: str = "invalid_request_error", code: str | None = None) -> Any:
    """OpenAI's documented error body."""
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


INVALID_ADMIN_KEY = error("Incorrect API key provided: sk-admin-****abcd.", code="invalid_api_key")
FORBIDDEN = error(
    "You have insufficient permissions for this operation. Missing scopes: api.management.write."
)
RATE_LIMITED = error(
    "Rate limit reached for requests", type_="requests", code="rate_limit_exceeded"
)
SERVER_ERROR = error("The server had an error while processing your request.", type_="server_error")
SA_KEY_REFUSED = error(
    "Service account API keys cannot be deleted; delete the service account instead."
)


@dataclass
class Project:
    accounts: dict[str, dict[str, Any]] = field(default_factory=dict)
    keys: dict[str, dict[str, Any]] = field(default_factory=dict)


class OpenAIAdminStub(ProviderStub):
    """Routes each request by its path; `answer()` queues one-shot replies that come first
    (a rate limit, an outage, an echo), and the state then answers as OpenAI does."""

    def __init__(self) -> None:
        self.queued: list[Reply] = []
        self.project = Project()
        super().__init__()
        self.queued.clear()
        self.base_url = self.url + "/v1"

    @property
    def reply(self) -> Reply:
        if self.queued:
            return self.queued.pop(0)
        return self.route(self.seen[-1])

    @reply.setter
    def reply(self, value: Reply) -> None:
        self.queued.append(value)

    # -- the project ---------------------------------------------------------------------
    def add_account(self, name: str) -> tuple[str, str, str]:
        """A service account with its first key, as POST service_accounts makes: its id,
        the key and the key's id."""
        account: dict[str, Any] = {
            "object": "organization.project.service_account",
            "id": "svc_acct_" + secrets.token_hex(6),
            "name": name,
            "role": "member",
            "created_at": 1711471533,
        }
        self.project.accounts[account["id"]] = account
        value = "sk-svcacct-" + secrets.token_urlsafe(40)
        key_id = self.add_key(value, owner={"type": "service_account", "service_account": account})
        return account["id"], value, key_id

    def add_key(self, value: str, *, owner: dict[str, Any] | None = None) -> str:
        key_id = "key_" + secrets.token_hex(6)
        self.project.keys[key_id] = {
            "object": "organization.project.api_key",
            "redacted_value": value[:6] + "..." + value[-4:],
            "name": "Secret Key",
            "created_at": 1711471533,
            "last_used_at": None,
            "id": key_id,
            "owner": owner or {"type": "user", "user": _USER},
        }
        return key_id

    # -- routing -------------------------------------------------------------------------
    def route(self, seen: Seen) -> Reply:
        if seen.headers.get("authorization") != f"Bearer {ADMIN_KEY}":
            return Reply(401, INVALID_ADMIN_KEY)
        prefix = f"/v1/organization/projects/{PROJECT}/"
        if not seen.path.startswith(prefix):
            return Reply(404, error(f"No such project: {seen.path}"))
        parts = seen.path[len(prefix) :].split("/")
        handler = _ROUTES.get((seen.method, parts[0], len(parts)))
        if handler is None:
            return Reply(404, error(f"Invalid URL ({seen.method} {seen.path})"))
        return handler(self, seen, parts[-1])

    def create_account(self, seen: Seen, _: str) -> Reply:
        name = json.loads(seen.body or b"{}").get("name")
        if not isinstance(name, str) or not name:
            return Reply(400, error("'name' is a required property"))
        account_id, value, key_id = self.add_account(name)
        api_key = {
            "object": "organization.project.service_account.api_key",
            "value": value,
            "name": "Secret Key",
            "created_at": 1711471533,
            "id": key_id,
        }
        return Reply(200, {**self.project.accounts[account_id], "api_key": api_key})

    def list_of(self, objects: dict[str, dict[str, Any]], seen: Seen) -> Reply:
        query = {k: v[0] for k, v in parse_qs(seen.query).items()}
        items = list(objects.values())
        ids = [item["id"] for item in items]
        start = ids.index(query["after"]) + 1 if query.get("after") in ids else 0
        page = items[start : start + int(query.get("limit", "20"))]
        return Reply(
            200,
            {
                "object": "list",
                "data": page,
                "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None,
                "has_more": start + len(page) < len(items),
            },
        )

    def delete_account(self, _: Seen, account_id: str) -> Reply:
        if self.project.accounts.pop(account_id, None) is None:
            return Reply(404, error(f"No such service account: {account_id}"))
        for key_id, key in list(self.project.keys.items()):
            if key["owner"].get("service_account", {}).get("id") == account_id:
                del self.project.keys[key_id]
        return Reply(
            200,
            {
                "object": "organization.project.service_account.deleted",
                "id": account_id,
                "deleted": True,
            },
        )

    def delete_key(self, _: Seen, key_id: str) -> Reply:
        key = self.project.keys.get(key_id)
        if key is None:
            return Reply(404, error(f"No such API key: {key_id}"))
        if key["owner"]["type"] == "service_account":
            return Reply(400, SA_KEY_REFUSED)
        del self.project.keys[key_id]
        return Reply(
            200, {"object": "organization.project.api_key.deleted", "id": key_id, "deleted": True}
        )


_USER = {
    "object": "organization.project.user",
    "id": "user_abc",
    "name": "First Last",
    "email": "user@example.com",
    "role": "owner",
    "added_at": 1711471533,
}

_ROUTES: dict[tuple[str, str, int], Callable[[OpenAIAdminStub, Seen, str], Reply]] = {
    ("POST", "service_accounts", 1): OpenAIAdminStub.create_account,
    ("GET", "service_accounts", 1): lambda stub, seen, _: stub.list_of(stub.project.accounts, seen),
    ("DELETE", "service_accounts", 2): OpenAIAdminStub.delete_account,
    ("GET", "api_keys", 1): lambda stub, seen, _: stub.list_of(stub.project.keys, seen),
    ("DELETE", "api_keys", 2): OpenAIAdminStub.delete_key,
}
