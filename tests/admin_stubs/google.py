"""Google's OAuth token endpoint and API Keys API v2, answering as Google documents them:
keys created by a long-running operation, read by getKeyString, listed by page, deleted."""

from __future__ import annotations

import json
import uuid
from functools import cache
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.admin_stubs.routed import RoutedStub, body_of
from tests.provider_stub import Reply, Seen

TOKEN = "ya29.c.stub-access-token-" + "T0k3n" * 8
NOT_FOUND = {
    "error": {"code": 404, "message": "Requested entity was not found.", "status": "NOT_FOUND"}
}
UNAUTHENTICATED = {
    "error": {
        "code": 401,
        "message": "Request had invalid authentication credentials. Expected OAuth 2 access "
        "token, login cookie or other valid authentication credential.",
        "status": "UNAUTHENTICATED",
    }
}
PERMISSION_DENIED = {
    "error": {
        "code": 403,
        "message": "Permission 'apikeys.keys.create' denied on resource (or it may not exist).",
        "status": "PERMISSION_DENIED",
        "details": [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "IAM_PERMISSION_DENIED",
                "domain": "apikeys.googleapis.com",
            }
        ],
    }
}
INVALID_ARGUMENT = {
    "error": {
        "code": 400,
        "message": "Invalid resource field value in the request.",
        "status": "INVALID_ARGUMENT",
    }
}
RESOURCE_EXHAUSTED = {
    "error": {
        "code": 429,
        "message": "Quota exceeded for quota metric 'Write requests' of service 'apikeys.googleapis.com'.",
        "status": "RESOURCE_EXHAUSTED",
    }
}
UNAVAILABLE = {
    "error": {
        "code": 503,
        "message": "The service is currently unavailable.",
        "status": "UNAVAILABLE",
    }
}
INVALID_GRANT = {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}


@cache
def private_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def key_file(token_uri: str, **changes: str) -> str:
    """A service account key file, as the Cloud console downloads it."""
    pem = private_key().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    data = {
        "type": "service_account",
        "project_id": "keyward-test",
        "private_key_id": "4c3b2a1f0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b",
        "private_key": pem.decode(),
        "client_email": "keyward-rotator@keyward-test.iam.gserviceaccount.com",
        "client_id": "109876543210987654321",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
        "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
        "universe_domain": "googleapis.com",
    }
    return json.dumps({**data, **changes})


class GoogleStub(RoutedStub):
    """One project's keys; an operation is done after `polls_before_done` reads."""

    def __init__(self) -> None:
        self.keys: dict[str, dict[str, Any]] = {}
        self.strings: dict[str, str] = {}
        self.operations: dict[str, dict[str, Any]] = {}
        self.polls: dict[str, int] = {}
        self.polls_before_done = 1
        self.page_size = 2
        super().__init__()

    @property
    def token_uri(self) -> str:
        return f"{self.url}/token"

    @property
    def api(self) -> str:
        return f"{self.url}/v2"

    def add_key(self, display_name: str, project: str = "123456789012") -> str:
        uid = str(uuid.uuid4())
        name = f"projects/{project}/locations/global/keys/{uid}"
        self.keys[name] = {
            "name": name,
            "displayName": display_name,
            "createTime": "2026-12-07T10:00:00.000Z",
            "uid": uid,
            "updateTime": "2026-12-07T10:00:00.000Z",
            "restrictions": {"apiTargets": [{"service": "generativelanguage.googleapis.com"}]},
            "etag": 'W/"' + uid[:8] + '"',
        }
        self.strings[name] = "AIzaSy" + uuid.uuid4().hex[:33]
        return name

    def route(self, seen: Seen) -> Reply:
        if seen.path == "/token":
            return Reply(200, {"access_token": TOKEN, "expires_in": 3599, "token_type": "Bearer"})
        if seen.headers.get("authorization") != f"Bearer {TOKEN}":
            return Reply(401, UNAUTHENTICATED)
        path = seen.path.removeprefix("/v2/")
        if seen.method == "POST" and path.endswith("/keys"):
            return self._create(seen, path)
        if seen.method == "GET" and path.startswith("operations/"):
            return self._operation(path)
        if seen.method == "GET" and path.endswith("/keyString"):
            name = path.removesuffix("/keyString")
            if name not in self.keys:
                return Reply(404, NOT_FOUND)
            return Reply(200, {"keyString": self.strings[name]})
        if seen.method == "GET" and path.endswith("/keys"):
            return self._list(seen)
        if seen.method == "DELETE":
            return self._delete(path)
        return Reply(404, NOT_FOUND)

    def _create(self, seen: Seen, parent_keys: str) -> Reply:
        project = parent_keys.split("/")[1]
        name = self.add_key(body_of(seen)["displayName"], project)
        self.keys[name]["restrictions"] = body_of(seen)["restrictions"]
        operation = f"operations/akmf.p7-{uuid.uuid4()}"
        self.operations[operation] = {
            "@type": "type.googleapis.com/google.api.apikeys.v2.Key",
            **self.keys[name],
        }
        self.polls[operation] = 0
        return Reply(
            200,
            {
                "name": operation,
                "metadata": {"@type": "type.googleapis.com/google.api.apikeys.v2.KeyMetadata"},
            },
        )

    def _operation(self, name: str) -> Reply:
        if name not in self.operations:
            return Reply(404, NOT_FOUND)
        self.polls[name] += 1
        if self.polls[name] < self.polls_before_done:
            return Reply(200, {"name": name, "done": False})
        return Reply(200, {"name": name, "done": True, "response": self.operations[name]})

    def _list(self, seen: Seen) -> Reply:
        start = int(seen.query.removeprefix("pageToken=") or 0) if seen.query else 0
        keys = list(self.keys.values())
        page: dict[str, Any] = {"keys": keys[start : start + self.page_size]}
        if start + self.page_size < len(keys):
            page["nextPageToken"] = str(start + self.page_size)
        return Reply(200, page)

    def _delete(self, name: str) -> Reply:
        key = self.keys.pop(name, None)
        if key is None:
            return Reply(404, NOT_FOUND)
        deleted = {
            "@type": "type.googleapis.com/google.api.apikeys.v2.Key",
            **key,
            "deleteTime": "2026-12-07T11:00:00Z",
        }
        return Reply(
            200, {"name": f"operations/akmd.p7-{uuid.uuid4()}", "done": True, "response": deleted}
        )
