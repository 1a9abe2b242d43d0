"""Signed exports and their offline verification (security.md rules 11 and 12)."""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.utils import timezone

from audit import note
from audit.actors import Actor
from audit.chain import canonical_bytes, link_hash
from audit.models import AuditEvent
from audit.offline import Trust, canonical, trust_of, verify_file
from audit.recorder import record
from audit.sequencer import integrate_all
from auditor import signing
from auditor.archive import archive
from tenants.actions import do_create_tenant
from tests import bao as servers
from tests.auditor.forge import forged_checkpoint

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["local", "vault"])
def signing_store(request, settings):
    if request.param == "vault":
        bao = request.getfixturevalue("bao")
        if "transit/" not in bao.client().sys.list_mounted_secrets_engines()["data"]:
            bao.client().sys.enable_secrets_engine("transit")
        settings.SECRET_STORES = {"default": bao.store_config(path_prefix="export-tests")}
    else:
        settings.SECRET_STORES = {"default": {"backend": "local"}}
    signing.reset()
    yield request.param
    signing.reset()


def _export(actors, tmp_path, who="carol", name="export.jsonl", **params) -> tuple[Path, bytes]:
    integrate_all()  # an export holds the events the sequencer has integrated
    api = actors.as_(who)
    response = api.get("/api/v1/audit/export", params)
    assert response.status_code == 200, response.content if hasattr(response, "content") else ""
    path = tmp_path / name
    path.write_bytes(b"".join(response.streaming_content))
    public = api.get("/api/v1/audit/public-key").json()["public_key_pem"].encode()
    return path, public


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().rstrip(b"\n").split(b"\n")


def _write(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_an_export_verifies_offline_and_is_audited(actors, tmp_path, signing_store):
    path, public = _export(actors, tmp_path)
    report = verify_file(path, public)
    assert report.ok, report.problems
    assert report.events == len(_lines(path)) - 1 > 5
    manifest = report.manifest
    assert manifest["key_fingerprint"] == signing.fingerprint(public)
    assert AuditEvent.objects.filter(action="audit.exported").exists()
    assert set(manifest["chains"]) >= {f"tenant:{actors.tenant_a.slug}", "global"}


@pytest.mark.parametrize(
    "manipulation", ["edit", "reorder", "delete", "insert", "truncate", "resign"]
)
def test_every_manipulation_is_detected_and_the_line_named(
    actors, tmp_path, manipulation, settings
):
    settings.SECRET_STORES = {"default": {"backend": "local"}}
    signing.reset()
    path, public = _export(actors, tmp_path)
    lines = _lines(path)
    middle = len(lines) // 2
    if manipulation == "edit":
        event = json.loads(lines[middle])
        event["target"] = event["target"] + "x"
        lines[middle] = json.dumps(event, sort_keys=True, separators=(",", ":")).encode()
    elif manipulation == "reorder":
        lines[middle], lines[middle + 1] = lines[middle + 1], lines[middle]
    elif manipulation == "delete":
        del lines[middle]
    elif manipulation == "insert":
        lines.insert(middle, lines[middle - 1])
    elif manipulation == "truncate":
        lines = lines[:middle]
    else:  # a manifest re-signed by someone else's key
        trailer = json.loads(lines[-1])
        other = Ed25519PrivateKey.generate()
        trailer["signature"] = (
            __import__("base64")
            .b64encode(
                other.sign(
                    json.dumps(trailer["manifest"], sort_keys=True, separators=(",", ":")).encode()
                )
            )
            .decode()
        )
        lines[-1] = json.dumps(trailer).encode()
    report = verify_file(_write(tmp_path / "bad.jsonl", lines), public)
    assert not report.ok
    message = report.problems[0]
    if manipulation in ("edit", "reorder", "insert", "delete"):
        assert f"line {middle + 1}:" in message or "the manifest" in message, message
    if manipulation == "truncate":
        assert "truncated" in message or "line" in message
    if manipulation == "resign":
        assert "signature" in message


def test_a_wrong_public_key_fails(actors, tmp_path, settings):
    settings.SECRET_STORES = {"default": {"backend": "local"}}
    signing.reset()
    path, _ = _export(actors, tmp_path)
    other = (
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    assert "signature" in verify_file(path, other).problems[0]


def test_a_later_export_extends_an_earlier_one(actors, tmp_path, settings):
    settings.SECRET_STORES = {"default": {"backend": "local"}}
    signing.reset()
    slug = actors.tenant_a.slug
    first, public = _export(actors, tmp_path, name="first.jsonl", tenant=slug)
    record("test.later", actor=Actor.system(), tenant=slug)
    second, _ = _export(actors, tmp_path, name="second.jsonl", tenant=slug)
    assert verify_file(second, public, previous=first).ok
    first_manifest = json.loads(_lines(first)[-1])["manifest"]
    second_manifest = json.loads(_lines(second)[-1])["manifest"]
    assert second_manifest["previous_checkpoint"] is not None
    assert (
        second_manifest["chains"][f"tenant:{slug}"]["count"]
        == first_manifest["chains"][f"tenant:{slug}"]["count"] + 1
    )
    backwards = verify_file(first, public, previous=second)
    assert not backwards.ok and "ends before the earlier one" in backwards.problems[0]


def test_csv_cells_cannot_run_or_forge_lines(actors, tmp_path, settings):
    settings.SECRET_STORES = {"default": {"backend": "local"}}
    signing.reset()
    record(
        "test.csv",
        actor=Actor.system(),
        tenant=actors.tenant_a.slug,
        target='=HYPERLINK("x")',
        details={"label": "+1\r\nforged,row\x1b[31m\u202e"},
    )
    integrate_all()
    response = actors.as_("carol").get(
        "/api/v1/audit/export", {"format": "csv", "tenant": actors.tenant_a.slug}
    )
    assert response.status_code == 200, response.content
    text = b"".join(response.streaming_content).decode()
    assert "'=HYPERLINK" in text
    assert "\r" not in text and "\x1b" not in text and "\u202e" not in text
    rows = text.strip("\n").split("\n")
    assert rows[-1].startswith("#manifest,")
    import csv
    import io

    parsed = list(csv.reader(io.StringIO(text)))
    assert all(len(row) == len(parsed[0]) for row in parsed[1:-1]), "no row was forged"


def test_a_tenant_limited_auditor_exports_only_their_tenant(actors, tmp_path, settings):
    settings.SECRET_STORES = {"default": {"backend": "local"}}
    signing.reset()
    path, public = _export(actors, tmp_path, who="dave")
    report = verify_file(path, public)
    assert report.ok
    assert set(report.manifest["chains"]) == {f"tenant:{actors.tenant_a.slug}"}
    assert actors.as_("alice").get("/api/v1/audit/export").status_code == 403


def test_the_commands_export_and_verify_offline(actors, tmp_path, settings):
    from django.core.management import CommandError, call_command

    settings.SECRET_STORES = {"default": {"backend": "local"}}
    signing.reset()
    out, key = tmp_path / "cmd.jsonl", tmp_path / "key.pem"
    integrate_all()
    call_command(
        "audit_export",
        "--output",
        str(out),
        "--public-key-out",
        str(key),
        stdout=__import__("io").StringIO(),
    )
    call_command(
        "audit_verify_export",
        str(out),
        "--public-key",
        str(key),
        stdout=__import__("io").StringIO(),
    )
    lines = _lines(out)
    del lines[2]
    _write(out, lines)
    with pytest.raises(CommandError) as failure:
        call_command("audit_verify_export", str(out), "--public-key", str(key))
    assert failure.value.returncode == 1 and "line 3" in str(failure.value)
    standalone = subprocess.run(
        [sys.executable, "-m", "audit.offline", str(out), "--public-key", str(key)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert standalone.returncode == 1 and "line 3" in standalone.stderr


def test_a_csv_export_verifies_offline_and_manipulations_are_named(actors, tmp_path, settings):
    settings.SECRET_STORES = {"default": {"backend": "local"}}
    signing.reset()
    record(
        "test.csv",
        actor=Actor.system(),
        tenant=actors.tenant_a.slug,
        target="'=quoted already",
        details={"label": "-1", "note": '@x, "quoted"'},
    )
    integrate_all()
    api = actors.as_("carol")
    response = api.get("/api/v1/audit/export", {"format": "csv"})
    path = tmp_path / "export.csv"
    path.write_bytes(b"".join(response.streaming_content))
    public = api.get("/api/v1/audit/public-key").json()["public_key_pem"].encode()
    report = verify_file(path, public)
    assert report.ok, report.problems
    import csv
    import io

    rows = list(csv.reader(io.StringIO(path.read_text())))
    rows[3][rows[0].index("action")] = "forged.action"
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    edited = tmp_path / "edited.csv"
    edited.write_text(buffer.getvalue())
    assert "line 4:" in verify_file(edited, public).problems[0]


@pytest.mark.postgresql  # the raft OpenBao is sealed mid-test; a worker's store is shared
def test_an_export_the_signer_cannot_finish_says_it_is_incomplete(
    actors, tmp_path, bao_raft, settings
):
    client = bao_raft.client()
    if "transit/" not in client.sys.list_mounted_secrets_engines()["data"]:
        client.sys.enable_secrets_engine("transit")
    settings.SECRET_STORES = {"default": bao_raft.store_config(path_prefix="export-sealed")}
    signing.reset()
    integrate_all()
    servers.seal(bao_raft)
    try:
        response = actors.as_("carol").get("/api/v1/audit/export")
        assert response.status_code == 200
        body = b"".join(response.streaming_content)
    finally:
        servers.unseal(bao_raft)
        signing.reset()
    last = json.loads(body.rstrip(b"\n").split(b"\n")[-1])
    # The chains' checkpoints are signed before the first event is sent: none was.
    assert last["incomplete"] is True and last["events_sent"] == 0
    assert b'"manifest"' not in body
    path = tmp_path / "cut.jsonl"
    path.write_bytes(body)
    public = (
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    assert not verify_file(path, public).ok
    actions = list(
        AuditEvent.objects.filter(action__startswith="audit.export").values_list(
            "action", "outcome"
        )
    )
    assert sorted(actions) == [
        ("audit.export_failed", "error"),
        ("audit.export_started", "success"),
    ]
    assert not AuditEvent.objects.filter(action="audit.exported").exists()


def test_every_exported_event_is_proven_in_its_chains_signed_checkpoint(actors, tmp_path):
    path, public = _export(actors, tmp_path)
    report = verify_file(path, public)
    assert report.ok, report.problems
    manifest = report.manifest
    assert manifest["format"] == "keyward-audit-export/2"
    assert set(report.roots) == set(manifest["chains"]) == set(manifest["proofs"])
    listed = actors.as_("carol").get("/api/v1/audit/checkpoint").json()
    assert manifest["log_key"] == listed["log_key"]
    pinned = verify_file(path, public, trust=Trust(log_key=listed["log_key"]))
    assert pinned.ok
    stranger = note.Verifier.of(
        "x.example/log", Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    )
    assert (
        "another log key"
        in verify_file(path, public, trust=Trust(log_key=str(stranger))).problems[0]
    )


def _resign(
    path: Path, edit: Callable[[dict], None], edit_manifest: Callable[[dict], None] | None = None
) -> None:
    """Edit one event of an export, recompute every chain hash after it and the manifest,
    and sign that with the export key: what someone holding the export key could make."""
    lines = _lines(path)
    events = [json.loads(line) for line in lines[:-1]]
    edit(events[len(events) // 2])
    heads: dict[str, str] = {}
    chains: dict[str, dict] = {}
    digest = hashlib.sha256()
    for event in events:
        if event["chain"] in heads:
            event["prev_hash"] = heads[event["chain"]]
        event["hash"] = link_hash(event["prev_hash"], canonical_bytes(event))
        heads[event["chain"]] = event["hash"]
        chain = chains.setdefault(
            event["chain"],
            {"count": 0, "first_seq": event["seq"], "first_prev_hash": event["prev_hash"]},
        )
        chain["count"] += 1
        chain["last_seq"], chain["head"] = event["seq"], event["hash"]
        digest.update(canonical(event) + b"\n")
    manifest = json.loads(lines[-1])["manifest"]
    manifest["chains"], manifest["lines_sha256"] = chains, digest.hexdigest()
    if edit_manifest is not None:
        edit_manifest(manifest)
    signature = base64.b64encode(signing.signer().sign(canonical(manifest))).decode()
    trailer = canonical({"manifest": manifest, "signature": signature})
    _write(path, [canonical(e) for e in events] + [trailer])


def test_an_edited_export_signed_again_with_the_export_key_fails_its_checkpoint(actors, tmp_path):
    path, public = _export(actors, tmp_path)
    _resign(path, lambda event: event.update(target="key:forged"))
    report = verify_file(path, public)
    assert not report.ok
    assert "do not prove to be in its signed checkpoint" in report.problems[0]


def test_a_chain_the_signer_refuses_is_exported_unproven_and_fails(actors, tmp_path, settings):
    record("test.export", actor=Actor.system(), tenant=actors.tenant_a.slug)
    integrate_all()
    chain = f"tenant:{actors.tenant_a.slug}"
    archive().replace(chain, forged_checkpoint(chain, 1), None)
    path, public = _export(actors, tmp_path, tenant=actors.tenant_a.slug)
    problem = verify_file(path, public).problems[0]
    assert problem.startswith(f"chain {chain}: no signed checkpoint (the checkpoint held")


def test_offline_verification_can_require_witness_cosignatures(actors, tmp_path):
    path, public = _export(actors, tmp_path)
    witness = note.Verifier.of(
        "w.example/1",
        Ed25519PrivateKey.generate().public_key().public_bytes_raw(),
        note.COSIGNATURE_V1,
    )
    report = verify_file(path, public, trust=Trust(witnesses=(str(witness),), quorum=1))
    assert "carries 0 of the 1 witness cosignatures required" in report.problems[0]


def _as_format_1(manifest: dict) -> None:
    manifest["format"] = "keyward-audit-export/1"
    for field in ("proofs", "unproven", "log_key"):
        manifest.pop(field, None)


def test_an_export_passed_off_as_the_format_before_checkpoints_fails_what_was_asked(
    actors, tmp_path
):
    path, public = _export(actors, tmp_path)
    log_key = verify_file(path, public).manifest["log_key"]
    _resign(path, lambda event: event.update(target="key:forged"), _as_format_1)
    assert verify_file(path, public).ok  # no more than the export key's signature was asked
    for trust in (Trust(log_key=log_key), Trust(witnesses=("w+00000000+AA==",), quorum=1)):
        problem = verify_file(path, public, trust=trust).problems[0]
        assert "which predates checkpoints" in problem


def test_exports_that_do_not_meet_cannot_be_compared_offline(actors, tmp_path):
    slug = actors.tenant_a.slug
    for n in range(3):
        record("test.early", actor=Actor.system(), tenant=slug, details={"n": n})
    first, public = _export(actors, tmp_path, name="first.jsonl", tenant=slug)
    record("test.gap", actor=Actor.system(), tenant=slug)
    integrate_all()
    middle = timezone.now()
    record("test.late", actor=Actor.system(), tenant=slug)
    later, _ = _export(
        actors,
        tmp_path,
        name="later.jsonl",
        tenant=slug,
        since=middle.isoformat().replace("+00:00", "Z"),
    )
    assert verify_file(later, public).ok
    report = verify_file(later, public, previous=first)
    assert "cannot be compared offline" in report.problems[0]


@pytest.mark.parametrize(
    "edit",
    [
        lambda m: m.update(log_key=["not", "a", "key"]),
        lambda m: m.update(proofs=["not", "a", "map"]),
        lambda m: m.update(proofs={c: {"checkpoint": 7, "left": 1} for c in m["proofs"]}),
        lambda m: m.update(unproven="none"),
    ],
)
def test_a_malformed_manifest_signed_with_the_export_key_is_broken_not_a_crash(
    actors, tmp_path, edit
):
    path, public = _export(actors, tmp_path)
    _resign(path, lambda event: None, edit)
    report = verify_file(path, public)
    assert not report.ok and report.problems


def test_offline_witnesses_must_be_cosigner_keys_and_all_are_required_by_default(actors, tmp_path):
    path, public = _export(actors, tmp_path)
    log_key = verify_file(path, public).manifest["log_key"]
    report = verify_file(path, public, trust=Trust(witnesses=(log_key,), quorum=1))
    assert "not a cosigner key" in report.problems[0]
    witness = note.Verifier.of(
        "w.example/1",
        Ed25519PrivateKey.generate().public_key().public_bytes_raw(),
        note.COSIGNATURE_V1,
    )
    args = argparse.Namespace(log_key=None, witness=[str(witness)], quorum=None)
    assert trust_of(args).quorum == 1


def _exported_events(path: Path) -> list[dict[str, str | None]]:
    """The event lines of a JSON Lines or CSV export, the manifest left out."""
    import csv

    text = path.read_text()
    if text.startswith("id,"):
        return list(csv.DictReader(text.splitlines()[:-1]))
    return [json.loads(line) for line in text.splitlines()[:-1]]


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_each_exported_event_carries_its_tenants_region_at_export_time(
    actors, tmp_path, settings, fmt
):
    from kms.actions.residency import do_pin_tenant_store

    settings.SECRET_STORES = {
        "default": {"backend": "local", "region": "eu"},
        "us": {"backend": "local", "region": "us"},
    }
    signing.reset()
    a, b = actors.tenant_a, actors.tenant_b
    record("test.before_the_pin", actor=Actor.system(), tenant=a.slug)
    do_pin_tenant_store(a, "us", actor=Actor.system())
    path, public = _export(actors, tmp_path, name=f"regions.{fmt}", format=fmt)
    report = verify_file(path, public)
    assert report.ok, report.problems
    regions = {(e["tenant"] or None, e["region"] or None) for e in _exported_events(path)}
    # Every event of a tenant, even one from before its pin, names its region now.
    assert {(a.slug, "us"), (b.slug, "eu"), (None, None)} <= regions
    assert len(regions) == len({tenant for tenant, _ in regions})


def test_the_platform_tenants_events_carry_no_region_of_their_own(actors, tmp_path, settings):
    settings.SECRET_STORES = {"default": {"backend": "local", "region": "eu"}}
    signing.reset()
    platform = do_create_tenant("platform", "The platform", platform=True, actor=Actor.system())
    record("test.platform_event", actor=Actor.system(), tenant=platform.slug)
    path, public = _export(actors, tmp_path)
    assert verify_file(path, public).ok
    regions = {(e["tenant"], e["region"]) for e in _exported_events(path)}
    assert (platform.slug, None) in regions
    assert (actors.tenant_a.slug, "eu") in regions
    assert not {region for tenant, region in regions if tenant == platform.slug} - {None}


def test_an_exported_region_is_covered_by_the_manifests_signature(actors, tmp_path, settings):
    settings.SECRET_STORES = {"default": {"backend": "local", "region": "eu"}}
    signing.reset()
    path, public = _export(actors, tmp_path)
    lines = _lines(path)
    event = json.loads(lines[0])
    assert event["region"] in ("eu", None)
    event["region"] = "us"
    lines[0] = canonical(event)
    report = verify_file(_write(tmp_path / "moved.jsonl", lines), public)
    assert not report.ok
    assert "manifest" in report.problems[0]
