"""W1 (token issue), W2 (exchange), W3 (introspect) in two shapes, with same-run baselines:
the same server's /healthz, and OpenBao in dev mode and production-shaped (raft storage and
a file audit device declared in its config), token creation being W1's peer and a KV v2
read W2's.

The service runs as in production: KEYWARD_PRODUCTION=true, granian WSGI with one worker
per core, PostgreSQL as the application role, the Vault store on the production-shaped
OpenBao, Redis for rate-limit counters. wrk, on the same two cores, drives each point for a
bounded time; hey offers a fixed rate for the latency figures.
"""

from __future__ import annotations

import csv
import io
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

from benchmarks import refusal_timing
from benchmarks.common import ROOT, median, percentile, seed
from benchmarks.paced import paced
from tests.bao import BaoServer, free_port, start_dev_server, start_raft_server

LUA = ROOT / "benchmarks" / "wrk" / "request.lua"
FIXED_RATE, FIXED_SECONDS, FIXED_WORKERS = 300, 10, 30
REFUSAL_ROUNDS = {False: 500, True: 3000}  # pairs per credential kind: quick, full
JSON = {"Content-Type": "application/json"}


def production_env(
    base: dict[str, str], bao: BaoServer, overrides: dict[str, str]
) -> dict[str, str]:
    return {
        **base,
        "KEYWARD_PRODUCTION": "true",
        "KEYWARD_SECRET_KEY": secrets.token_urlsafe(64),
        "KEYWARD_PEPPERS": "1:" + secrets.token_urlsafe(48),
        "KEYWARD_AUDIT_HMAC_KEY": secrets.token_urlsafe(48),
        "KEYWARD_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "KEYWARD_SECRET_STORE": "vault",
        "KEYWARD_VAULT_ADDR": bao.addr,
        "KEYWARD_VAULT_TOKEN": bao.token,
        "KEYWARD_REDIS_URL": "redis://127.0.0.1:6379/14",
        "KEYWARD_RATE_LIMIT": "100000000/minute",
        "KEYWARD_LOG_LEVEL": "WARNING",
        **overrides,
    }


def _start_server(
    env: dict[str, str], port: int, workers: int, threads: int
) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-m",
        "granian",
        "--interface",
        "wsgi",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--blocking-threads",
        str(threads),
        "--no-ws",
        "--backlog",
        "2048",
        "settings.wsgi:application",
    ]
    proc = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except requests.ConnectionError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit(
        "the server did not start: " + (proc.stderr.read().decode() if proc.stderr else "")
    )


def wrk(
    url: str,
    connections: int,
    seconds: float,
    method: str = "GET",
    body: str = "",
    headers: dict[str, str] | None = None,
    callers: str = "",
) -> dict[str, Any]:
    """One closed-loop point; `callers` names a file of "credential<TAB>body" lines, one
    taken at random per request."""
    env = {
        **os.environ,
        "WRK_METHOD": method,
        "WRK_BODY": body,
        "WRK_HEADERS": "\n".join(f"{k}: {v}" for k, v in (headers or {}).items()),
        "WRK_REQUESTS_FILE": callers,
    }
    command = ["wrk", "-t", str(min(connections, 2)), "-c", str(connections)]
    command += ["-d", f"{max(1, round(seconds))}s", "--timeout", "5s", "-s", str(LUA), url]
    out = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=seconds + 60, check=True
    )
    raw = json.loads([x for x in out.stdout.splitlines() if x.startswith("{")][-1])
    return {
        "rps": raw["requests"] / (raw["duration_us"] / 1e6),
        "p50_ms": raw["p50_us"] / 1000,
        "p95_ms": raw["p95_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "errors": raw["non_2xx"] + raw["connect_errors"] + raw["read_errors"] + raw["timeouts"],
        "requests": raw["requests"],
    }


def _point(runs: int, seconds: float, **request: Any) -> dict[str, Any]:
    results = [wrk(seconds=seconds, **request) for _ in range(runs)]
    mid = sorted(results, key=lambda r: r["rps"])[len(results) // 2]
    return {
        "rps": round(median([r["rps"] for r in results]), 1),
        "p50_ms": round(mid["p50_ms"], 2),
        "p95_ms": round(mid["p95_ms"], 2),
        "p99_ms": round(mid["p99_ms"], 2),
        "errors": sum(r["errors"] for r in results),
        "runs": runs,
    }


def fixed_rate(
    url: str, method: str = "GET", body: str = "", headers: dict[str, str] | None = None
) -> dict[str, Any]:
    """Latency at an offered FIXED_RATE req/s from the open-loop paced client (the figure
    that counts), and from hey's paced workers for comparison: they tick in step, so hey
    offers bursts of FIXED_WORKERS requests rather than an even rate."""
    even = paced(url, FIXED_RATE, FIXED_SECONDS, method, body, headers)
    return {
        "offered_rps": FIXED_RATE,
        "achieved_rps": round(len(even.latencies_ms) / FIXED_SECONDS, 1),
        "p50_ms": round(percentile(even.latencies_ms, 50), 2),
        "p95_ms": round(percentile(even.latencies_ms, 95), 2),
        "p99_ms": round(percentile(even.latencies_ms, 99), 2),
        "errors": even.errors,
        "hey": _hey(url, method, body, headers),
    }


def _hey(url: str, method: str, body: str, headers: dict[str, str] | None) -> dict[str, Any]:
    command = ["hey", "-z", f"{FIXED_SECONDS}s", "-c", str(FIXED_WORKERS)]
    command += ["-q", str(FIXED_RATE / FIXED_WORKERS), "-m", method, "-o", "csv"]
    for name, value in (headers or {}).items():
        command += ["-H", f"{name}: {value}"]
    if body:
        command += ["-d", body]
    out = subprocess.run(
        [*command, url], capture_output=True, text=True, timeout=FIXED_SECONDS + 60, check=True
    )
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    latencies = [float(r["response-time"]) * 1000 for r in rows]
    return {
        "p50_ms": round(percentile(latencies, 50), 2),
        "p99_ms": round(percentile(latencies, 99), 2),
        "errors": sum(1 for r in rows if not r["status-code"].startswith("2")),
    }


def _callers_file(path: Path, lines: list[tuple[str, str]]) -> str:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.writelines(f"{credential}\t{body}\n" for credential, body in lines)
    return str(path)


def _token_body(tenant: str) -> str:
    return json.dumps(
        {"tenant": tenant, "provider": "openai", "scopes": ["release"], "ttl_seconds": 300}
    )


def keyward_workloads(base: str, creds: dict[str, Any], workdir: Path) -> dict[str, Any]:
    worst, mix = creds["worst"], creds["mix"]

    def principal(body: str) -> dict[str, Any]:
        auth = {"Authorization": f"Bearer {worst['principal_secret']}"}
        return {"method": "POST", "body": body, "headers": {**JSON, **auth}}

    urls = {w: f"{base}/api/v1/{p}" for w, p in (("W1", "tokens"), ("W2", "exchange"))}
    urls["W3"] = f"{base}/api/v1/tokens/introspect"
    mix_lines = {
        "W1": [(c["principal_secret"], _token_body(c["tenant"])) for c in mix],
        "W2": [(c["token"], "") for c in mix],
        "W3": [(c["principal_secret"], json.dumps({"token": c["token"]})) for c in mix],
    }
    shapes: dict[str, Any] = {
        "W1": {"url": urls["W1"], **principal(_token_body(worst["tenant"]))},
        "W2": {
            "url": urls["W2"],
            "method": "POST",
            "headers": {"Authorization": f"Bearer {worst['token']}"},
        },
        "W3": {"url": urls["W3"], **principal(json.dumps({"token": worst["token"]}))},
    }
    for name, lines in mix_lines.items():
        callers = _callers_file(workdir / f"{name}-callers.tsv", lines)
        shapes[f"{name}_mix"] = {"url": urls[name], "method": "POST", "callers": callers}
    return shapes


def _bao_workloads(name: str, bao: BaoServer) -> dict[str, Any]:
    kv_path = "secret/data/bench-baseline"
    requests.post(
        f"{bao.addr}/v1/{kv_path}",
        json={"data": {"api_key": "sk-baseline"}},
        headers={"X-Vault-Token": bao.token},
        timeout=5,
    ).raise_for_status()
    auth = {"X-Vault-Token": bao.token}
    return {
        f"{name}_token_create": {
            "url": f"{bao.addr}/v1/auth/token/create",
            "method": "POST",
            "body": json.dumps({"ttl": "5m", "policies": ["default"], "no_parent": True}),
            "headers": auth,
        },
        f"{name}_kv_read": {"url": f"{bao.addr}/v1/{kv_path}", "headers": auth},
    }


def _points(
    workloads: dict[str, Any], runs: int, seconds: float, connections: list[int]
) -> dict[str, Any]:
    return {
        name: {str(c): _point(runs, seconds, connections=c, **request) for c in connections}
        for name, request in workloads.items()
    }


def run(
    base_env: dict[str, str],
    *,
    runs: int,
    seconds: float,
    connections: list[int],
    workers: int,
    threads: int,
    service_env: dict[str, str],
) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="keyward-bench-"))
    (workdir / "dev").mkdir()
    (workdir / "raft").mkdir()
    dev = start_dev_server(workdir / "dev")
    raft = start_raft_server(workdir / "raft", audit_log=True)
    env = production_env(base_env, raft, service_env)
    server: subprocess.Popen[bytes] | None = None
    try:
        creds = seed("benchmarks.seed_tokens", env, workdir)
        port = free_port()
        server = _start_server(env, port, workers, threads)
        base = f"http://127.0.0.1:{port}"
        ours = keyward_workloads(base, creds, workdir)
        baselines = {
            "healthz": {"url": f"{base}/healthz"},
            **_bao_workloads("bao_dev", dev),
            **_bao_workloads("bao_raft", raft),
        }
        results = _points(ours, runs, seconds, connections)
        refusals = refusal_timing.measure(base, creds["refused"], REFUSAL_ROUNDS[runs > 1])
        # Before the baselines: OpenBao's thousands of raft writes leave compaction behind.
        fixed = {
            name: fixed_rate(**{k: v for k, v in ours[name].items() if k != "callers"})
            for name in ("W1", "W2", "W3")
        }
        results.update(_points(baselines, runs, seconds, connections))
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=20)
        dev.stop()
        raft.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    summary = _summary(results, fixed, connections, workers, threads, seconds, service_env)
    summary["refusal_timing"] = refusals
    summary["errors"] += refusals["errors"]
    summary["targets_met"]["refusal_timing_within_5%"] = all(
        abs(refusals[kind]["wrong_to_unknown"] - 1) <= 0.05 for kind in creds["refused"]
    )
    return summary


def _summary(
    results: dict[str, Any],
    fixed: dict[str, Any],
    connections: list[int],
    workers: int,
    threads: int,
    seconds: float,
    service_env: dict[str, str],
) -> dict[str, Any]:
    top = str(max(connections))

    def rps(name: str) -> float:
        return float(results[name][top]["rps"])

    ratios = {
        "W1_to_bao_raft_token_create": round(rps("W1") / rps("bao_raft_token_create"), 3),
        "W1_to_bao_dev_token_create": round(rps("W1") / rps("bao_dev_token_create"), 3),
        "W2_to_bao_raft_kv_read": round(rps("W2") / rps("bao_raft_kv_read"), 3),
        **{f"{w}_to_healthz": round(rps(w) / rps("healthz"), 3) for w in ("W1", "W2", "W3")},
        **{f"{w}_mix_to_{w}": round(rps(f"{w}_mix") / rps(w), 3) for w in ("W1", "W2", "W3")},
    }
    targets = {
        f"W1_at_{top}>=1.0x_bao_raft_token_create": ratios["W1_to_bao_raft_token_create"] >= 1.0,
        f"W1_at_{top}>=800": rps("W1") >= 800,
        f"W2_at_{top}>=800": rps("W2") >= 800,
        f"W3_at_{top}>=2000": rps("W3") >= 2000,
        f"W1_p99_at_{FIXED_RATE}rps<25ms": fixed["W1"]["p99_ms"] < 25,
        f"W2_p99_at_{FIXED_RATE}rps<25ms": fixed["W2"]["p99_ms"] < 25,
    }
    errors = sum(p["errors"] for points in results.values() for p in points.values())
    errors += sum(f["errors"] + f["hey"]["errors"] for f in fixed.values())
    return {
        "workload": "W1-W3",
        "server": {"granian_workers": workers, "blocking_threads": threads},
        "service_env": {
            k: ("(set)" if any(w in k for w in ("KEY", "TOKEN", "SECRET", "PEPPER")) else v)
            for k, v in sorted(service_env.items())
        },
        "seconds_per_run": seconds,
        "results": results,
        "fixed_rate": fixed,
        "ratios": ratios,
        "targets_met": targets,
        "errors": errors,
    }
