"""A bare pass-through for W4: granian ASGI forwarding to the fake provider with aiohttp's
client set up as the proxy's, and nothing else (no token, no checks, no secret read, no
event). What it adds over calling the provider directly is what this server and client
cost on this box before Keyward does anything:

    BARE_UPSTREAM=http://127.0.0.1:PORT python -m granian --interface asgi \\
        benchmarks.bare_proxy:app
"""

from __future__ import annotations

import os

import aiohttp

from benchmarks.fake_provider import Message, Receive, Send, lifespan

UPSTREAM = os.environ.get("BARE_UPSTREAM", "")
NOT_FORWARDED = {b"host", b"content-length", b"connection"}
NOT_RETURNED = {b"transfer-encoding", b"content-length", b"connection"}
_sessions: list[aiohttp.ClientSession] = []


async def app(scope: Message, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    if not _sessions:
        _sessions.append(
            aiohttp.ClientSession(
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept"),
            )
        )
    body = bytearray()
    while True:
        message = await receive()
        body.extend(message.get("body", b""))
        if not message.get("more_body"):
            break
    headers = [(k.decode(), v.decode()) for k, v in scope["headers"] if k not in NOT_FORWARDED]
    async with _sessions[0].request(
        scope["method"], UPSTREAM + scope["path"], data=bytes(body), headers=headers
    ) as answer:
        start = [(k.lower(), v) for k, v in answer.raw_headers if k.lower() not in NOT_RETURNED]
        await send({"type": "http.response.start", "status": answer.status, "headers": start})
        async for chunk in answer.content.iter_any():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
