"""Offline verification of an audit export: needs only the file and the public key.

    python -m audit.offline EXPORT.jsonl --public-key audit-signing.pem [--previous OLD.jsonl]

Checks every line's hash and its link to the line before it in the same chain, the line
count and digest against the signed manifest (so deleted, inserted, reordered or truncated
lines fail), the Ed25519 signature, and, given an earlier export, that this one extends it.
Names the first bad line. No Django, no database.
"""

from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from audit.chain import canonical_bytes, link_hash

FORMAT = "keyward-audit-export/1"


def canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode(
        "ascii"
    )


@dataclass
class Report:
    ok: bool = True
    events: int = 0
    problems: list[str] = field(default_factory=list)
    manifest: dict[str, Any] = field(default_factory=dict)

    def fail(self, message: str) -> Report:
        self.ok = False
        self.problems.append(message)
        return self


@dataclass
class _Chain:
    count: int = 0
    first_seq: int = 0
    last_seq: int = 0
    first_prev_hash: str = ""
    head: str = ""


def _jsonl_rows(path: Path) -> Iterator[tuple[int, Any, bytes | None]]:
    """(line number, event or None, trailer bytes): the last line is the trailer."""
    held: tuple[int, bytes] | None = None
    with path.open("rb") as lines:
        for number, raw in enumerate(lines, start=1):
            if held is not None:
                yield held[0], _parse(held[1]), None
            held = (number, raw.rstrip(b"\n"))
    if held is not None:
        yield held[0], None, held[1]


def _parse(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _csv_rows(path: Path) -> Iterator[tuple[int, Any, bytes | None]]:
    """The same for a CSV export: a header row, event rows, a final `#manifest` row."""
    with path.open(newline="", encoding="utf-8") as handle:
        rows = csv.reader(handle)
        header = next(rows)
        for number, cells in enumerate(rows, start=2):
            if cells and cells[0] == "#manifest":
                yield number, None, cells[1].encode() if len(cells) > 1 else b""
                return
            yield number, _from_cells(header, cells), None


def _from_cells(header: list[str], cells: list[str]) -> dict[str, Any] | None:
    if len(cells) != len(header):
        return None
    event: dict[str, Any] = {
        name: unneutral(value) for name, value in zip(header, cells, strict=True)
    }
    try:
        event["seq"] = int(event["seq"])
        event["details"] = json.loads(event["details"])
    except (KeyError, ValueError):
        return None
    event["source_ip"] = event.get("source_ip") or None
    return event


def unneutral(cell: str) -> str:
    """Undo the export's spreadsheet-formula guard (a leading apostrophe)."""
    return cell[1:] if cell.startswith("'") else cell


def verify_file(path: Path, public_pem: bytes, previous: Path | None = None) -> Report:
    """Verify a JSON Lines or CSV export, line by line (memory does not grow with its size)."""
    report = Report()
    chains: dict[str, _Chain] = {}
    digest = hashlib.sha256()
    with path.open("rb") as probe:
        is_csv = probe.readline().startswith(b"id,")
    count, trailer, last = 0, None, 0
    for number, event, raw_trailer in _csv_rows(path) if is_csv else _jsonl_rows(path):
        last = number
        if raw_trailer is not None:
            trailer = raw_trailer
            break
        count += 1
        problem = (
            "not an audit event" if not isinstance(event, dict) else _line_problem(event, chains)
        )
        if problem:
            return report.fail(f"line {number}: {problem}")
        digest.update(canonical(event) + b"\n")
        report.events += 1
    if trailer is None and count == 0:
        return report.fail("the file is empty")
    try:
        parsed = json.loads(trailer or b"")
        manifest, signature = parsed["manifest"], base64.b64decode(parsed["signature"])
    except (ValueError, KeyError, TypeError):
        return report.fail(f"line {last}: no manifest (the export is truncated)")
    report.manifest = manifest
    _check_manifest(manifest, chains, digest.hexdigest(), count, report)
    _check_signature(manifest, signature, public_pem, last, report)
    if report.ok and previous is not None:
        _check_extends(previous, public_pem, manifest, report)
    return report


def _line_problem(event: dict[str, Any], chains: dict[str, _Chain]) -> str | None:
    try:
        expected = link_hash(event["prev_hash"], canonical_bytes(event))
    except (ValueError, KeyError, TypeError):
        return "not an audit event"
    if expected != event["hash"]:
        return f"event {event['id']} does not match its hash (edited)"
    chain = chains.setdefault(event["chain"], _Chain())
    if chain.count and (event["seq"] != chain.last_seq + 1 or event["prev_hash"] != chain.head):
        return f"event {event['id']} does not follow the one before it (moved, removed or inserted)"
    if not chain.count:
        chain.first_seq, chain.first_prev_hash = event["seq"], event["prev_hash"]
    chain.count, chain.last_seq, chain.head = chain.count + 1, event["seq"], event["hash"]
    return None


def _check_manifest(
    manifest: dict[str, Any], chains: dict[str, _Chain], digest: str, count: int, report: Report
) -> None:
    if manifest.get("format") != FORMAT:
        report.fail("unknown export format")
    if manifest.get("count") != count or manifest.get("lines_sha256") != digest:
        report.fail(
            f"the manifest counts {manifest.get('count')} events, the file has {count} "
            "(lines removed or added)"
        )
    found = {name: vars(c) for name, c in chains.items()}
    if manifest.get("chains") != found:
        report.fail("the chains in the file do not match the manifest")


def _check_signature(
    manifest: dict[str, Any], signature: bytes, public_pem: bytes, line: int, report: Report
) -> None:
    public = serialization.load_pem_public_key(public_pem)
    if not isinstance(public, Ed25519PublicKey):
        report.fail("the public key is not an Ed25519 key")
        return
    try:
        public.verify(signature, canonical(manifest))
    except InvalidSignature:
        report.fail(f"line {line}: the manifest signature does not verify with this key")


def _check_extends(
    previous: Path, public_pem: bytes, manifest: dict[str, Any], report: Report
) -> None:
    earlier = verify_file(previous, public_pem)
    if not earlier.ok:
        report.fail(f"the earlier export does not verify: {earlier.problems[0]}")
        return
    for name, old in earlier.manifest["chains"].items():
        new = manifest["chains"].get(name)
        if new is None:
            continue
        continues = (
            new["first_seq"] == old["last_seq"] + 1 and new["first_prev_hash"] == old["head"]
        )
        overlaps = new["first_seq"] <= old["last_seq"] <= new["last_seq"]
        if not (continues or overlaps) or new["last_seq"] < old["last_seq"]:
            report.fail(f"chain {name}: this export does not extend the earlier one")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export", type=Path)
    parser.add_argument("--public-key", type=Path, required=True)
    parser.add_argument("--previous", type=Path)
    args = parser.parse_args(argv)
    report = verify_file(args.export, args.public_key.read_bytes(), args.previous)
    if report.ok:
        print(f"ok: {report.events} events, signature valid")
        return 0
    print(f"BROKEN: {report.problems[0]}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
