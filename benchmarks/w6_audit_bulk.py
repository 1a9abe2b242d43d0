"""W6: verify and export 1,000,000 audit events.

Loads N hash-chained events over M tenant chains with COPY, then measures: `verify_all()`
(events/s), the `audit_export` command in a child process (events/s and its peak RSS), and
offline verification of the file. Baseline in the same run: PostgreSQL's own COPY of the
table to /dev/null (the ceiling for reading the rows). Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings.settings")
django.setup()

from django.db import connection  # noqa: E402

from audit.chain import GENESIS, canonical_bytes, link_hash  # noqa: E402
from audit.offline import verify_file  # noqa: E402
from audit.verify import verify_all  # noqa: E402
from auditor.export import COLUMNS  # noqa: E402
from benchmarks.common import ROOT  # noqa: E402


def load(events: int, tenants: int) -> float:
    started = time.perf_counter()
    heads: dict[str, tuple[int, Any]] = {f"bench-{t}": (0, GENESIS) for t in range(tenants)}
    base = datetime(2026, 1, 1, tzinfo=UTC)
    with (
        connection.cursor() as cursor,
        cursor.connection.cursor().copy(
            f"COPY audit_event ({', '.join(COLUMNS)}) FROM STDIN"
        ) as copy,
    ):
        for n in range(events):
            tenant = f"bench-{n % tenants}"
            seq, prev = heads[tenant]
            event = {
                "id": str(uuid.uuid4()),
                "chain": f"tenant:{tenant}",
                "seq": seq + 1,
                "occurred_at": base + timedelta(microseconds=n),
                "actor_type": "principal",
                "actor_id": "bench",
                "action": "credential.released",
                "tenant": tenant,
                "target": f"key:{n % 97}",
                "outcome": "success",
                "request_id": uuid.uuid4().hex,
                "source_ip": "10.0.0.1",
                "details": {"key_version": 1, "provider": "openai"},
            }
            event["hash"] = link_hash(prev, canonical_bytes(event))
            event["prev_hash"] = prev
            heads[tenant] = (seq + 1, event["hash"])
            copy.write_row([event[c] if c != "details" else json.dumps(event[c]) for c in COLUMNS])
    connection.commit() if not connection.get_autocommit() else None
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--tenants", type=int, default=10)
    args = parser.parse_args()
    load_seconds = load(args.events, args.tenants)
    started = time.perf_counter()
    results = verify_all()
    verify_seconds = time.perf_counter() - started
    if not all(r.ok for r in results):
        raise SystemExit(f"chains broken: {[r.first_bad for r in results if not r.ok]}")
    checked = sum(r.events_checked for r in results)
    with tempfile.TemporaryDirectory() as scratch:
        out, key = Path(scratch) / "export.jsonl", Path(scratch) / "key.pem"
        started = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "manage.py",
                "audit_export",
                "--output",
                str(out),
                "--public-key-out",
                str(key),
            ],
            cwd=ROOT,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        export_seconds = time.perf_counter() - started
        peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        size = out.stat().st_size
        started = time.perf_counter()
        offline = verify_file(out, key.read_bytes())
        offline_seconds = time.perf_counter() - started
        if not offline.ok:
            raise SystemExit(f"offline verification failed: {offline.problems}")
        started = time.perf_counter()
        with (
            connection.cursor() as cursor,
            cursor.connection.cursor().copy(
                "COPY (SELECT * FROM audit_event ORDER BY chain, seq) TO STDOUT"
            ) as copy,
        ):
            for _ in copy:
                pass
        copy_seconds = time.perf_counter() - started
    exported = offline.events
    print(
        json.dumps(
            {
                "workload": "W6",
                "events": args.events,
                "chains": args.tenants,
                "load_seconds": round(load_seconds, 1),
                "verify_events_per_s": round(checked / verify_seconds),
                "export_events_per_s": round(exported / export_seconds),
                "export_peak_rss_mb": round(peak_kb / 1024, 1),
                "export_file_mb": round(size / 2**20, 1),
                "offline_verify_events_per_s": round(exported / offline_seconds),
                "baseline_pg_copy_events_per_s": round(exported / copy_seconds),
                "targets_met": {
                    "verify>=100000/s": checked / verify_seconds >= 100_000,
                    "export_peak_rss<150MB": peak_kb / 1024 < 150,
                },
            }
        )
    )


if __name__ == "__main__":
    main()
