"""Run the benchmarks: `scripts/bench [W5 ...]`. Prints a table and writes
benchmarks/results/latest.json (figures, baselines, ratios, machine, versions, date)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from typing import Any

from benchmarks.common import ROOT, fresh_database, machine, now_iso, versions

WORKLOADS = {"W5": "benchmarks.w5_audit_append"}


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


def _print_w5(result: dict[str, Any]) -> None:
    print("W5 audit append (one event per transaction; baseline: plain INSERT, same threads)")
    print(
        f"{'writers':>7} {'events/s':>10} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}"
        f" {'plain/s':>10} {'ratio':>6}"
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
    args = parser.parse_args()
    extra = ["--events", "50", "--runs", "1"] if args.quick else []
    report: dict[str, Any] = {
        "date": now_iso(),
        "machine": machine(),
        "versions": versions(),
        "workloads": {},
    }
    for name in args.workloads:
        env = fresh_database()
        report["workloads"][name] = _run_workload(name, env, extra)
        if name == "W5":
            _print_w5(report["workloads"][name])
    out = ROOT / "benchmarks" / "results" / "latest.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written: {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
