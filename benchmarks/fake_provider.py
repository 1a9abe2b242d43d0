"""A fake OpenAI-shaped provider for W4, an ASGI application served by granian (a real
listen backlog, native HTTP parsing), so that it is never the bottleneck:

    python -m granian --interface asgi --backlog 2048 benchmarks.fake_provider:app

`POST /v1/chat/completions` answers a `chat.completion` with `usage`; with `"stream": true`
in the body, server-sent events: N `chat.completion.chunk` events spread evenly over T
seconds (the first at once), a usage chunk and `data: [DONE]`. Every chunk carries `sent_at`,
the provider's wall-clock send time (`time.time()`), so a client can compute the delay
added on the way. N and T come from the `x-fake-stream: N,T` request header, else from
FAKE_STREAM_CHUNKS and FAKE_STREAM_SECONDS. A request whose Authorization is not
`Bearer sk-...` (a provider key) is answered 401: a token that leaked through is an error.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

PATH = "/v1/chat/completions"
DEFAULT_CHUNKS = int(os.environ.get("FAKE_STREAM_CHUNKS", "3"))
DEFAULT_SECONDS = float(os.environ.get("FAKE_STREAM_SECONDS", "0.02"))
USAGE = {"prompt_tokens": 9, "completion_tokens": 12, "total_tokens": 21}
SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


async def lifespan(receive: Receive, send: Send) -> None:
    """Nothing to start or stop: answer the server's lifespan messages."""
    while (await receive())["type"] == "lifespan.startup":
        await send({"type": "lifespan.startup.complete"})
    await send({"type": "lifespan.shutdown.complete"})


async def app(scope: Message, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    if scope["type"] != "http":
        return
    body = await _body(receive)
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
    if scope["method"] != "POST" or scope["path"] != PATH:
        await _json(send, 404, {"error": {"message": "not found", "type": "invalid_request"}})
        return
    if not headers.get("authorization", "").startswith("Bearer sk-"):
        await _json(send, 401, {"error": {"message": "no provider key", "type": "auth"}})
        return
    try:
        request = json.loads(body)
    except ValueError:
        await _json(send, 400, {"error": {"message": "not JSON", "type": "invalid_request"}})
        return
    model = str(request.get("model", "gpt-4o-mini"))
    if request.get("stream"):
        chunks, seconds = _stream_shape(headers.get("x-fake-stream", ""))
        await _stream(send, model, chunks, seconds)
    else:
        await _json(send, 200, _completion(model))


async def _body(receive: Receive) -> bytes:
    parts = []
    while True:
        message = await receive()
        parts.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(parts)


def _stream_shape(header: str) -> tuple[int, float]:
    if not header:
        return DEFAULT_CHUNKS, DEFAULT_SECONDS
    chunks, _, seconds = header.partition(",")
    return max(1, int(chunks)), max(0.0, float(seconds))


def _completion(model: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello from the fake provider."},
                "finish_reason": "stop",
            }
        ],
        "usage": USAGE,
    }


async def _json(send: Send, status: int, document: dict[str, Any]) -> None:
    payload = json.dumps(document).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(payload))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload, "more_body": False})


def _event(model: str, delta: dict[str, str], finish: str | None, **extra: Any) -> bytes:
    chunk = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        "sent_at": time.time(),
        **extra,
    }
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


async def _stream(send: Send, model: str, chunks: int, seconds: float) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
    loop = asyncio.get_running_loop()
    start = loop.time()
    gap = seconds / (chunks - 1) if chunks > 1 else 0.0
    for i in range(chunks):
        await asyncio.sleep(max(0.0, start + i * gap - loop.time()))
        event = _event(model, {"content": f"tok{i} "}, None)
        await send({"type": "http.response.body", "body": event, "more_body": True})
    tail = _event(model, {}, "stop", usage=USAGE) + b"data: [DONE]\n\n"
    await send({"type": "http.response.body", "body": tail, "more_body": False})
