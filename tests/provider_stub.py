"""A local HTTP server that answers the way a provider documents, and records what it got."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit


@dataclass
class Reply:
    status: int = 200
    body: Any = field(default_factory=lambda: {"object": "list", "data": []})
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class Seen:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    at: float = 0.0


class ProviderStub:
    def __init__(self) -> None:
        self.reply = Reply()
        self.seen: list[Seen] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                seen = Seen(
                    self.command,
                    parts.path,
                    parts.query,
                    {k.lower(): v for k, v in self.headers.items()},
                    body,
                    time.monotonic(),
                )
                stub.seen.append(seen)
                reply = stub.respond(seen)
                if reply.delay:
                    time.sleep(reply.delay)
                raw = (
                    reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
                )
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(raw)))
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(raw)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def respond(self, seen: Seen) -> Reply:
        """The answer to a request: the one `answer` set, whatever was asked."""
        return self.reply

    def answer(
        self,
        status: int = 200,
        body: Any = None,
        headers: dict[str, str] | None = None,
        delay: float = 0.0,
    ) -> None:
        self.reply = Reply(
            status, {"object": "list", "data": []} if body is None else body, headers or {}, delay
        )

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# Documented error bodies, one per provider and situation.
OPENAI_INVALID = {
    "error": {
        "message": "Incorrect API key provided: sk-proj-****wxyz. You can find your API key at https://platform.openai.com/account/api-keys.",
        "type": "invalid_request_error",
        "param": None,
        "code": "invalid_api_key",
    }
}
OPENAI_QUOTA = {
    "error": {
        "message": "You exceeded your current quota, please check your plan and billing details.",
        "type": "insufficient_quota",
        "param": None,
        "code": "insufficient_quota",
    }
}
OPENAI_RATE = {
    "error": {
        "message": "Rate limit reached for requests",
        "type": "requests",
        "param": None,
        "code": "rate_limit_exceeded",
    }
}
OPENAI_REGION = {
    "error": {
        "code": "unsupported_country_region_territory",
        "message": "Country, region, or territory not supported",
        "param": None,
        "type": "request_forbidden",
    }
}
OPENAI_FORBIDDEN = {
    "error": {
        "message": "You have insufficient permissions for this operation. Missing scopes: api.model.read.",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }
}
ANTHROPIC_INVALID = {
    "type": "error",
    "error": {"type": "authentication_error", "message": "invalid x-api-key"},
}
ANTHROPIC_BILLING = {
    "type": "error",
    "error": {"type": "billing_error", "message": "Your credit balance is too low."},
}
ANTHROPIC_PERMISSION = {
    "type": "error",
    "error": {
        "type": "permission_error",
        "message": "Your API key does not have permission to use the specified resource.",
    },
}
ANTHROPIC_OVERLOADED = {
    "type": "error",
    "error": {"type": "overloaded_error", "message": "Overloaded"},
}
ANTHROPIC_RATE = {
    "type": "error",
    "error": {
        "type": "rate_limit_error",
        "message": "Number of requests has exceeded your rate limit",
    },
}
GEMINI_INVALID = {
    "error": {
        "code": 400,
        "message": "API key not valid. Please pass a valid API key.",
        "status": "INVALID_ARGUMENT",
        "details": [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
                "metadata": {"service": "generativelanguage.googleapis.com"},
            }
        ],
    }
}
GEMINI_REGION = {
    "error": {
        "code": 400,
        "message": "User location is not supported for the API use.",
        "status": "FAILED_PRECONDITION",
    }
}
GEMINI_DENIED = {
    "error": {
        "code": 403,
        "message": "Requests to this API method are blocked.",
        "status": "PERMISSION_DENIED",
        "details": [{"reason": "API_KEY_SERVICE_BLOCKED", "domain": "googleapis.com"}],
    }
}
GEMINI_EXHAUSTED = {
    "error": {
        "code": 429,
        "message": "Resource has been exhausted (e.g. check quota).",
        "status": "RESOURCE_EXHAUSTED",
    }
}
AZURE_INVALID = {
    "error": {
        "code": "401",
        "message": "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource.",
    }
}
MISTRAL_INVALID = {"message": "Unauthorized", "request_id": "abc"}
GROQ_INVALID = {
    "error": {
        "message": "Invalid API Key",
        "type": "invalid_request_error",
        "code": "invalid_api_key",
    }
}
COHERE_INVALID = {"id": "x", "message": "invalid api token"}
# OpenRouter: every error is {"error": {"code": <status>, "message": ...}}; GET /key
# describes the calling key.
OPENROUTER_KEY = {
    "data": {
        "label": "sk-or-v1-au7...890",
        "limit": 100,
        "limit_remaining": 74.5,
        "limit_reset": "monthly",
        "usage": 25.5,
        "is_free_tier": False,
        "is_management_key": False,
        "is_provisioning_key": False,
    }
}
OPENROUTER_SPENT = {"data": {**OPENROUTER_KEY["data"], "usage": 100, "limit_remaining": 0}}
OPENROUTER_UNLIMITED = {"data": {**OPENROUTER_KEY["data"], "limit": None, "limit_remaining": None}}
OPENROUTER_INVALID = {"error": {"code": 401, "message": "Missing Authentication header"}}
OPENROUTER_CREDITS = {
    "error": {
        "code": 402,
        "message": "Insufficient credits. Add more using https://openrouter.ai/credits",
    }
}
OPENROUTER_RATE = {"error": {"code": 429, "message": "Rate limit exceeded"}}

KEYS = {
    "openai": "sk-proj-" + "A1b2C3d4" * 6,
    "anthropic": "sk-ant-api03-" + "Z9y8X7w6" * 6,
    "google": "AIza" + "S" * 35,
    "azure_openai": "0123456789abcdef0123456789abcdef",
    "mistral": "M" * 32,
    "groq": "gsk_" + "G" * 48,
    "cohere": "C" * 40,
    "openrouter": "sk-or-v1-" + "0e6f44a4" * 8,
    "openai_compatible": "any-token-123",
}
