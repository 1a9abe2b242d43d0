"""The export command shows progress on a terminal and stays quiet otherwise."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

from audit.actors import Actor
from audit.recorder import record
from audit.sequencer import integrate_all
from tests import pg

ROOT = Path(__file__).resolve().parents[2]


def _read_all(fd: int) -> bytes:
    shown = b""
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            return shown
        if not chunk:
            return shown
        shown += chunk


def test_progress_only_on_a_terminal(committed_db, tmp_path):
    for n in range(20):
        record("test.progress", actor=Actor.system(), tenant="progress", details={"n": n})
    integrate_all()
    out = tmp_path / "tty.jsonl"
    env = {
        **os.environ,
        "KEYWARD_DATABASE_URL": pg.database_url(),
    }
    command = [sys.executable, "manage.py", "audit_export", "--output", str(out)]
    quiet = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert quiet.returncode == 0, quiet.stderr
    assert "events/s" not in quiet.stderr
    integrate_all()  # the first export's two events (started, exported) join the chain
    pid, fd = pty.fork()
    if pid == 0:  # the child, whose standard error is a terminal
        os.chdir(ROOT)
        os.execve(sys.executable, command, env)  # noqa: S606 - a fixed argv, no shell
    shown = _read_all(fd)
    os.waitpid(pid, 0)
    assert b"events/s" in shown, shown
    assert b"22 events," in shown and b"exported 22" in shown
