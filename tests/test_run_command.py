"""The README's run command serves on its embedded default with no external service."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_scripts_run_serves_healthz_and_the_openapi_document(tmp_path):
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYWARD_")}
    env["KEYWARD_DATA_DIR"] = str(tmp_path / "data")
    env["KEYWARD_SCHEDULE_VERIFY_AUDIT"] = "1"  # beat sends the audit verification every second
    log = (tmp_path / "run.log").open("w")
    proc = subprocess.Popen(
        ["bash", "scripts/run", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline, health = time.monotonic() + 90, None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                health = requests.get(f"{base}/healthz", timeout=2)
                break
            except requests.ConnectionError:
                time.sleep(0.3)
        assert health is not None and health.status_code == 200, (tmp_path / "run.log").read_text()
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
        output = (tmp_path / "run.log").read_text()
        assert "create_admin" in output and f":{port}" in output
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
        checked: list[tuple[str, int]] = []
        while time.monotonic() < deadline and not checked:
            with sqlite3.connect(database) as db:
                checked = db.execute("SELECT chain, ok FROM audit_chaincheck").fetchall()
            time.sleep(0.5)
        assert checked == [("global", 1)], (tmp_path / "run.log").read_text()[-3000:]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
