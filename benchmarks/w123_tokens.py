"""W1 (token issue), W2 (exchange), W3 (introspect), with same-run baselines: the same
server's /healthz, and OpenBao's token creation and KV v2 read with a file audit device.

The service runs as in production: KEYWARD_PRODUCTION=true, granian WSGI with one worker
per core, PostgreSQL as the application role, the Vault store on a real OpenBao, Redis for
rate-limit counters. wrk, on the same two cores, drives each point for a bounded time.
"""

from __future__ import annotations

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

from benchmarks.common import ROOT, latency_summary, median
from tests.bao import BaoServer, free_port, start_dev_server

LUA = ROOT / "benchmarks" / "wrk" / "request.lua"


def _production_env(base: dict[str, str], bao: BaoServer) -> dict[str, str]:
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
) -> dict[str, Any]:
    env = {
        **os.environ,
        "WRK_METHOD": method,
        "WRK_BODY": body,
        "WRK_HEADERS": "\n".join(f"{k}: {v}" for k, v in (headers or {}).items()),
    }
    threads = min(connections, 2)
    out = subprocess.run(
        [
            "wrk",
            "-t",
            str(threads),
            "-c",
            str(connections),
            "-d",
            f"{max(1, round(seconds))}s",
            "--timeout",
            "5s",
            "-s",
            str(LUA),
            url,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    )
    line = [x for x in out.stdout.splitlines() if x.startswith("{")][-1]
    raw = json.loads(line)
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


def run(
    base_env: dict[str, str],
    *,
    runs: int,
    seconds: float,
    connections: list[int],
    workers: int,
    threads: int,
) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="keyward-bench-"))
    bao = start_dev_server(workdir)
    env = _production_env(base_env, bao)
    seed_file = workdir / "credentials.json"
    subprocess.run(
        [sys.executable, "-m", "benchmarks.seed_tokens", str(seed_file)],
        cwd=ROOT,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    creds = json.loads(seed_file.read_text())
    port = free_port()
    server = _start_server(env, port, workers, threads)
    base = f"http://127.0.0.1:{port}"
    kv_path = "secret/data/bench-baseline"
    requests.post(
        f"{bao.addr}/v1/{kv_path}",
        json={"data": {"api_key": "sk-baseline"}},
        headers={"X-Vault-Token": bao.token},
        timeout=5,
    ).raise_for_status()
    json_headers = {"Content-Type": "application/json"}
    workloads: dict[str, dict[str, Any]] = {
        "W1": {
            "url": f"{base}/api/v1/tokens",
            "method": "POST",
            "body": json.dumps(
                {"tenant": "bench", "provider": "openai", "scopes": ["release"], "ttl_seconds": 300}
            ),
            "headers": {**json_headers, "Authorization": f"Bearer {creds['principal_secret']}"},
        },
        "W2": {
            "url": f"{base}/api/v1/exchange",
            "method": "POST",
            "headers": {"Authorization": f"Bearer {creds['token']}"},
        },
        "W3": {
            "url": f"{base}/api/v1/tokens/introspect",
            "method": "POST",
            "body": json.dumps({"token": creds["token"]}),
            "headers": {**json_headers, "Authorization": f"Bearer {creds['principal_secret']}"},
        },
        "healthz": {"url": f"{base}/healthz"},
        "bao_token_create": {
            "url": f"{bao.addr}/v1/auth/token/create",
            "method": "POST",
            "body": json.dumps({"ttl": "5m", "policies": ["default"], "no_parent": True}),
            "headers": {"X-Vault-Token": bao.token},
        },
        "bao_kv_read": {"url": f"{bao.addr}/v1/{kv_path}", "headers": {"X-Vault-Token": bao.token}},
    }
    results: dict[str, Any] = {}
    try:
        for name, request in workloads.items():
            results[name] = {
                str(c): _point(runs, seconds, connections=c, **request) for c in connections
            }
    finally:
        server.terminate()
        server.wait(timeout=20)
        bao.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    top = str(max(connections))
    ratios = {
        "W1_to_bao_token_create": round(
            results["W1"][top]["rps"] / results["bao_token_create"][top]["rps"], 3
        ),
        "W2_to_bao_kv_read": round(
            results["W2"][top]["rps"] / results["bao_kv_read"][top]["rps"], 3
        ),
        "W1_to_healthz": round(results["W1"][top]["rps"] / results["healthz"][top]["rps"], 3),
        "W2_to_healthz": round(results["W2"][top]["rps"] / results["healthz"][top]["rps"], 3),
        "W3_to_healthz": round(results["W3"][top]["rps"] / results["healthz"][top]["rps"], 3),
    }
    targets = {
        f"W1_rps_at_{top}>=800": results["W1"][top]["rps"] >= 800,
        f"W2_rps_at_{top}>=800": results["W2"][top]["rps"] >= 800,
        f"W1_p99_at_{top}<25ms": results["W1"][top]["p99_ms"] < 25,
        f"W2_p99_at_{top}<25ms": results["W2"][top]["p99_ms"] < 25,
        "W1>=0.5*bao_token_create": ratios["W1_to_bao_token_create"] >= 0.5,
    }
    return {
        "workload": "W1-W3",
        "server": {"granian_workers": workers, "blocking_threads": threads},
        "seconds_per_run": seconds,
        "results": results,
        "ratios": ratios,
        "targets_met": targets,
        "latency_note": latency_summary.__doc__ or "",
    }
