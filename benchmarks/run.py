"""Run the benchmarks: `scripts/bench [W5 ...]`. Prints a table and writes
benchmarks/results/latest.json (figures, baselines, ratios, machine, versions, date)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from typing import Any

from benchmarks.common import (
    ROOT,
    database_name,
    drop_database,
    fresh_database,
    machine,
    now_iso,
    versions,
)

WORKLOADS = {
    "W5": "benchmarks.w5_audit_append",
    "W1-W3": "benchmarks.w123_tokens",
    "W6": "benchmarks.w6_audit_bulk",
    "W7": "benchmarks.w7_audit_tree",
    "W4": "benchmarks.w4_proxy",
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


def _print_points(label: str, results: dict[str, dict[str, dict[str, Any]]]) -> None:
    """req/s and latency per workload (or path) and number of connections."""
    columns = ("conns", "req/s", "p50 ms", "p95 ms", "p99 ms", "errors")
    print(f"{label:<18} " + " ".join(f"{c:>8}" for c in columns))
    for name, points in results.items():
        for conns, p in points.items():
            print(
                f"{name:<18} {conns:>8} {p['rps']:>8.1f} {p['p50_ms']:>8.2f} {p['p95_ms']:>8.2f}"
                f" {p['p99_ms']:>8.2f} {p['errors']:>8}"
            )


def _print_tokens(result: dict[str, Any]) -> None:
    print("W1 token issue, W2 exchange, W3 introspect")
    print("baselines: the same server's /healthz, OpenBao token create and KV read")
    _print_points("workload", result["results"])
    rate = result["fixed_rate"]["W1"]["offered_rps"]
    print(f"latency at an offered {rate} req/s, worst-case shape (open-loop paced client; hey)")
    for name, p in result["fixed_rate"].items():
        print(
            f"{name:<18} achieved {p['achieved_rps']:>7.1f} req/s  p50 {p['p50_ms']:.2f}"
            f"  p95 {p['p95_ms']:.2f}  p99 {p['p99_ms']:.2f} ms  errors {p['errors']}"
            f"  (hey: p50 {p['hey']['p50_ms']:.2f}  p99 {p['hey']['p99_ms']:.2f} ms)"
        )
    timing = result["refusal_timing"]
    print(f"refusal timing, {timing['rounds']} pairs each (known id + wrong secret : unknown id)")
    for kind in ("token", "principal"):
        t = timing[kind]
        print(
            f"{kind:<18} wrong secret p50 {t['wrong_secret']['p50_ms']:.3f} ms,"
            f" unknown id p50 {t['unknown_id']['p50_ms']:.3f} ms, ratio {t['wrong_to_unknown']}"
        )
    for name, value in result["ratios"].items():
        print(f"ratio {name}: {value}")
    for name, met in result["targets_met"].items():
        print(f"target {name}: {'met' if met else 'MISSED'}")


def _print_w4(result: dict[str, Any]) -> None:
    print("W4 proxy: POST /api/v1/proxy/openai/chat/completions to a local fake provider")
    print(
        "baselines: the fake provider called directly; LiteLLM's proxy in front of it"
        f" ({_litellm_label(result['litellm'])})"
    )
    print("1 connection: asyncio client (one keep-alive connection); 32 connections: wrk")
    _print_points("path", result["results"])
    for name, added in result["added_latency_at_1"].items():
        print(
            f"added at 1 connection, {name:<15} p50 {added['added_p50_ms']:.3f} ms"
            f"  p99 {added['added_p99_ms']:.3f} ms"
        )
    for name, floor in result["floor_at_1"].items():
        print(
            f"floor at 1 connection, {name:<18} p50 {floor['p50_ms']:.3f} ms"
            f"  p99 {floor['p99_ms']:.3f} ms (paid on every proxied call)"
        )
    print("time to first byte of a stream (sequential streams)")
    for name, t in result["ttfb"].items():
        print(
            f"{name:<18} p50 {t['p50_ms']:.2f}  p95 {t['p95_ms']:.2f}  p99 {t['p99_ms']:.2f} ms"
            f"  ({t['streams']} streams, errors {t['errors']})"
        )
    for name, h in result["streams_held"].items():
        d = h["chunk_delay_ms"]
        print(
            f"{h['streams']} streams of {h['seconds_per_stream']:.0f} s, {name}: open at once"
            f" {h['max_open_at_once']}, errors {h['errors']} {h['error_kinds'] or ''},"
            f" per-chunk delay p50 {d['p50_ms']:.2f}"
            f"  p99 {d['p99_ms']:.2f}  max {d['max_ms']:.2f} ms ({h['chunks_timed']} chunks)"
        )
        s = h["chunk_delay_once_all_open_ms"]
        print(
            f"{'':<18} once all {h['streams']} were open: per-chunk delay p50 {s['p50_ms']:.2f}"
            f"  p99 {s['p99_ms']:.2f}  max {s['max_ms']:.2f} ms"
            f" ({h['chunks_once_all_open']} chunks)"
        )
        if h["worker_peak_rss_mb"]:
            print(
                f"{'':<18} peak RSS per worker while held (MB): {h['worker_peak_rss_mb']};"
                f" VmHWM: {h['worker_vmhwm_mb']}"
            )
    for name, value in result["ratios"].items():
        print(f"ratio {name}: {value}")
    for name, met in result["targets_met"].items():
        print(f"target {name}: {'met' if met else 'MISSED'}")


def _litellm_label(info: dict[str, Any]) -> str:
    if info.get("available"):
        return f"LiteLLM {info.get('version', '?')}, 2 workers"
    return f"LiteLLM unavailable: {info.get('reason', '?')}"


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


def _service_env(pairs: list[str]) -> dict[str, str]:
    env = dict(pair.split("=", 1) for pair in pairs)
    wrong = [name for name in env if not name.startswith("KEYWARD_")]
    if wrong:
        raise SystemExit(f"--service-env takes KEYWARD_ variables only: {', '.join(wrong)}")
    return env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("workloads", nargs="*", default=sorted(WORKLOADS))
    parser.add_argument("--quick", action="store_true", help="fewer events, one run (smoke)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="granian workers")
    parser.add_argument(
        "--threads", type=int, default=4, help="granian blocking threads per worker"
    )
    parser.add_argument(
        "--service-env",
        action="append",
        default=[],
        metavar="KEYWARD_X=VALUE",
        help="configuration for the service under test (repeatable); the harness passes on "
        "none of its own KEYWARD_ variables",
    )
    parser.add_argument(
        "--compare",
        metavar="REF",
        help="paired before/after of W1-W3: the code at git REF against the working tree",
    )
    args = parser.parse_args()
    service_env = _service_env(args.service_env)
    if args.compare:
        _compare(args.compare)
        return
    out = ROOT / "benchmarks" / "results" / "latest.json"
    report: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {"workloads": {}}
    report.update(date=now_iso(), machine=machine(), versions=versions())
    measured: set[str] = set()
    for name in args.workloads:
        if name in ("W1", "W2", "W3") and measured & {"W1", "W2", "W3"}:
            continue  # one harness run measures W1, W2 and W3 together
        database = database_name()
        env = fresh_database(database, service_env)
        try:
            _measure(name, env, args, service_env, report)
        finally:
            drop_database(database)
        measured.add(name)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written: {out.relative_to(ROOT)}")
    failed = [n for n in measured if report["workloads"].get(n, {}).get("errors")]
    if failed:
        raise SystemExit(f"errors (non-2xx or failed requests) in {', '.join(sorted(failed))}")


def _compare(ref: str) -> None:
    from benchmarks import compare  # loads the service's settings, as W1-W3 do

    result = compare.compare(ref)
    print(f"before: {ref}; after: the working tree; medians of {result['rounds']} rounds")
    print(f"{'figure':<28} {'before':>9} {'after':>9} {'after/before':>13}")
    for name, row in result["rows"].items():
        print(
            f"{name:<28} {row['before']:>9.1f} {row['after']:>9.1f} {row['after_to_before']:>13.3f}"
        )
    out = ROOT / "benchmarks" / "results" / "compare.json"
    out.write_text(json.dumps({**result, "date": now_iso(), "machine": machine()}, indent=2) + "\n")
    print(f"written: {out.relative_to(ROOT)}")


def _measure(
    name: str,
    env: dict[str, str],
    args: argparse.Namespace,
    service_env: dict[str, str],
    report: dict[str, Any],
) -> None:
    if name in ("W6", "W7"):
        extra = ["--events", "20000"] if args.quick else []
        report["workloads"][name] = _run_workload(name, env, extra)
        print(json.dumps(report["workloads"][name], indent=2))
        return
    if name == "W5":
        extra = ["--events", "50", "--runs", "1"] if args.quick else []
        report["workloads"][name] = _run_workload(name, env, extra)
        _print_w5(report["workloads"][name])
        return
    if name == "W4":
        # Imported only when W4 runs: through w123_tokens it loads the service's settings.
        from benchmarks import w4_proxy

        report["workloads"][name] = w4_proxy.run(
            env, quick=args.quick, workers=args.workers, service_env=service_env
        )
        _print_w4(report["workloads"][name])
        return
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
        service_env=service_env,
    )
    _print_tokens(report["workloads"][name])


if __name__ == "__main__":
    main()
