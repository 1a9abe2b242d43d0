"""Paired before/after: `scripts/bench --compare REF` measures W1-W3 (both shapes, 32
connections) and the latency at an offered 300 req/s for the code at git REF and for the
working tree, side by side: one database, one production-shaped OpenBao, both servers up
at once and measured alternately, so the box's drift falls on both alike. The schema must
be the same at both (no migration between them); the ratio is the figure that counts."""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

from benchmarks.common import ROOT, database_name, drop_database, fresh_database, seed
from benchmarks.paced import paced
from benchmarks.w123_tokens import FIXED_RATE, keyward_workloads, production_env, wrk
from tests.bao import free_port, start_raft_server

ROUNDS, SECONDS = 3, 4.0
CLOSED = ("W1", "W2", "W3", "W1_mix", "W2_mix", "W3_mix")


def _migrations(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.glob("*/migrations/0*.py")}


def _checkout(ref: str, into: Path) -> Path:
    """The tree at `ref`, with today's harness (the benchmarks and the test helpers it uses)."""
    tree = into / "before"
    subprocess.run(["git", "worktree", "add", "--detach", str(tree), ref], cwd=ROOT, check=True)
    if _migrations(tree) != _migrations(ROOT):
        raise SystemExit(f"{ref} has other migrations than the working tree: compare by hand")
    shutil.rmtree(tree / "benchmarks")
    shutil.copytree(ROOT / "benchmarks", tree / "benchmarks")
    shutil.copy(ROOT / "tests" / "bao.py", tree / "tests" / "bao.py")
    return tree


def _serve(env: dict[str, str], root: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    command = [sys.executable, "-m", "granian", "--interface", "wsgi", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--workers", "2", "--blocking-threads", "4", "--no-ws"]
    proc = subprocess.Popen(
        [*command, "settings.wsgi:application"],
        cwd=root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if requests.get(f"{base}/healthz", timeout=1).status_code == 200:
                return proc, base
        except requests.ConnectionError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"the server at {root} did not start")


def _round(loads: dict[str, Any], flip: bool, figures: dict[str, list[float]]) -> None:
    order = ("after", "before") if flip else ("before", "after")
    for workload in CLOSED:
        for side in order:
            point = wrk(seconds=SECONDS, connections=32, **loads[side][workload])
            if point["errors"]:
                raise SystemExit(f"{side} {workload}: {point['errors']} failed requests")
            figures.setdefault(f"{workload} req/s at 32|{side}", []).append(point["rps"])
    for workload in ("W1", "W2", "W3"):
        for side in order:
            load = loads[side][workload]
            request = {k: v for k, v in load.items() if k not in ("callers", "url")}
            even = paced(load["url"], FIXED_RATE, 6, **request)
            if even.errors:
                raise SystemExit(f"{side} {workload} at {FIXED_RATE} req/s: failed requests")
            ordered = sorted(even.latencies_ms)
            key = f"{workload} p99 ms at {FIXED_RATE} req/s|{side}"
            figures.setdefault(key, []).append(ordered[int(len(ordered) * 0.99)])


def compare(ref: str) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="keyward-compare-"))
    tree = _checkout(ref, workdir)
    database = database_name()
    (workdir / "bao").mkdir()
    raft = start_raft_server(workdir / "bao", audit_log=True)
    servers: list[subprocess.Popen[bytes]] = []
    try:
        env = production_env(fresh_database(database), raft, {})
        creds = seed("benchmarks.seed_tokens", env, workdir)
        loads = {}
        for side, root in (("before", tree), ("after", ROOT)):
            proc, base = _serve(env, root)
            servers.append(proc)
            callers = workdir / f"callers-{side}"
            callers.mkdir()
            loads[side] = keyward_workloads(base, creds, callers)
        figures: dict[str, list[float]] = {}
        for n in range(ROUNDS):
            _round(loads, n % 2 == 1, figures)
    finally:
        for proc in servers:
            proc.terminate()
            proc.wait(timeout=20)
        raft.stop()
        drop_database(database)
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=False)
        shutil.rmtree(workdir, ignore_errors=True)
    return _summary(ref, figures)


def _summary(ref: str, figures: dict[str, list[float]]) -> dict[str, Any]:
    rows = {}
    for key in sorted({k.split("|")[0] for k in figures}):
        before = statistics.median(figures[f"{key}|before"])
        after = statistics.median(figures[f"{key}|after"])
        rows[key] = {
            "before": round(before, 1),
            "after": round(after, 1),
            "after_to_before": round(after / before, 3),
            "runs_before": [round(v, 1) for v in figures[f"{key}|before"]],
            "runs_after": [round(v, 1) for v in figures[f"{key}|after"]],
        }
    return {"workload": "compare", "ref": ref, "rounds": ROUNDS, "rows": rows}
