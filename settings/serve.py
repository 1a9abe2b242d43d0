"""Run the whole service on one box: web server, Celery worker and beat, together.

    python -m settings.serve [--host 127.0.0.1] [--port 8000]

Applies migrations first, then supervises the children until one exits or a signal
arrives, and stops all of them.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from types import FrameType


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="keyward serve", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=os.environ.get("KEYWARD_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("KEYWARD_PORT", "8000")))
    parser.add_argument(
        "--web-workers", type=int, default=int(os.environ.get("KEYWARD_WEB_WORKERS", "1"))
    )
    return parser.parse_args()


def _children(args: argparse.Namespace) -> list[list[str]]:
    python = sys.executable
    web = [
        python,
        "-m",
        "granian",
        "--interface",
        "wsgi",
        "--host",
        args.host,
        "--port",
        str(args.port),
        "--workers",
        str(args.web_workers),
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
    return [web, worker]


def main() -> int:
    args = _parse()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings.settings")
    manage = [sys.executable, "manage.py"]
    migrate = subprocess.run([*manage, "migrate", "--no-input", "-v", "0"], check=False)
    if migrate.returncode != 0:
        return migrate.returncode
    env = {**os.environ, "KEYWARD_QUIET_EMBEDDED": "1"}
    procs = [subprocess.Popen(cmd, env=env) for cmd in _children(args)]
    url = f"http://{args.host}:{args.port}"
    print(
        f"\nKeyward is starting on {url}  (API docs: {url}/api/v1/docs/)\n"
        "Create the first admin and get an API token (shown once):\n"
        "    .venv/bin/python manage.py create_admin alice --role security_admin\n"
        "Stop with Ctrl-C.\n",
        flush=True,
    )
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    while not stopping and all(p.poll() is None for p in procs):
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
    return 0 if stopping else 1


if __name__ == "__main__":
    sys.exit(main())
