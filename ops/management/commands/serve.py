"""Run the whole service on one box: web server, Celery worker and beat, and the audit
sequencer, together.

    python manage.py serve [--host 127.0.0.1] [--port 8000] [--web-workers 1]

Applies migrations first, then supervises the children until one exits or a signal
arrives, and stops all of them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections

from core import metrics
from core.shutdown import stop_on_signals


def _children(host: str, port: int, web_workers: int, proxy_port: int) -> list[list[str]]:
    python = sys.executable
    web = [
        python,
        "-m",
        "granian",
        "--interface",
        "wsgi",
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        str(web_workers),
        "--no-ws",
        "settings.wsgi:application",
    ]
    worker = [
        python,
        "-m",
        "celery",
        "-A",
        "settings.celery",
        "worker",
        "--beat",
        "--concurrency",
        "1",
        "--loglevel",
        "INFO",
        "--without-gossip",
        "--without-mingle",
    ]
    # The proxy streams on native async I/O: ASGI, on a port of its own.
    proxy = [
        python,
        "-m",
        "granian",
        "--interface",
        "asgi",
        "--host",
        host,
        "--port",
        str(proxy_port),
        "--workers",
        str(web_workers),
        "--no-ws",
        "settings.asgi:application",
    ]
    sequencer = [python, "manage.py", "audit_sequencer"]
    return [web, proxy, worker, sequencer]


class Command(BaseCommand):
    help = "Run the web server, a Celery worker and beat together (the embedded default)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default=os.environ.get("KEYWARD_HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("KEYWARD_PORT", "8000")))
        parser.add_argument(
            "--web-workers", type=int, default=int(os.environ.get("KEYWARD_WEB_WORKERS", "1"))
        )
        parser.add_argument(
            "--proxy-port",
            type=int,
            default=int(os.environ.get("KEYWARD_PROXY_PORT", "0")) or None,
            help="the proxy's port (default: --port + 1)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        call_command("migrate", interactive=False, verbosity=0)
        connections.close_all()
        metrics.wipe(settings.METRICS_DIR)  # the counters of an earlier run
        proxy_port = options["proxy_port"] or options["port"] + 1
        code = supervise(options["host"], options["port"], options["web_workers"], proxy_port)
        if code:
            raise CommandError("a child process stopped; everything was shut down", returncode=code)


def _this_python() -> str:
    """The interpreter running this, as the shell would name it from here."""
    here = os.path.abspath(sys.executable)
    inside = here.startswith(os.getcwd() + os.sep)
    return os.path.relpath(here) if inside else here


def supervise(host: str, port: int, web_workers: int, proxy_port: int) -> int:
    """Start the children and wait until one exits or a signal arrives, then stop all."""
    env = {**os.environ, "KEYWARD_QUIET_EMBEDDED": "1"}
    children = _children(host, port, web_workers, proxy_port)
    procs = [subprocess.Popen(cmd, env=env) for cmd in children]
    url = f"http://{host}:{port}"
    print(
        f"\nKeyward is starting on {url}  (API docs: {url}/api/v1/docs/)\n"
        f"The proxy listens on http://{host}:{proxy_port}/api/v1/proxy/\n"
        "Create the first admin and get an API token (shown once):\n"
        f"    {_this_python()} manage.py create_admin alice --role security_admin\n"
        "Stop with Ctrl-C.\n",
        flush=True,
    )
    stop = stop_on_signals()
    while not stop.is_set() and all(p.poll() is None for p in procs):
        time.sleep(0.2)
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 10
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
    return 0 if stop.is_set() else 1
