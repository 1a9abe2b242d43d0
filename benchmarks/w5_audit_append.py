"""W5: audit append from concurrent writers.

N threads, each with its own database connection, call `audit.recorder.record` over M
tenants, one event per transaction (as every audited action commits its own), while
`manage.py audit_sequencer` integrates them in a process of its own, as in production.
Reported besides throughput: the integration delay (link written minus event written),
the backlog when the writers stop, and that every chain verifies. Baseline in
the same process: the same threads inserting a row of the same shape into an unchained,
unlocked table that is logged like the audit table (so each commit flushes WAL too), one
row per transaction. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings.settings")
django.setup()

from django.db import connection  # noqa: E402

from audit.actors import Actor  # noqa: E402
from audit.models import AuditLink, AuditPending  # noqa: E402
from audit.recorder import record  # noqa: E402
from audit.sequencer import integrate_all  # noqa: E402
from audit.verify import integration, verify_all  # noqa: E402
from benchmarks.common import latency_summary, median  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DETAILS = {"label": "prod", "provider": "openai", "key": "hmac-sha256:" + "ab" * 32}


def _audited(tenant: str, idx: int, n: int) -> None:
    record(
        "bench.append",
        actor=Actor("principal", f"writer-{idx}"),
        tenant=tenant,
        target=f"key:{n}",
        details=DETAILS,
    )


def _plain(tenant: str, idx: int, n: int) -> None:
    # One statement in autocommit, as `record` writes an event outside a transaction.
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO bench_plain (tenant, actor, target, details) VALUES (%s, %s, %s, %s)",
            [tenant, f"writer-{idx}", f"key:{n}", json.dumps(DETAILS)],
        )


def _run(kind: str, writers: int, tenants: list[str], per_writer: int) -> dict[str, Any]:
    latencies: list[list[float]] = [[] for _ in range(writers)]
    barrier = threading.Barrier(writers + 1)
    write = _audited if kind == "audit" else _plain

    def worker(idx: int) -> None:
        barrier.wait()
        for n in range(per_writer):
            start = time.perf_counter()
            write(tenants[(idx + n) % len(tenants)], idx, n)
            latencies[idx].append((time.perf_counter() - start) * 1000)
        connection.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(writers)]
    for thread in threads:
        thread.start()
    barrier.wait()
    since = time.time()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    samples = [ms for per in latencies for ms in per]
    result: dict[str, Any] = {"events_per_s": len(samples) / elapsed, **latency_summary(samples)}
    if kind == "audit":
        result["backlog_when_writers_stopped"] = AuditPending.objects.count()
        _drain()
        result["drained_after_s"] = round(time.perf_counter() - started - elapsed, 3)
        result["integration_delay_ms"] = _delays(since)
    return result


def _drain(timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while AuditPending.objects.exists() and time.monotonic() < deadline:
        time.sleep(0.02)


def _start_sequencer() -> subprocess.Popen[bytes]:
    """`manage.py audit_sequencer` in its own process, running before the first event."""
    integrate_all()
    sequencer = subprocess.Popen(
        [sys.executable, "manage.py", "audit_sequencer"], cwd=ROOT, env=os.environ.copy()
    )
    record("bench.ready", actor=Actor.system("bench"))
    _drain()
    return sequencer


def _delays(since: float) -> dict[str, float]:
    from datetime import UTC, datetime

    rows = AuditLink.objects.filter(
        event__occurred_at__gte=datetime.fromtimestamp(since, UTC)
    ).values_list("integrated_at", "event__occurred_at")
    return latency_summary([(done - written).total_seconds() * 1000 for done, written in rows])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--writers", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--tenants", type=int, default=4)
    parser.add_argument("--events", type=int, default=400, help="events per writer per run")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    tenants = [f"bench-{i}" for i in range(args.tenants)]
    sequencer = _start_sequencer()
    rows = []
    for writers in args.writers:
        runs = {
            kind: [_run(kind, writers, tenants, args.events) for _ in range(args.runs)]
            for kind in ("audit", "plain")
        }
        row: dict[str, Any] = {"writers": writers, "tenants": args.tenants}
        for kind, results in runs.items():
            best = sorted(results, key=lambda r: r["events_per_s"])[len(results) // 2]
            row[kind] = {
                **best,
                "events_per_s": round(median([r["events_per_s"] for r in results]), 1),
            }
        row["ratio_audit_to_plain"] = round(
            row["audit"]["events_per_s"] / row["plain"]["events_per_s"], 3
        )
        rows.append(row)
    sequencer.send_signal(signal.SIGTERM)
    sequencer.wait(timeout=30)
    integrate_all()
    chains = verify_all()
    print(
        json.dumps(
            {
                "workload": "W5",
                "rows": rows,
                "chains_verified": all(c.ok for c in chains) and integration().ok,
                "events_verified": sum(c.events_checked for c in chains),
            }
        )
    )


if __name__ == "__main__":
    main()
