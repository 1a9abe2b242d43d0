"""A real Celery worker process on the Redis broker, sharing the test database and the
test's secret store, listening on a queue of its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import redis
from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent


class Worker:
    def __init__(
        self,
        store: dict[str, Any],
        provider_url: str,
        log: Path,
        webhooks: str = "",
        queue: str | None = None,
        visibility_timeout: int = 3600,
        broker: str | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.queue = queue or f"keyward-test-{uuid.uuid4().hex[:10]}"
        db = connection.settings_dict
        env = {k: v for k, v in os.environ.items() if not k.startswith("KEYWARD_")}
        env.update(
            KEYWARD_DATA_DIR=str(settings.DATA_DIR),
            KEYWARD_QUIET_EMBEDDED="1",
            KEYWARD_DATABASE_URL=f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
            KEYWARD_BROKER_URL=broker or settings.CELERY_BROKER_URL,
            KEYWARD_CELERY_QUEUE=self.queue,
            KEYWARD_PROVIDER_BASE_URLS=json.dumps({"openai": provider_url}),
            KEYWARD_JOB_RETRY_BASE_SECONDS="1",
            KEYWARD_PROVIDER_TIMEOUT_MS="1000",
            KEYWARD_BROKER_VISIBILITY_TIMEOUT=str(visibility_timeout),
            KEYWARD_KEY_CHECK_INTERVAL="2",
            KEYWARD_SCHEDULE_KEY_CHECKS="2",
            KEYWARD_KEY_CHECKS_PER_PROVIDER_PER_MINUTE="600",
        )
        if webhooks:
            env["KEYWARD_WEBHOOKS"] = webhooks
        env.update(extra_env or {})
        if store["backend"] == "vault":
            env.update(
                KEYWARD_SECRET_STORE="vault",
                KEYWARD_VAULT_ADDR=store["addr"],
                KEYWARD_VAULT_TOKEN=store["token"],
                KEYWARD_VAULT_PATH_PREFIX=store["path_prefix"],
            )
        self.log = log
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "settings.celery",
                "worker",
                "--pool",
                "solo",
                "-Q",
                self.queue,
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "--loglevel",
                "INFO",
            ],
            cwd=ROOT,
            env=env,
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
        )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "ready." in self.log.read_text():
                return
            if self.proc.poll() is not None:
                raise RuntimeError(self.log.read_text())
            time.sleep(0.1)
        raise RuntimeError("the worker did not start:\n" + self.log.read_text())

    def send(self, task: Any, *args: Any) -> None:
        task.apply_async(args, queue=self.queue)

    def kill(self) -> None:
        """SIGKILL: no warm shutdown, the task in hand stays unacknowledged."""
        self.proc.kill()
        self.proc.wait(timeout=15)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def wait_for(condition: Any, timeout: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def redis_dump(url: str) -> str:
    """Every key of the broker's database with its value, whatever its type."""
    client = redis.Redis.from_url(url)
    readers = {
        b"string": lambda name: client.get(name),
        b"list": lambda name: client.lrange(name, 0, -1),
        b"hash": lambda name: client.hgetall(name),
        b"set": lambda name: client.smembers(name),
        b"zset": lambda name: client.zrange(name, 0, -1),
        b"stream": lambda name: client.xrange(name),
    }
    parts = []
    for name in client.scan_iter(count=1000):
        kind = client.type(name)
        value = readers.get(kind if isinstance(kind, bytes) else str(kind).encode(), lambda _: b"")(
            name
        )
        parts.append(f"{name!r}={value!r}")
    return "\n".join(parts)
