"""The proxy under its production server (granian, ASGI): server-sent events reach the
client as they arrive, and a client that goes away cancels the upstream call."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from audit.models import AuditEvent
from tests.proxy.server import QuietHandler, Upstream, serve_proxy

EVENTS, GAP = 4, 0.4  # the stub's stream: four events, 0.4 s apart


class SlowStream(Upstream):
    """An upstream that answers with an SSE stream, one event every GAP seconds, and
    notes whether the stream was cut off before its end."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.finished_at: float | None = None
        self.cut_off = threading.Event()
        self.headers: dict[str, str] = {}
        stub = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                stub.headers = {k.lower(): v for k, v in self.headers.items()}
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                stub.started.set()
                try:
                    for n in range(EVENTS):
                        chunk: dict[str, Any] = {"choices": [{"delta": {"content": f"part {n}"}}]}
                        if n == EVENTS - 1:
                            chunk["usage"] = {"prompt_tokens": 3, "completion_tokens": 4}
                        self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                        self.wfile.flush()
                        time.sleep(GAP)
                    self.wfile.write(b"data: [DONE]\n\n")
                    self.wfile.flush()
                except OSError:
                    stub.cut_off.set()
                    return
                stub.finished_at = time.monotonic()

        super().__init__(Handler)


@pytest.fixture
def upstream() -> Iterator[SlowStream]:
    stub = SlowStream()
    yield stub
    stub.close()


@pytest.fixture
def proxy_server(committed_world: Any, upstream: SlowStream, tmp_path: Path) -> Iterator[str]:
    with serve_proxy({"openai": upstream.url + "/v1"}, tmp_path / "proxy.log") as url:
        yield url


def _request(world: Any) -> dict[str, Any]:
    return {
        "headers": {"Authorization": f"Bearer {world.token(scopes=['proxy'])}"},
        "json": {"model": "gpt-4o-mini", "stream": True, "messages": []},
    }


@pytest.mark.slow
def test_the_first_event_arrives_before_the_upstream_stream_ends(
    committed_world, upstream, proxy_server
):
    url = proxy_server + "/api/v1/proxy/openai/chat/completions"
    received: list[tuple[float, str]] = []
    with httpx.stream("POST", url, timeout=10, **_request(committed_world)) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        for line in response.iter_lines():
            if line.startswith("data:"):
                received.append((time.monotonic(), line))
    assert len(received) == EVENTS + 1
    assert upstream.finished_at is not None
    assert received[0][0] < upstream.finished_at - GAP * (EVENTS - 2), "streamed, not buffered"
    assert upstream.headers["authorization"] == f"Bearer {committed_world.secret_a}"
    event = _wait_for_event()
    assert event.details["usage"] == {"prompt_tokens": 3, "completion_tokens": 4}
    assert event.details["upstream_status"] == 200


@pytest.mark.slow
def test_a_client_that_goes_away_cancels_the_upstream_call(committed_world, upstream, proxy_server):
    url = proxy_server + "/api/v1/proxy/openai/chat/completions"
    with httpx.stream("POST", url, timeout=10, **_request(committed_world)) as response:
        for line in response.iter_lines():
            if line.startswith("data:"):
                break  # leave after the first event
    assert upstream.cut_off.wait(GAP * EVENTS + 2), "the upstream stream was cut off"
    assert upstream.finished_at is None
    event = _wait_for_event()
    assert event.details.get("client_disconnected") is True


def _wait_for_event() -> AuditEvent:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        event = AuditEvent.objects.filter(action="proxy.request").first()
        if event is not None:
            return event
        time.sleep(0.1)
    raise AssertionError("no proxy.request event")


class SlowReader(Upstream):
    """An upstream that notes when the first bytes of a request body reach it."""

    def __init__(self) -> None:
        self.first_bytes_at: float | None = None
        self.body = b""
        stub = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                first = self.rfile.read(1024)
                stub.first_bytes_at = time.monotonic()
                stub.body = first + self.rfile.read(length - len(first))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

        super().__init__(Handler)


@pytest.mark.slow
def test_an_upload_reaches_the_provider_while_the_client_is_still_sending(
    committed_world, tmp_path
):
    reader = SlowReader()
    try:
        with serve_proxy({"openai": reader.url + "/v1"}, tmp_path / "proxy.log") as url:
            token = committed_world.token(scopes=["proxy"])
            sent_last_at: list[float] = []

            def upload() -> Iterator[bytes]:
                yield b"a" * 4096
                time.sleep(1.0)
                sent_last_at.append(time.monotonic())
                yield b"b" * 4096

            response = httpx.post(
                url + "/api/v1/proxy/openai/audio/transcriptions",
                content=upload(),
                headers={
                    "Authorization": f"Bearer {token}",
                    "Content-Type": "application/octet-stream",
                    "Content-Length": "8192",
                },
                timeout=10,
            )
    finally:
        reader.close()
    assert response.status_code == 200, response.text
    assert reader.body == b"a" * 4096 + b"b" * 4096
    assert reader.first_bytes_at is not None
    assert reader.first_bytes_at < sent_last_at[0], "streamed upstream, not buffered"
