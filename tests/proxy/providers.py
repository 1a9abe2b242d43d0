"""Stub providers that answer as OpenAI's chat completions and Anthropic's messages
document, plain or streamed, and record what they received."""

from __future__ import annotations

import json

from tests.proxy.server import QuietHandler, Upstream

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
