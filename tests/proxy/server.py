"""The proxy under its production server: granian in ASGI mode serving settings.asgi over
the test database, its providers' base URLs pointed at local stubs."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from django.conf import settings

from tests import pg
from tests.bao import free_port

ROOT = Path(__file__).resolve().parent.parent.parent


@contextmanager
def serve_proxy(base_urls: dict[str, str], log_path: Path) -> Iterator[str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYWARD_")}
    env.update(
        KEYWARD_DATA_DIR=str(settings.DATA_DIR),
        KEYWARD_QUIET_EMBEDDED="1",
        KEYWARD_DATABASE_URL=pg.database_url(),
        KEYWARD_PROVIDER_BASE_URLS=json.dumps(base_urls),
    )
    log = log_path.open("w")
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "granian", "--interface", "asgi", "--host", "127.0.0.1",
            "--port", str(port), "--workers", "1", "--no-ws", "settings.asgi:application",
        ],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        log.close()


class QuietHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass


class Upstream:
    """A provider stub on loopback, serving `handler` from threads until closed."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
