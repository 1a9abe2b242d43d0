"""The README's run command serves on its embedded default with no external service, and
its quick start runs there as written."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Embedded:
    base: str
    env: dict[str, str]
    data: Path
    log: Path
    proxy: str

    def output(self) -> str:
        return self.log.read_text()


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Embedded]:
    """`scripts/run` on its embedded default, with nothing configured but a data folder."""
    tmp_path = tmp_path_factory.mktemp("embedded")
    port, proxy_port = _free_port(), _free_port()  # the next port may be another test's
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYWARD_")}
    env["KEYWARD_DATA_DIR"] = str(tmp_path / "data")
    env["KEYWARD_SCHEDULE_VERIFY_AUDIT"] = "1"  # beat sends the audit verification every second
    log_path = tmp_path / "run.log"
    log = log_path.open("w")
    proc = subprocess.Popen(
        ["bash", "scripts/run", "--port", str(port), "--proxy-port", str(proxy_port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    server = Embedded(
        f"http://127.0.0.1:{port}",
        env,
        tmp_path / "data",
        log_path,
        f"http://127.0.0.1:{proxy_port}",
    )
    try:
        deadline, health = time.monotonic() + 90, None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                health = requests.get(f"{server.base}/healthz", timeout=2)
                break
            except (requests.ConnectionError, requests.Timeout):  # not up, or still loading
                time.sleep(0.3)
        assert health is not None and health.status_code == 200, server.output()
        yield server
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def _readme_quick_start() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### Quick start") :]
    start = section.index("```sh\n") + len("```sh\n")
    return section[start : section.index("\n```", start)]


@pytest.mark.slow
def test_the_readme_quick_start_runs_as_written(embedded):
    script = _readme_quick_start()
    assert "manage.py audit_verify" in script and "/exchange" in script
    env = {**embedded.env, "KW": embedded.base}
    ran = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr + embedded.output()[-3000:]
    out = ran.stdout
    assert '"api_key":"sk-proj-example0123456789abcdefEXAMPLE"' in out.replace(" ", "")
    assert '"active":true' in out.replace(" ", "")
    assert '"status":"active"' in out.replace(" ", "")
    assert out.rstrip().splitlines()[-1].startswith("ok: ")
    assert "Traceback" not in embedded.output()


@pytest.mark.slow
def test_scripts_run_serves_healthz_and_the_openapi_document(embedded):
    base, env, tmp_path = embedded.base, embedded.env, embedded.data.parent
    schema = requests.get(f"{base}/api/v1/schema/?format=json", timeout=10)
    assert schema.status_code == 200
    assert "/api/v1/tenants" in schema.json()["paths"]
    docs = requests.get(f"{base}/api/v1/docs/", timeout=10)
    assert docs.status_code == 200
    for _ in range(50):
        ready = requests.get(f"{base}/readyz", timeout=10)
        if ready.status_code == 200:
            break
        time.sleep(0.2)
    assert ready.json()["checks"] == {"database": "ok", "secret_store": "ok", "broker": "ok"}
    proxied = requests.get(f"{embedded.proxy}/api/v1/proxy/openai/models", timeout=10)
    assert proxied.status_code == 401, "the proxy is served too, and asks for a token"
    assert proxied.headers["X-Keyward-Refusal"] == "unauthenticated"
    output = embedded.output()
    assert "create_admin" in output and base in output
    database = tmp_path / "data" / "keyward.sqlite3"
    assert database.exists()
    created = subprocess.run(
        ["bash", "-c", ".venv/bin/python manage.py create_admin first --role security_admin"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    tenants = requests.get(
        f"{base}/api/v1/tenants", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    assert tenants.status_code == 200
    # The worker and beat, on the file broker, verify the chain that event started.
    deadline = time.monotonic() + 60
    checked: dict[str, int] = {}
    while time.monotonic() < deadline and "global" not in checked:
        with sqlite3.connect(database) as db:
            checked = dict(db.execute("SELECT chain, ok FROM audit_chaincheck").fetchall())
        time.sleep(0.5)
    assert checked.get("global") == 1, embedded.output()[-3000:]
    assert all(ok == 1 for ok in checked.values()), checked
