"""W6: verify and export 1,000,000 audit events.

Loads N integrated events (MACs, chain links, Merkle leaves and subtrees) over M tenant
chains with COPY, then measures: `verify_all()`
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

from audit import tree  # noqa: E402
from audit.chain import GENESIS, MAC_FIELDS, canonical_bytes, chain_hash, event_mac  # noqa: E402
from audit.hmac import event_mac_key  # noqa: E402
from audit.merkle import Frontier, leaf_hash  # noqa: E402
from audit.offline import verify_file  # noqa: E402
from audit.verify import verify_all  # noqa: E402
from benchmarks.common import ROOT  # noqa: E402

EVENT_COLUMNS = (*MAC_FIELDS, "mac")
LINK_COLUMNS = ("event_id", "chain", "seq", "prev_hash", "hash", "leaf_hash", "integrated_at")
NODE_COLUMNS = ("chain", "level", "position", "hash")
CHUNK = 50_000


def _copy(table: str, columns: tuple[str, ...], rows: list[list[Any]]) -> None:
    with (
        connection.cursor() as cursor,
        cursor.connection.cursor().copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy,
    ):
        for row in rows:
            copy.write_row(row)


def load(events: int, tenants: int) -> float:
    """`events` integrated events over `tenants` chains, as the sequencer would have left
    them (MACs, links, leaf hashes, stored subtrees), written with COPY in chunks."""
    started = time.perf_counter()
    key = event_mac_key()
    heads: dict[str, tuple[int, str]] = {f"tenant:bench-{t}": (0, GENESIS) for t in range(tenants)}
    trees = {chain: Frontier() for chain in heads}
    base = datetime(2026, 1, 1, tzinfo=UTC)
    for first in range(0, events, CHUNK):
        rows: dict[str, list[list[Any]]] = {"event": [], "link": [], "node": []}
        for n in range(first, min(first + CHUNK, events)):
            tenant = f"bench-{n % tenants}"
            chain = f"tenant:{tenant}"
            event = {
                "id": str(uuid.uuid4()),
                "chain": chain,
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
            event["mac"] = event_mac(key, event)
            seq, prev = heads[chain]
            leaf = leaf_hash(canonical_bytes({**event, "seq": seq + 1}))
            heads[chain] = (seq + 1, chain_hash(prev, leaf))
            rows["event"].append(
                [json.dumps(event[c]) if c == "details" else event[c] for c in EVENT_COLUMNS]
            )
            rows["link"].append(
                [event["id"], chain, seq + 1, prev, heads[chain][1], leaf.hex(), base]
            )
            rows["node"] += [
                [chain, level, position, digest.hex()]
                for level, position, digest in trees[chain].append(leaf)
                if level % tree.STRIDE == 0
            ]
        _copy("audit_event", EVENT_COLUMNS, rows["event"])
        _copy("audit_link", LINK_COLUMNS, rows["link"])
        _copy("audit_tree_node", NODE_COLUMNS, rows["node"])
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
                "COPY (SELECT * FROM audit_event ORDER BY chain, occurred_at) TO STDOUT"
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
