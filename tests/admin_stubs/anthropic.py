"""Anthropic's Admin API for API keys, answering as Anthropic documents it: keys listed by
page (`after_id`, `has_more`), read one by one, and updated to a status."""

from __future__ import annotations

import secrets
from typing import Any
from urllib.parse import parse_qs

from tests.admin_stubs.routed import RoutedStub, body_of
from tests.provider_stub import (
    ANTHROPIC_INVALID,
    ANTHROPIC_OVERLOADED,
    ANTHROPIC_PERMISSION,
    ANTHROPIC_RATE,
    Reply,
    Seen,
)

ADMIN_KEY = "sk-ant-admin01-" + "Adm1nK3y" * 10
WORKSPACE = "wrkspc_01JwQvzr7rXLA5AGx3HKfFUJ"
AUTHENTICATION = ANTHROPIC_INVALID
PERMISSION = ANTHROPIC_PERMISSION
RATE_LIMIT = ANTHROPIC_RATE
OVERLOADED = ANTHROPIC_OVERLOADED


def error(kind: str, message: str) -> dict[str, Any]:
    """Anthropic's error body."""
    return {"type": "error", "error": {"type": kind, "message": message}}


NOT_FOUND = error("not_found_error", "Not found")
INVALID_REQUEST = error(
    "invalid_request_error", "status: Input should be 'active', 'inactive' or 'archived'"
)
API_ERROR = error("api_error", "Internal server error")


class AnthropicStub(RoutedStub):
    """One organization's API keys; lists answer `page_size` keys at a time."""

    def __init__(self) -> None:
        self.keys: dict[str, dict[str, Any]] = {}
        self.page_size = 2
        super().__init__()

    def add_key(self, last4: str, status: str = "active", workspace: str = WORKSPACE) -> str:
        key_id = "apikey_01" + secrets.token_hex(11)
        self.keys[key_id] = {
            "id": key_id,
            "type": "api_key",
            "name": f"Key {last4}",
            "created_at": "2024-10-30T23:58:27.427722Z",
            "created_by": {"id": "user_01WCz1FkmYMm4gnmykNKUu3Q", "type": "user"},
            "expires_at": None,
            "partial_key_hint": f"sk-ant-api03-R2D...{last4}",
            "status": status,
            "workspace_id": workspace,
        }
        return key_id

    def route(self, seen: Seen) -> Reply:
        if seen.headers.get("x-api-key") != ADMIN_KEY:
            return Reply(401, AUTHENTICATION)
        key_id = seen.path.removeprefix("/v1/organizations/api_keys").strip("/")
        if not key_id and seen.method == "GET":
            return self._list(parse_qs(seen.query))
        if key_id not in self.keys:
            return Reply(404, NOT_FOUND)
        if seen.method == "POST":
            status = (body_of(seen) or {}).get("status")
            if status not in ("active", "inactive", "archived"):
                return Reply(400, INVALID_REQUEST)
            self.keys[key_id]["status"] = status
        return Reply(200, self.keys[key_id])

    def _list(self, query: dict[str, list[str]]) -> Reply:
        keys = [
            k
            for k in self.keys.values()
            if k["workspace_id"] in query.get("workspace_id", [k["workspace_id"]])
        ]
        ids = [k["id"] for k in keys]
        after = query.get("after_id", [""])[0]
        start = ids.index(after) + 1 if after else 0
        size = min(self.page_size, int(query.get("limit", ["20"])[0]))
        page = keys[start : start + size]
        return Reply(
            200,
            {
                "data": page,
                "has_more": start + size < len(keys),
                "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None,
            },
        )
