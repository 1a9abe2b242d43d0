"""The official `openai` and `anthropic` SDKs, unchanged, pointed at the proxy with a
`kwt_` token as their API key: a plain and a streaming call each, against stubs that
answer as the providers document and record what they received."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from audit.models import AuditEvent
from tenants.actions import do_create_grant
from tests.kms.world import SYSTEM, onboard_key
from tests.proxy.server import QuietHandler, Upstream, serve_proxy

pytestmark = pytest.mark.slow

ANTHROPIC_KEY = "sk-ant-api03-" + "A1b2C3d4" * 11 + "-Q1w2E3AA"
CHAT = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "gpt-4o-mini",
    "choices": [
        {
            "index": 0,
            "finish_reason": "stop",
            "message": {"role": "assistant", "content": "hello"},
        }
    ],
    "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
}
MESSAGE = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5",
    "content": [{"type": "text", "text": "hello"}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 5, "output_tokens": 1},
}


def _chat_stream() -> list[bytes]:
    chunk = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini"}
    parts = [
        {**chunk, "choices": [{"index": 0, "delta": {"role": "assistant", "content": "hel"}}]},
        {**chunk, "choices": [{"index": 0, "delta": {"content": "lo"}, "finish_reason": "stop"}]},
        {**chunk, "choices": [], "usage": CHAT["usage"]},
    ]
    return [f"data: {json.dumps(p)}\n\n".encode() for p in parts] + [b"data: [DONE]\n\n"]


def _message_stream() -> list[bytes]:
    events = [
        ("message_start", {"type": "message_start", "message": {**MESSAGE, "content": []}}),
        (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ),
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": "hello"},
            },
        ),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": 1},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]
    return [f"event: {name}\ndata: {json.dumps(data)}\n\n".encode() for name, data in events]


class Providers(Upstream):
    """OpenAI's chat completions and Anthropic's messages, plain or streamed."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, str]]] = []
        stub = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                stub.seen.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
                anthropic_call = self.path.endswith("/v1/messages")
                if body.get("stream"):
                    chunks = _message_stream() if anthropic_call else _chat_stream()
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.send_header("Connection", "close")
                    self.end_headers()
                    for chunk in chunks:
                        self.wfile.write(chunk)
                        self.wfile.flush()
                    return
                raw = json.dumps(MESSAGE if anthropic_call else CHAT).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        super().__init__(Handler)


@pytest.fixture
def providers() -> Iterator[Providers]:
    stub = Providers()
    yield stub
    stub.close()


@pytest.fixture
def proxy(committed_world: Any, providers: Providers, tmp_path: Path) -> Iterator[str]:
    base_urls = {"openai": providers.url + "/v1", "anthropic": providers.url + "/v1"}
    with serve_proxy(base_urls, tmp_path / "proxy.log") as url:
        yield url + "/api/v1/proxy"


def _no_caller_credential(headers: dict[str, str], token: str) -> None:
    assert token not in json.dumps(headers), "the caller's token never reaches the provider"
    assert "cookie" not in headers


def test_the_openai_sdk_calls_through_the_proxy_plain_and_streamed(
    committed_world, providers, proxy
):
    token = committed_world.token(scopes=["proxy"])
    client = openai.OpenAI(base_url=f"{proxy}/openai", api_key=token, max_retries=0)
    ask: dict[str, Any] = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    plain = client.chat.completions.create(**ask)
    assert plain.choices[0].message.content == "hello"
    streamed = client.chat.completions.create(
        **ask, stream=True, stream_options={"include_usage": True}
    )
    text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
    assert text == "hello"
    assert [path for path, _ in providers.seen] == ["/v1/chat/completions"] * 2
    for _, headers in providers.seen:
        assert headers["authorization"] == f"Bearer {committed_world.secret_a}"
        _no_caller_credential(headers, token)


def test_the_anthropic_sdk_calls_through_the_proxy_plain_and_streamed(
    committed_world, providers, proxy
):
    tenant = committed_world.actors.tenant_a
    onboard_key(tenant, ANTHROPIC_KEY, label="claude", provider="anthropic")
    do_create_grant(committed_world.principal, tenant, "anthropic", ["proxy"], 900, actor=SYSTEM)
    token = committed_world.token(provider="anthropic", scopes=["proxy"])
    client = anthropic.Anthropic(base_url=f"{proxy}/anthropic", api_key=token, max_retries=0)
    ask: dict[str, Any] = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 16,
        "messages": [{"role": "user", "content": "hi"}],
    }
    plain = client.messages.create(**ask)
    assert plain.content[0].text == "hello"
    with client.messages.stream(**ask) as stream:
        assert "".join(stream.text_stream) == "hello"
    assert [path for path, _ in providers.seen] == ["/v1/messages"] * 2
    events = AuditEvent.objects.filter(action="proxy.request").order_by("occurred_at")
    deadline = time.monotonic() + 10
    while events.count() < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    usages = [event.details["usage"] for event in events]
    assert usages == [{"input_tokens": 5, "output_tokens": 1}] * 2, usages
    for _, headers in providers.seen:
        assert headers["x-api-key"] == ANTHROPIC_KEY
        assert headers["anthropic-version"]  # the SDK's own, passed through
        assert "authorization" not in headers
        _no_caller_credential(headers, token)
