"""W7: the Merkle tree of a chain of one million events.

Loads N integrated events into one chain (as W6 does: MACs, links, leaves, stored
subtrees, with COPY), then measures from the stored tree: the tree head, inclusion proofs
of random events and consistency proofs from random sizes (p50/p99 ms over many); the
first checkpoint of the chain (cold: the signer verifies every event before it signs),
and the steady case the scheduled job meets, a checkpoint after M new events recorded and
integrated as in production. Baseline in the same run: one indexed read of one link, the
floor of any proof. Every proof is verified against the signed root. Prints one JSON
document."""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from collections.abc import Callable
from typing import Any

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings.settings")
django.setup()

from audit import merkle, tree  # noqa: E402
from audit.actors import Actor  # noqa: E402
from audit.models import AuditLink  # noqa: E402
from audit.recorder import record  # noqa: E402
from audit.sequencer import integrate_all  # noqa: E402
from auditor.checkpoints import sign_chain  # noqa: E402
from auditor.verification import verify_with_checkpoints  # noqa: E402
from benchmarks.common import latency_summary  # noqa: E402
from benchmarks.w6_audit_bulk import load  # noqa: E402

CHAIN = "tenant:bench-0"


def _timed(action: Callable[[], Any], rounds: int) -> dict[str, float]:
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        action()
        samples.append((time.perf_counter() - started) * 1000)
    return latency_summary(samples)


def _once(action: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    result = action()
    return result, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--proofs", type=int, default=300)
    parser.add_argument("--steady", type=int, default=1000, help="events between checkpoints")
    args = parser.parse_args()
    load_seconds = load(args.events, 1)
    size = args.events
    pick = random.Random(7)
    floor = _timed(
        lambda: (
            AuditLink.objects.filter(chain=CHAIN, seq=pick.randint(1, size))
            .values_list("leaf_hash", flat=True)
            .first()
        ),
        args.proofs,
    )
    head = _timed(lambda: tree.head(CHAIN, size), 50)
    inclusion = _timed(lambda: tree.inclusion(CHAIN, pick.randrange(size), size), args.proofs)
    consistency = _timed(lambda: tree.consistency(CHAIN, pick.randint(1, size), size), args.proofs)
    cold, cold_seconds = _once(lambda: sign_chain(CHAIN))
    for n in range(args.steady):
        record("bench.steady", actor=Actor.system("bench"), tenant="bench-0", details={"n": n})
    integrate_all()
    steady, steady_seconds = _once(lambda: sign_chain(CHAIN))
    root = steady.checkpoint.root
    checked = 0
    for index in (pick.randrange(steady.checkpoint.size) for _ in range(50)):
        leaf = bytes.fromhex(AuditLink.objects.get(chain=CHAIN, seq=index + 1).leaf_hash)
        proof = tree.inclusion(CHAIN, index, steady.checkpoint.size)
        merkle.verify_inclusion(index, steady.checkpoint.size, leaf, proof, root)
        checked += 1
    verified = verify_with_checkpoints()
    print(
        json.dumps(
            {
                "workload": "W7",
                "events": size,
                "load_seconds": round(load_seconds, 1),
                "baseline_one_link_read_ms": floor,
                "tree_head_ms": head,
                "inclusion_proof_ms": inclusion,
                "consistency_proof_ms": consistency,
                "first_checkpoint_seconds": round(cold_seconds, 3),
                "first_checkpoint_size": cold.checkpoint.size,
                "steady_checkpoint_seconds": round(steady_seconds, 3),
                "steady_new_events": args.steady,
                "proofs_verified_against_checkpoint": checked,
                "chains_verified": all(v.result.ok for v in verified),
                "targets_met": {
                    "checkpoint<1s (steady)": steady_seconds < 1,
                    "inclusion_proof_p99<5ms": inclusion["p99_ms"] < 5,
                },
            }
        )
    )


if __name__ == "__main__":
    main()
