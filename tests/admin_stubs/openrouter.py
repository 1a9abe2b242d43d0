"""A local OpenRouter key management API on loopback: keys are created, listed a page at a
time, disabled and deleted as OpenRouter's API reference ("API Keys") documents, each
request is recorded, and `fail` queues documented error answers."""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
from typing import Any
from urllib.parse import parse_qs

from tests.provider_stub import ProviderStub, Reply, Seen

PREFIX = "/api/v1"
PAGE = 100  # OpenRouter lists the most recent 100 keys a page


def error(status: int, message: str) -> dict[str, Any]:
    """OpenRouter's error body."""
    return {"error": {"code": status, "message": message}}


UNAUTHORIZED = error(401, "Missing Authentication header")
FORBIDDEN = error(403, "Only management keys can perform this operation")
NOT_FOUND = error(404, "Resource not found")
BAD_REQUEST = error(400, "Invalid request parameters")
RATE_LIMITED = error(429, "Rate limit exceeded")
SERVER_ERROR = error(500, "Internal Server Error")


def new_key() -> str:
    return "sk-or-v1-" + secrets.token_hex(32)


class OpenRouterStub(ProviderStub):
    """OpenRouter's `/keys` endpoints for one management key; `keys` by hash, oldest first."""

    def __init__(self, management_key: str) -> None:
        self.management_key = management_key
        self.keys: dict[str, dict[str, Any]] = {}
        self.queued: list[Reply] = []
        self.lock = threading.Lock()
        super().__init__()
        self.url += PREFIX

    def fail(
        self, status: int, body: Any, headers: dict[str, str] | None = None, delay: float = 0.0
    ) -> None:
        """Answer the next request with `status` and `body`, whatever it asks."""
        self.queued.append(Reply(status, body, headers or {}, delay))

    def add(self, name: str, *, disabled: bool = False) -> tuple[str, str]:
        """A key that already exists at OpenRouter: its secret and hash."""
        secret = new_key()
        digest = hashlib.sha256(secret.encode()).hexdigest()
        self.keys[digest] = {
            "hash": digest,
            "name": name,
            "label": f"{secret[:11]}...{secret[-3:]}",
            "disabled": disabled,
            "limit": None,
            "limit_remaining": None,
            "usage": 0,
            "created_at": "2026-12-07T10:30:00Z",
            "updated_at": None,
        }
        return secret, digest

    # -- what OpenRouter answers ---------------------------------------------------------
    def respond(self, seen: Seen) -> Reply:
        with self.lock:
            if self.queued:
                return self.queued.pop(0)
            if seen.headers.get("authorization") != f"Bearer {self.management_key}":
                return Reply(401, UNAUTHORIZED)
            return self._route(seen)

    def _route(self, seen: Seen) -> Reply:
        path = seen.path.removeprefix(PREFIX)
        if path == "/keys" and seen.method == "POST":
            return self._create(seen.body)
        if path == "/keys" and seen.method == "GET":
            return self._list(parse_qs(seen.query))
        digest = path.removeprefix("/keys/")
        if path.startswith("/keys/") and digest not in self.keys:
            return Reply(404, NOT_FOUND)
        if path.startswith("/keys/") and seen.method == "PATCH":
            self.keys[digest].update(json.loads(seen.body))
            return Reply(200, {"data": self.keys[digest]})
        if path.startswith("/keys/") and seen.method == "DELETE":
            del self.keys[digest]
            return Reply(200, {"deleted": True})
        return Reply(404, NOT_FOUND)

    def _create(self, raw: bytes) -> Reply:
        body = json.loads(raw or b"null")
        if not isinstance(body, dict) or not isinstance(body.get("name"), str):
            return Reply(400, BAD_REQUEST)
        secret, digest = self.add(body["name"])
        limit = body.get("limit")
        self.keys[digest].update(limit=limit, limit_remaining=limit)
        return Reply(201, {"data": self.keys[digest], "key": secret})

    def _list(self, query: dict[str, list[str]]) -> Reply:
        offset = int(query.get("offset", ["0"])[0])
        everything = query.get("include_disabled") == ["true"]
        newest_first = [k for k in reversed(self.keys.values()) if everything or not k["disabled"]]
        return Reply(200, {"data": newest_first[offset : offset + PAGE]})
