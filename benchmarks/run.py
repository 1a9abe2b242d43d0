"""Run the benchmarks: `scripts/bench [W5 ...]`. Prints a table and writes
benchmarks/results/latest.json (figures, baselines, ratios, machine, versions, date)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from typing import Any

from benchmarks.common import ROOT, fresh_database, machine, now_iso, versions

WORKLOADS = {
    "W5": "benchmarks.w5_audit_append",
    "W1-W3": "benchmarks.w123_tokens",
    "W6": "benchmarks.w6_audit_bulk",
}


def _run_workload(name: str, env: dict[str, str], extra: list[str]) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", WORKLOADS[name], *extra],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=1800,
    )
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"{name} failed")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _print_tokens(result: dict[str, Any]) -> None:
    print("W1 token issue, W2 exchange, W3 introspect")
    print("baselines: the same server's /healthz, OpenBao token create and KV read")
    columns = ("conns", "req/s", "p50 ms", "p95 ms", "p99 ms", "errors")
    print(f"{'workload':<18} " + " ".join(f"{c:>8}" for c in columns))
    for name, points in result["results"].items():
        for conns, p in points.items():
            print(
                f"{name:<18} {conns:>5} {p['rps']:>9.1f} {p['p50_ms']:>8.2f} {p['p95_ms']:>8.2f}"
                f" {p['p99_ms']:>8.2f} {p['errors']:>6}"
            )
    for name, value in result["ratios"].items():
        print(f"ratio {name}: {value}")
    for name, met in result["targets_met"].items():
        print(f"target {name}: {'met' if met else 'MISSED'}")


def _print_w5(result: dict[str, Any]) -> None:
    print("W5 audit append (one event per transaction; baseline: plain INSERT, same threads)")
    print(
        f"{'writers':>7} {'events/s':>10} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}"
        f" {'plain/s':>10} {'ratio':>6} {'backlog':>8} {'delay p50/p99/max ms':>22}"
    )
    for row in result["rows"]:
        a, p = row["audit"], row["plain"]
        cells = [
            f"{row['writers']:>7}",
            f"{a['events_per_s']:>10.1f}",
            f"{a['p50_ms']:>8.2f}",
            f"{a['p95_ms']:>8.2f}",
            f"{a['p99_ms']:>8.2f}",
            f"{p['events_per_s']:>10.1f}",
            f"{row['ratio_audit_to_plain']:>6.2f}",
            f"{a.get('backlog_when_writers_stopped', 0):>8}",
            "{:>22}".format(
                "/".join(
                    f"{a.get('integration_delay_ms', {}).get(k, 0):.0f}"
                    for k in ("p50_ms", "p99_ms", "max_ms")
                )
            ),
        ]
        print(" ".join(cells))
    print(
        f"chains verified afterwards: {result['chains_verified']} "
        f"({result['events_verified']} events)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("workloads", nargs="*", default=sorted(WORKLOADS))
    parser.add_argument("--quick", action="store_true", help="fewer events, one run (smoke)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="granian workers")
    parser.add_argument(
        "--threads", type=int, default=4, help="granian blocking threads per worker"
    )
    args = parser.parse_args()
    out = ROOT / "benchmarks" / "results" / "latest.json"
    report: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {"workloads": {}}
    report.update(date=now_iso(), machine=machine(), versions=versions())
    measured: set[str] = set()
    for name in args.workloads:
        if name in ("W1", "W2", "W3") and measured & {"W1", "W2", "W3"}:
            continue  # one harness run measures W1, W2 and W3 together
        env = fresh_database()
        if name == "W6":
            extra = ["--events", "20000"] if args.quick else []
            report["workloads"][name] = _run_workload(name, env, extra)
            print(json.dumps(report["workloads"][name], indent=2))
            continue
        if name == "W5":
            extra = ["--events", "50", "--runs", "1"] if args.quick else []
            report["workloads"][name] = _run_workload(name, env, extra)
            _print_w5(report["workloads"][name])
            continue
        measured.add(name)
        # Imported only when W1-W3 run: it needs the service's settings loaded.
        from benchmarks import w123_tokens

        runs, seconds, connections = (1, 2.0, [1, 32]) if args.quick else (3, 5.0, [1, 8, 32])
        report["workloads"][name] = w123_tokens.run(
            env,
            runs=runs,
            seconds=seconds,
            connections=connections,
            workers=args.workers,
            threads=args.threads,
        )
        _print_tokens(report["workloads"][name])
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written: {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
