"""W4, the proxy: `POST /api/v1/proxy/openai/chat/completions` through Keyward to a local
fake provider (benchmarks/fake_provider.py), plain and streamed, with same-run baselines:
the fake provider called directly, and LiteLLM's proxy in front of the same fake provider.

Keyward runs as in production (KEYWARD_PRODUCTION=true, granian ASGI with one worker per
core, PostgreSQL as the application role, the Vault store on a raft + file-audit OpenBao,
Redis rate counters), twice at once: with KEYWARD_PROXY_DB_POOL_SIZE=0 the proxy's checks
and its audit event run in Django's one sync thread per worker (the "thread path", the
design before); with the default pool they run on native async I/O (the "async path").

Figures: req/s and p50/p95/p99 at 1 connection (a small asyncio client, one keep-alive
connection, one request after another: wrk with one connection shows delayed-ACK stalls)
and at 32 (wrk); the latency the proxy adds at 1 connection (proxied minus direct, paired
by round); time to first byte of a stream; 500 concurrent 10 s streams held through the
async path (errors, peak RSS per granian worker, per-chunk delay = arrival time minus the
provider's send time, which is the event-loop lag on the way).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import requests

from benchmarks.common import ROOT, latency_summary, median, seed
from benchmarks.paced import _read_response, _request
from benchmarks.w123_tokens import production_env, wrk
from tests.bao import free_port, start_raft_server

MODEL = "gpt-4o-mini"
PLAIN_BODY = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "Say hi."}]})
STREAM_BODY = json.dumps(
    {"model": MODEL, "messages": [{"role": "user", "content": "Say hi."}], "stream": True}
)
JSON = {"Content-Type": "application/json"}
DIRECT_KEY = "sk-direct-" + "x" * 32  # the fake provider wants `Bearer sk-...`
STREAMS, STREAM_CHUNKS, STREAM_SECONDS = 500, 21, 10.0
TOKEN_TTL = 3600
LITELLM_VENV = ROOT / "var" / "litellm-venv"
SENT_AT = re.compile(rb'"sent_at": ([0-9.]+)')
TARGETS = {"added_p50_ms": 2.0, "added_p99_ms": 10.0, "rps_to_litellm": 2.0, "rss_mb": 300.0}


def log(message: str) -> None:
    print(f"W4: {message}", file=sys.stderr, flush=True)


# -- processes -------------------------------------------------------------------------------
def _spawn(
    command: list[str], env: dict[str, str], logfile: Path, cwd: Path = ROOT
) -> subprocess.Popen[bytes]:
    """A server in a session of its own, so that it and its workers are stopped together."""
    with logfile.open("wb") as out:
        return subprocess.Popen(
            command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=20)
    # Workers left behind: the session this harness started for the server, and only it.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _wait_ready(url: str, proc: subprocess.Popen[bytes], logfile: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.25)
    _stop(proc)
    tail = logfile.read_text(errors="replace")[-3000:] if logfile.exists() else ""
    raise RuntimeError(f"{url} did not answer 200 within {timeout:.0f} s:\n{tail}")


def _granian(app: str, port: int, workers: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "granian",
        "--interface",
        "asgi",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--no-ws",
        "--backlog",
        "2048",
        app,
    ]


def worker_pids(parent: int) -> list[int]:
    """The granian worker processes (multiprocessing children running `spawn_main`)."""
    pids = []
    for task in Path(f"/proc/{parent}/task").iterdir():
        for child in (task / "children").read_text().split():
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            if b"resource_tracker" not in cmdline:
                pids.append(int(child))
    return sorted(pids)


def memory_mb(pid: int, field_name: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


# -- the services ----------------------------------------------------------------------------
@dataclass
class Target:
    """One way to reach the fake provider: a URL with its headers."""

    url: str
    headers: dict[str, str]
    stream_headers: dict[str, str] = field(default_factory=dict)


def start_fake_provider(workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYWARD_")}
    logfile = workdir / "fake-provider.log"
    proc = _spawn(_granian("benchmarks.fake_provider:app", port, 1), env, logfile)
    deadline = time.monotonic() + 30
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    while time.monotonic() < deadline:
        try:
            answer = requests.post(url, data=PLAIN_BODY, headers=_bearer(DIRECT_KEY), timeout=2)
            if answer.status_code == 200:
                return proc, port
        except requests.RequestException:
            time.sleep(0.2)
    _stop(proc)
    raise RuntimeError("the fake provider did not start: " + logfile.read_text()[-2000:])


def start_bare_proxy(
    fake_port: int, workdir: Path, workers: int
) -> tuple[subprocess.Popen[bytes], int]:
    """The bare pass-through (benchmarks/bare_proxy.py) in front of the fake provider."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYWARD_")}
    env["BARE_UPSTREAM"] = f"http://127.0.0.1:{fake_port}"
    logfile = workdir / "bare-proxy.log"
    proc = _spawn(_granian("benchmarks.bare_proxy:app", port, workers), env, logfile)
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(requests.RequestException):
            answer = requests.post(url, data=PLAIN_BODY, headers=_bearer(DIRECT_KEY), timeout=2)
            if answer.status_code == 200:
                return proc, port
        time.sleep(0.2)
    _stop(proc)
    raise RuntimeError("the bare pass-through did not start: " + logfile.read_text()[-2000:])


def _bearer(credential: str) -> dict[str, str]:
    return {**JSON, "Authorization": f"Bearer {credential}"}


def start_keyward(
    env: dict[str, str], workdir: Path, name: str, workers: int
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    logfile = workdir / f"keyward-{name}.log"
    proc = _spawn(_granian("settings.asgi:application", port, workers), env, logfile)
    base = f"http://127.0.0.1:{port}"
    _wait_ready(f"{base}/healthz", proc, logfile, 90)
    return proc, base


def issue_token(base: str, seeded: dict[str, str]) -> str:
    """A `kwt_` token with the `proxy` scope, issued as a service principal would."""
    answer = requests.post(
        f"{base}/api/v1/tokens",
        json={
            "tenant": seeded["tenant"],
            "provider": "openai",
            "scopes": ["proxy"],
            "ttl_seconds": TOKEN_TTL,
        },
        headers={"Authorization": f"Bearer {seeded['principal_secret']}"},
        timeout=30,
    )
    answer.raise_for_status()
    token: str = answer.json()["token"]
    return token


# -- LiteLLM ---------------------------------------------------------------------------------
def ensure_litellm() -> str | None:
    """LiteLLM's proxy in a virtualenv of its own (var/litellm-venv, created when missing);
    None when it is there, else why it is unavailable."""
    binary = LITELLM_VENV / "bin" / "litellm"
    if binary.exists():
        return None
    log(f"creating {LITELLM_VENV.relative_to(ROOT)} and installing litellm[proxy] into it")
    try:
        subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True, timeout=300)
        subprocess.run(
            [str(LITELLM_VENV / "bin" / "pip"), "install", "--quiet", "litellm[proxy]"],
            check=True,
            timeout=1200,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
    except (subprocess.SubprocessError, OSError) as exc:
        return f"litellm[proxy] could not be installed: {exc}"
    return None if binary.exists() else "litellm[proxy] installed no `litellm` command"


def litellm_version() -> str:
    out = subprocess.run(
        [
            str(LITELLM_VENV / "bin" / "python"),
            "-c",
            "import importlib.metadata as m; print(m.version('litellm'))",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    return out.stdout.strip() or "?"


def start_litellm(
    provider_port: int, workdir: Path, procs: list[subprocess.Popen[bytes]]
) -> tuple[Target, str]:
    """LiteLLM's proxy as benchmarks.md sets it up: the master key from the environment,
    the local cost map, no telemetry, no spend logs, two workers, one model whose api_base
    is the fake provider."""
    master_key = "sk-" + secrets.token_urlsafe(32)
    config = workdir / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        f"  - model_name: {MODEL}\n"
        "    litellm_params:\n"
        f"      model: openai/{MODEL}\n"
        f"      api_base: http://127.0.0.1:{provider_port}/v1\n"
        "      api_key: sk-litellm-upstream-key\n"
        "general_settings:\n"
        "  master_key: os.environ/LITELLM_MASTER_KEY\n"
        "  disable_spend_logs: true\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEYWARD_", "VIRTUAL_ENV"))}
    env.update(
        LITELLM_MASTER_KEY=master_key,
        LITELLM_LOCAL_MODEL_COST_MAP="True",
        LITELLM_TELEMETRY="False",
        LITELLM_LOG="ERROR",
        PYTHONUNBUFFERED="1",
        PATH=f"{LITELLM_VENV / 'bin'}:{env.get('PATH', '')}",
    )
    port = free_port()
    command = [str(LITELLM_VENV / "bin" / "litellm"), "--config", str(config)]
    command += ["--host", "127.0.0.1", "--port", str(port), "--num_workers", "2"]
    # uvicorn kills a worker not serving within 5 s of its start; importing LiteLLM takes
    # longer on this box, which would restart the workers for ever.
    command += ["--telemetry", "False", "--timeout_worker_healthcheck", "120"]
    logfile = workdir / "litellm.log"
    # Not from the repository: uvicorn puts its working directory first on sys.path, where
    # Keyward's own packages (settings, api, core, ...) would shadow LiteLLM's imports.
    proc = _spawn(command, env, logfile, cwd=workdir)
    procs.append(proc)
    base = f"http://127.0.0.1:{port}"
    _wait_ready(f"{base}/health/liveliness", proc, logfile, 240)
    return Target(f"{base}/v1/chat/completions", _bearer(master_key)), litellm_version()


# -- clients ---------------------------------------------------------------------------------
async def _sequential(target: Target, seconds: float) -> dict[str, Any]:
    """One keep-alive connection, one request after another, for `seconds`."""
    host, port, raw = _request(target.url, "POST", PLAIN_BODY, target.headers)
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_connection(host, port)
    latencies: list[float] = []
    errors = 0
    started = loop.time()
    while loop.time() - started < seconds:
        sent = loop.time()
        writer.write(raw)
        try:
            status = await asyncio.wait_for(_read_response(reader), 10)
        except (OSError, asyncio.IncompleteReadError, ValueError, TimeoutError):
            errors += 1
            writer.close()
            reader, writer = await asyncio.open_connection(host, port)
            continue
        latencies.append((loop.time() - sent) * 1000)
        errors += not 200 <= status < 300
    elapsed = loop.time() - started
    writer.close()
    return {
        "rps": len(latencies) / elapsed,
        **{k: v for k, v in latency_summary(latencies).items() if k != "max_ms"},
        "errors": errors,
        "requests": len(latencies),
    }


@dataclass
class Stream:
    status: int = 0
    ttfb_ms: float = float("nan")
    delays_ms: list[float] = field(default_factory=list)
    sent_at: list[float] = field(default_factory=list)
    opened_at: float = float("nan")
    chunks: int = 0
    done: bool = False
    error: str = ""
    refusal: str = ""  # X-Keyward-Refusal of a refused call


async def _body_pieces(reader: asyncio.StreamReader, fields: dict[str, str]) -> Any:
    if fields.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            piece = await reader.readexactly(size + 2)
            if size == 0:
                return
            yield piece[:-2]
    elif "content-length" in fields:
        yield await reader.readexactly(int(fields["content-length"]))
    else:
        while piece := await reader.read(65536):
            yield piece


async def stream_once(target: Target, opened: list[int] | None = None) -> Stream:
    """One streamed request on a connection of its own: status, time to the first `data:`
    line, and for every chunk that carries `sent_at` its delay (arrival minus send time)."""
    host, port, raw = _request(target.url, "POST", STREAM_BODY, target.stream_headers)
    loop = asyncio.get_running_loop()
    result = Stream()
    reader, writer = await asyncio.open_connection(host, port)
    try:
        started = loop.time()
        writer.write(raw)
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        result.status = int(head[0].split(" ", 2)[1])
        fields = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in head[1:])}
        result.refusal = fields.get("x-keyward-refusal", "")
        result.opened_at = time.time()
        if opened is not None:
            opened[0] += 1
            opened[1] = max(opened[1], opened[0])
        buffer = b""
        async for piece in _body_pieces(reader, fields):
            arrived, now = time.time(), loop.time()
            *lines, buffer = (buffer + piece).split(b"\n")
            for line in lines:
                if not line.startswith(b"data:"):
                    continue
                if result.chunks == 0 and not result.done:
                    result.ttfb_ms = (now - started) * 1000
                if line[5:].strip() == b"[DONE]":
                    result.done = True
                    continue
                result.chunks += 1
                if sent := SENT_AT.search(line):
                    result.sent_at.append(float(sent.group(1)))
                    result.delays_ms.append((arrived - result.sent_at[-1]) * 1000)
    except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
        result.error = type(exc).__name__
    finally:
        if opened is not None and result.status:
            opened[0] -= 1
        writer.close()
    return result


def _kinds(failed: list[Stream]) -> dict[str, int]:
    kinds: dict[str, int] = {}
    for s in failed:
        kind = s.error or f"status {s.status}" + (f" {s.refusal}" if s.refusal else "")
        kinds[kind] = kinds.get(kind, 0) + 1
    return kinds


def _stream_failed(stream: Stream, chunks: int) -> bool:
    return bool(stream.error) or stream.status != 200 or not stream.done or stream.chunks < chunks


async def _ttfb(target: Target, count: int) -> dict[str, Any]:
    streams = [await stream_once(target) for _ in range(count)]
    ttfb = [s.ttfb_ms for s in streams if not _stream_failed(s, 1)]
    return {
        **{k: v for k, v in latency_summary(ttfb).items() if k != "max_ms"},
        "streams": count,
        "errors": sum(_stream_failed(s, 1) for s in streams),
    }


async def _sample_rss(pids: list[int], peaks: dict[int, float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        for pid in pids:
            peaks[pid] = max(peaks.get(pid, 0.0), memory_mb(pid, "VmRSS"))
        await asyncio.sleep(0.25)


async def _held(target: Target, count: int, pids: list[int]) -> dict[str, Any]:
    """`count` streams of STREAM_SECONDS at once (started over one second), the workers'
    RSS sampled every 250 ms meanwhile."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    opened = [0, 0]
    peaks: dict[int, float] = {}
    stop = asyncio.Event()
    sampler = asyncio.create_task(_sample_rss(pids, peaks, stop))

    async def one(i: int) -> Stream:
        await asyncio.sleep(i / count)
        try:
            return await asyncio.wait_for(stream_once(target, opened), STREAM_SECONDS + 60)
        except TimeoutError:
            return Stream(error="timeout")

    started = time.monotonic()
    streams = await asyncio.gather(*(one(i) for i in range(count)))
    elapsed = time.monotonic() - started
    stop.set()
    await sampler
    delays = [d for s in streams for d in s.delays_ms]
    # Steady state: chunks sent once every stream was open (no checks of new calls running).
    all_open = max((s.opened_at for s in streams), default=0.0)
    steady = [
        d for s in streams for d, t in zip(s.delays_ms, s.sent_at, strict=True) if t > all_open
    ]
    failed = [s for s in streams if _stream_failed(s, STREAM_CHUNKS)]
    return {
        "streams": count,
        "chunks_per_stream": STREAM_CHUNKS,
        "seconds_per_stream": STREAM_SECONDS,
        "max_open_at_once": opened[1],
        "errors": len(failed),
        "error_kinds": _kinds(failed),
        "wall_seconds": round(elapsed, 2),
        "chunk_delay_ms": latency_summary(delays),
        "chunks_timed": len(delays),
        "chunk_delay_once_all_open_ms": latency_summary(steady),
        "chunks_once_all_open": len(steady),
        "worker_peak_rss_mb": {str(p): round(v, 1) for p, v in peaks.items()},
        "worker_vmhwm_mb": {str(p): round(memory_mb(p, "VmHWM"), 1) for p in pids},
    }


# -- the measurement -------------------------------------------------------------------------
def _aggregate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    mid = sorted(samples, key=lambda r: r["rps"])[len(samples) // 2]
    return {
        "rps": round(median([r["rps"] for r in samples]), 1),
        **{k: round(mid[k], 3) for k in ("p50_ms", "p95_ms", "p99_ms")},
        "errors": sum(r["errors"] for r in samples),
        "runs": len(samples),
    }


def _rounds(targets: dict[str, Target], runs: int, seconds: float) -> dict[str, Any]:
    """Every target in turn, round after round, so that drift on this noisy box hits them
    alike; 1 connection from the asyncio client, 32 from wrk."""
    samples: dict[str, dict[str, list[dict[str, Any]]]] = {
        name: {"1": [], "32": []} for name in targets
    }
    for round_no in range(runs):
        for name, target in targets.items():
            log(f"round {round_no + 1}/{runs}: {name}")
            samples[name]["1"].append(asyncio.run(_sequential(target, seconds)))
            body, headers = PLAIN_BODY, target.headers
            samples[name]["32"].append(wrk(target.url, 32, seconds, "POST", body, headers))
    points = {
        name: {conns: _aggregate(runs_) for conns, runs_ in by_conns.items()}
        for name, by_conns in samples.items()
    }
    points["_samples"] = samples
    return points


def _added(samples: dict[str, Any], name: str) -> dict[str, float]:
    """Proxied minus direct at one connection, paired by round, the median of the rounds."""
    pairs = list(zip(samples[name]["1"], samples["direct"]["1"], strict=True))
    return {
        f"added_{p}_ms": round(median([a[f"{p}_ms"] - d[f"{p}_ms"] for a, d in pairs]), 3)
        for p in ("p50", "p99")
    }


async def _floor(bao: Any, database_url: str, seconds: float) -> dict[str, Any]:
    """What the dependencies of every proxied call cost at one connection, on the same
    servers: a KV v2 read from the production-shaped OpenBao (the key is read on every
    call) and a PostgreSQL round trip as the application role. The added latency of the
    proxy cannot be below their sum."""
    bao.client().secrets.kv.v2.create_or_update_secret(
        path="bench/floor", secret={"api_key": DIRECT_KEY}, mount_point=bao.kv_mount
    )
    url = f"/v1/{bao.kv_mount}/data/bench/floor?version=1"
    vault: list[float] = []
    async with aiohttp.ClientSession(base_url=bao.addr) as session:
        for timing in (False, True):  # a warm-up pass, then the measured one
            until = time.monotonic() + (seconds if timing else 0.5)
            while time.monotonic() < until:
                started = time.perf_counter()
                async with session.get(url, headers={"X-Vault-Token": bao.token}) as got:
                    await got.read()
                if timing:
                    vault.append((time.perf_counter() - started) * 1000)
    database: list[float] = []
    conn = await psycopg.AsyncConnection.connect(
        database_url.replace("postgres://", "postgresql://")
    )
    async with conn:
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            started = time.perf_counter()
            await (await conn.execute("SELECT 1")).fetchall()
            database.append((time.perf_counter() - started) * 1000)
    return {"vault_kv_read": latency_summary(vault), "postgresql_select": latency_summary(database)}


def _warm(targets: dict[str, Target]) -> int:
    """A few requests to each target (pools, imports, caches); their errors count."""
    errors = 0
    for target in targets.values():
        for _ in range(20):
            answer = requests.post(target.url, data=PLAIN_BODY, headers=target.headers, timeout=30)
            errors += not answer.ok
    return errors


def run(
    base_env: dict[str, str], *, quick: bool, workers: int, service_env: dict[str, str]
) -> dict[str, Any]:
    runs, seconds, ttfb_count = (1, 2.0, 20) if quick else (3, 5.0, 100)
    workdir = Path(tempfile.mkdtemp(prefix="keyward-bench-w4-"))
    procs: list[subprocess.Popen[bytes]] = []
    bao = start_raft_server(workdir, audit_log=True)
    background = ThreadPoolExecutor(max_workers=1)
    try:
        fake, fake_port = start_fake_provider(workdir)
        procs.append(fake)
        bare, bare_port = start_bare_proxy(fake_port, workdir, workers)
        procs.append(bare)
        # LiteLLM takes about a minute to start here: meanwhile Keyward is set up.
        litellm_unavailable = ensure_litellm()
        if litellm_unavailable is None:
            litellm_started = background.submit(start_litellm, fake_port, workdir, procs)
        overrides = {
            "KEYWARD_REDIS_URL": "redis://127.0.0.1:6379/12",
            "KEYWARD_BROKER_URL": "redis://127.0.0.1:6379/13",
            "KEYWARD_PROVIDER_BASE_URLS": json.dumps(
                {"openai": f"http://127.0.0.1:{fake_port}/v1"}
            ),
            "KEYWARD_PROVIDER_URL_POLICY": "open",
            "KEYWARD_RATE_LIMIT": "100000000/minute",
            "KEYWARD_TOKEN_MAX_TTL": str(TOKEN_TTL),
            **service_env,
        }
        env = production_env(base_env, bao, overrides)
        seeded = seed("benchmarks.w4_seed", env, workdir)
        keyward = {}
        for name, pool in (("thread", "0"), ("async", env.get("KEYWARD_PROXY_DB_POOL_SIZE"))):
            instance_env = {**env, "KEYWARD_PROXY_DB_POOL_SIZE": pool} if pool else env
            proc, base = start_keyward(instance_env, workdir, name, workers)
            procs.append(proc)
            keyward[name] = (proc, base)
        token = issue_token(keyward["async"][1], seeded)
        direct = Target(f"http://127.0.0.1:{fake_port}/v1/chat/completions", _bearer(DIRECT_KEY))
        bare_url = f"http://127.0.0.1:{bare_port}/v1/chat/completions"
        targets = {"direct": direct, "bare_passthrough": Target(bare_url, _bearer(DIRECT_KEY))}
        for name, (_, base) in keyward.items():
            url = f"{base}/api/v1/proxy/openai/chat/completions"
            targets[f"keyward_{name}"] = Target(url, _bearer(token))
        litellm_info: dict[str, Any] = {"available": litellm_unavailable is None}
        if litellm_unavailable is None:
            try:
                targets["litellm"], litellm_info["version"] = litellm_started.result()
            except RuntimeError as exc:
                litellm_unavailable = f"LiteLLM did not start: {str(exc)[-600:]}"
        if litellm_unavailable is not None:
            log(litellm_unavailable)
            litellm_info.update(available=False, reason=litellm_unavailable)
        shape = {"x-fake-stream": f"{STREAM_CHUNKS},{STREAM_SECONDS}"}
        for target in targets.values():
            target.stream_headers = {**target.headers}
        warm_errors = _warm(targets)
        log("time to first byte of a stream")
        ttfb = {name: asyncio.run(_ttfb(t, ttfb_count)) for name, t in targets.items()}
        held: dict[str, Any] = {}
        async_proc = keyward["async"][0]
        for name in ("direct", "keyward_async"):
            log(f"{STREAMS} streams of {STREAM_SECONDS:.0f} s held: {name}")
            target = targets[name]
            target.stream_headers = {**target.headers, **shape}
            pids = worker_pids(async_proc.pid) if name == "keyward_async" else []
            held[name] = asyncio.run(_held(target, STREAMS, pids))
        points = _rounds(targets, runs, seconds)
        floor = asyncio.run(_floor(bao, env["KEYWARD_DATABASE_URL"], seconds))
        final_hwm = {str(p): round(memory_mb(p, "VmHWM"), 1) for p in worker_pids(async_proc.pid)}
    finally:
        background.shutdown(wait=False, cancel_futures=True)
        for proc in reversed(procs):
            _stop(proc)
        bao.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    samples = points.pop("_samples")
    extras = {
        "warm_errors": warm_errors,
        "final_hwm": final_hwm,
        "litellm": litellm_info,
        "floor": floor,
    }
    return _summary(points, samples, ttfb, held, extras, workers, seconds, service_env)


def _summary(
    points: dict[str, Any],
    samples: dict[str, Any],
    ttfb: dict[str, Any],
    held: dict[str, Any],
    extras: dict[str, Any],
    workers: int,
    seconds: float,
    service_env: dict[str, str],
) -> dict[str, Any]:
    added = {name: _added(samples, name) for name in points if name != "direct"}

    def rps32(name: str) -> float:
        return float(points[name]["32"]["rps"])

    ratios: dict[str, float | None] = {
        "async_to_thread_rps_at_32": round(rps32("keyward_async") / rps32("keyward_thread"), 3),
        "async_to_direct_rps_at_32": round(rps32("keyward_async") / rps32("direct"), 3),
        "async_to_litellm_rps_at_32": (
            round(rps32("keyward_async") / rps32("litellm"), 3) if "litellm" in points else None
        ),
    }
    stream = held["keyward_async"]
    peak_rss = max(stream["worker_peak_rss_mb"].values(), default=float("nan"))
    to_litellm = ratios["async_to_litellm_rps_at_32"]
    targets = {
        "added_p50_at_1<2ms": added["keyward_async"]["added_p50_ms"] < TARGETS["added_p50_ms"],
        "added_p99_at_1<10ms": added["keyward_async"]["added_p99_ms"] < TARGETS["added_p99_ms"],
        "rps_at_32>=2x_litellm": to_litellm is not None and to_litellm >= TARGETS["rps_to_litellm"],
        f"{STREAMS}_streams_no_errors": stream["errors"] == 0
        and stream["max_open_at_once"] == STREAMS,
        f"{STREAMS}_streams_rss_per_worker<300MB": peak_rss < TARGETS["rss_mb"],
    }
    errors = extras["warm_errors"] + sum(p["errors"] for by in points.values() for p in by.values())
    errors += sum(t["errors"] for t in ttfb.values()) + sum(h["errors"] for h in held.values())
    return {
        "workload": "W4",
        "server": {"granian_workers": workers, "interface": "asgi"},
        "service_env": {
            k: ("(set)" if any(w in k for w in ("KEY", "TOKEN", "SECRET", "PEPPER")) else v)
            for k, v in sorted(service_env.items())
        },
        "clients": {"1": "asyncio, one keep-alive connection, sequential", "32": "wrk"},
        "seconds_per_run": seconds,
        "litellm": extras["litellm"],
        "results": points,
        "added_latency_at_1": added,
        "floor_at_1": extras["floor"],
        "ttfb": ttfb,
        "streams_held": held,
        "worker_vmhwm_mb_at_end": extras["final_hwm"],
        "stream_peak_rss_mb_per_worker": round(peak_rss, 1),
        "ratios": ratios,
        "targets_met": targets,
        "warmup_errors": extras["warm_errors"],
        "errors": errors,
    }
