"""Offline verification of an audit export: needs only the file and the public key.

    python -m audit.offline EXPORT.jsonl --public-key audit-signing.pem [--previous OLD.jsonl]
        [--log-key VKEY] [--witness VKEY ... --quorum K]

Checks every line's hash and its link to the line before it in the same chain, the line
count and digest against the signed manifest (so deleted, inserted, reordered or truncated
lines fail), the Ed25519 signature, and that every exported event is in its chain's signed
checkpoint: the checkpoint opens with the log's key, and the tree of the exported events
(the complete subtrees left of them, then their leaves) is consistent with it. Given an
earlier export, it proves this one's trees consistent with the earlier one's (their runs
must meet or overlap). Names the first bad line or chain. No Django, no database.
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

from audit import merkle, note
from audit.chain import canonical_bytes, chain_hash

FORMAT = "keyward-audit-export/2"
FORMATS = ("keyward-audit-export/1", FORMAT)  # /1: before checkpoints and proofs


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
    # Per chain, once proven: the tree root at its last exported event, and the frontier
    # left of its first.
    roots: dict[str, bytes] = field(default_factory=dict)
    lefts: dict[str, merkle.Frontier] = field(default_factory=dict)

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
    if "region" in event:  # exports since regions were added: null for global events
        event["region"] = event["region"] or None
    return event


def unneutral(cell: str) -> str:
    """Undo the export's spreadsheet-formula guard (a leading apostrophe)."""
    return cell[1:] if cell.startswith("'") else cell


@dataclass(frozen=True)
class Trust:
    """What the checkpoints must be signed by: the log's key (default: the one the signed
    manifest names), and k of these witnesses."""

    log_key: str | None = None
    witnesses: tuple[str, ...] = ()
    quorum: int = 0

    def asked(self) -> bool:
        """Whether anything beyond the manifest's signature is required."""
        return self.log_key is not None or bool(self.witnesses) or self.quorum > 0


def verify_file(
    path: Path, public_pem: bytes, previous: Path | None = None, trust: Trust = Trust()
) -> Report:
    """Verify a JSON Lines or CSV export, line by line (memory does not grow with its size)."""
    report = Report()
    earlier = verify_file(previous, public_pem, trust=trust) if previous is not None else None
    if earlier is not None and not earlier.ok:
        return report.fail(f"the earlier export does not verify: {earlier.problems[0]}")
    meets = {
        c: v["last_seq"] for c, v in (earlier.manifest if earlier else {}).get("chains", {}).items()
    }
    runs: dict[str, merkle.Frontier] = {}
    at_meeting: dict[str, merkle.Frontier] = {}  # each run where the earlier export ended
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
            "not an audit event"
            if not isinstance(event, dict)
            else _line_problem(event, chains, runs)
        )
        if problem:
            return report.fail(f"line {number}: {problem}")
        run = runs[event["chain"]]
        if meets.get(event["chain"]) == run.size:
            at_meeting[event["chain"]] = run.copy()
        digest.update(canonical(event) + b"\n")
        report.events += 1
    if trailer is None and count == 0:
        return report.fail("the file is empty")
    try:
        parsed = json.loads(trailer or b"")
        manifest, signature = parsed["manifest"], base64.b64decode(parsed["signature"])
        if not isinstance(manifest, dict):
            raise TypeError("the manifest is not an object")
    except (ValueError, KeyError, TypeError):
        return report.fail(f"line {last}: no manifest (the export is truncated)")
    report.manifest = manifest
    _check_manifest(manifest, chains, digest.hexdigest(), count, report)
    _check_signature(manifest, signature, public_pem, last, report)
    if report.ok and manifest.get("format") == FORMAT:
        _check_proofs(manifest, runs, trust, report)
    elif report.ok and trust.asked():
        report.fail(
            f"the export is in format {manifest.get('format')}, which predates checkpoints: "
            "it cannot show the log key or witness cosignatures asked for"
        )
    if report.ok and earlier is not None:
        _check_extends(earlier, report, at_meeting)
    return report


def _line_problem(
    event: dict[str, Any], chains: dict[str, _Chain], runs: dict[str, merkle.Frontier]
) -> str | None:
    try:
        leaf = merkle.leaf_hash(canonical_bytes(event))
        expected = chain_hash(event["prev_hash"], leaf)
    except (ValueError, KeyError, TypeError):
        return "not an audit event"
    if expected != event["hash"]:
        return f"event {event['id']} does not match its hash (edited)"
    chain = chains.setdefault(event["chain"], _Chain())
    if chain.count and (event["seq"] != chain.last_seq + 1 or event["prev_hash"] != chain.head):
        return f"event {event['id']} does not follow the one before it (moved, removed or inserted)"
    if not chain.count:
        if not isinstance(event["seq"], int) or event["seq"] < 1:
            return "not an audit event"
        chain.first_seq, chain.first_prev_hash = event["seq"], event["prev_hash"]
        runs[event["chain"]] = merkle.Frontier(event["seq"] - 1)
    chain.count, chain.last_seq, chain.head = chain.count + 1, event["seq"], event["hash"]
    runs[event["chain"]].append(leaf)
    return None


def _check_proofs(
    manifest: dict[str, Any], runs: dict[str, merkle.Frontier], trust: Trust, report: Report
) -> None:
    """Every exported chain's run of events is in its signed checkpoint."""
    try:
        log_key = note.Verifier.parse(str(manifest["log_key"]))
        witnesses = [note.Verifier.parse(w) for w in trust.witnesses]
    except (KeyError, TypeError, note.NoteError):
        report.fail("the manifest or the options name no valid log or witness key")
        return
    if any(w.kind != note.COSIGNATURE_V1 for w in witnesses):
        report.fail("a witness key given is not a cosigner key (c2sp.org/tlog-cosignature)")
        return
    if trust.log_key is not None and str(log_key) != trust.log_key:
        report.fail("the checkpoints are signed by another log key than the one given")
        return
    proofs, unproven = manifest.get("proofs"), manifest.get("unproven")
    if not isinstance(proofs, dict) or not isinstance(unproven, dict | None):
        report.fail("the manifest's proofs are malformed")
        return
    for name, run in sorted(runs.items()):
        proof = proofs.get(name)
        if proof is None:
            reason = (unproven or {}).get(name, "none was exported")
            report.fail(f"chain {name}: no signed checkpoint ({reason})")
            return
        problem = _chain_proof_problem(name, run, proof, log_key, witnesses, trust.quorum, report)
        if problem:
            report.fail(f"chain {name}: {problem}")
            return


def _chain_proof_problem(
    name: str,
    run: merkle.Frontier,
    proof: dict[str, Any],
    log_key: note.Verifier,
    witnesses: list[note.Verifier],
    quorum: int,
    report: Report,
) -> str | None:
    try:
        opened = note.open_note(proof["checkpoint"], [log_key])
        checkpoint = note.Checkpoint.parse(opened.text)
        left = merkle.Frontier.from_hashes(run.start, [base64.b64decode(h) for h in proof["left"]])
        onward = [base64.b64decode(h) for h in proof["consistency"]]
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        return f"its checkpoint or proof is malformed or not signed by the log key ({exc})"
    if checkpoint.origin != f"{log_key.name}/{name}":
        return f"its checkpoint is for another log ({checkpoint.origin})"
    cosigners = _cosigners(proof["checkpoint"], witnesses)
    if len(cosigners) < quorum:
        return (
            f"its checkpoint carries {len(cosigners)} of the {quorum} witness cosignatures required"
        )
    root = left.joined(run).root()
    try:
        merkle.verify_consistency(run.size, checkpoint.size, root, checkpoint.root, onward)
    except merkle.ProofError:
        return (
            f"its events do not prove to be in its signed checkpoint of size {checkpoint.size}"
            " (edited, or not the log's)"
        )
    report.roots[name], report.lefts[name] = root, left
    return None


def _cosigners(signed: str, witnesses: list[note.Verifier]) -> tuple[str, ...]:
    try:
        return note.open_note(signed, witnesses).signed_by if witnesses else ()
    except note.NoteError:
        return ()


def _check_manifest(
    manifest: dict[str, Any], chains: dict[str, _Chain], digest: str, count: int, report: Report
) -> None:
    if manifest.get("format") not in FORMATS:
        report.fail("unknown export format")
    if manifest.get("count") != count:
        report.fail(
            f"the manifest counts {manifest.get('count')} events, the file has {count} "
            "(lines removed or added)"
        )
    elif manifest.get("lines_sha256") != digest:
        # What no event hash covers, such as the region each line names, is caught here.
        report.fail("the lines differ from those the manifest digests (edited or reordered)")
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


def _check_extends(earlier: Report, report: Report, at_meeting: dict[str, merkle.Frontier]) -> None:
    """This export extends the earlier one, chain by chain: with checkpoints, its tree at
    the earlier export's last event has the earlier export's (proven) root."""
    for name, old in earlier.manifest["chains"].items():
        new = report.manifest["chains"].get(name)
        if new is None:
            continue
        if new["last_seq"] < old["last_seq"]:
            report.fail(f"chain {name}: this export ends before the earlier one (rolled back?)")
            return
        if name in earlier.roots and name in report.lefts:
            problem = _consistency_problem(
                name, old["last_seq"], earlier.roots[name], report, at_meeting
            )
        else:  # an export before checkpoints: the chain hashes must meet
            continues = (
                new["first_seq"] == old["last_seq"] + 1 and new["first_prev_hash"] == old["head"]
            )
            overlaps = new["first_seq"] <= old["last_seq"] <= new["last_seq"]
            problem = (
                None if continues or overlaps else "this export does not extend the earlier one"
            )
        if problem:
            report.fail(f"chain {name}: {problem}")
            return


def _consistency_problem(
    name: str, size: int, root: bytes, report: Report, at_meeting: dict[str, merkle.Frontier]
) -> str | None:
    left = report.lefts[name]
    if left.size == size:
        here = left.root()
    elif name in at_meeting:
        here = left.joined(at_meeting[name]).root()
    else:
        return (
            f"this export starts after event {size + 1}, where the earlier one ended: "
            "their trees cannot be compared offline (export the range between them)"
        )
    if here != root:
        return f"its tree of {size} events differs from the earlier export's (a fork or rewrite)"
    return None


def add_trust_arguments(parser: Any) -> None:
    parser.add_argument("--log-key", help="the log's checkpoint verifier key, to pin it")
    parser.add_argument("--witness", action="append", default=[], help="a witness's key")
    parser.add_argument(
        "--quorum", type=int, help="witness cosignatures required (default: every --witness)"
    )


def trust_of(args: Any) -> Trust:
    quorum = len(args.witness) if args.quorum is None else args.quorum
    return Trust(args.log_key, tuple(args.witness), quorum)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export", type=Path)
    parser.add_argument("--public-key", type=Path, required=True)
    parser.add_argument("--previous", type=Path)
    add_trust_arguments(parser)
    args = parser.parse_args(argv)
    report = verify_file(args.export, args.public_key.read_bytes(), args.previous, trust_of(args))
    if report.ok:
        proven = f", {len(report.roots)} chains proven in their checkpoints" if report.roots else ""
        print(f"ok: {report.events} events, signature valid{proven}")
        return 0
    print(f"BROKEN: {report.problems[0]}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
