"""One contract for every archive of signed checkpoints, run against a directory, Vault KV
(a real OpenBao, or the external Vault of KEYWARD_TEST_VAULT_ADDR) and an S3-compatible
bucket (moto on loopback, or the external service of KEYWARD_TEST_S3_ENDPOINT): each
replacement is a compare-and-set on what the signer read. Then the S3 archive alone: how it
lays out the bucket, the signer and verification through it, its configuration, and
failures that never carry its secret key."""

from __future__ import annotations

import base64
import logging
import threading
import traceback
from urllib.parse import quote

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction

from audit.actors import Actor
from audit.recorder import GLOBAL_CHAIN, chain_for, record
from audit.sequencer import integrate_all
from auditor.archive import (
    PREFIX,
    ArchiveConflict,
    ArchiveDamaged,
    ArchiveUnavailable,
    DirectoryArchive,
    Held,
    S3Archive,
    StoreArchive,
    archive,
)
from auditor.checkpoints import CheckpointRefused, sign_chain
from auditor.verification import verify_with_checkpoints
from stores.vault import VaultStore
from tests.audit.tamper import tamper
from tests.bao import SilentServer, free_port
from tests.factories import rand
from tests.provider_stub import ProviderStub
from tests.test_settings import run_configured

KINDS = {"directory": DirectoryArchive, "store": StoreArchive, "s3": S3Archive}


@pytest.fixture(params=list(KINDS))
def where(request, settings):
    """The archive the settings select, once per kind."""
    if request.param == "store":
        bao = request.getfixturevalue("bao")
        prefix = "archive-tests-" + rand("p")
        settings.SECRET_STORES = {"default": bao.store_config(path_prefix=prefix)}
        settings.AUDIT_CHECKPOINT_DIR = ""
    elif request.param == "s3":
        settings.AUDIT_CHECKPOINT_S3 = request.getfixturevalue("s3").location()
        settings.AUDIT_CHECKPOINT_DIR = ""
    selected = archive()
    assert isinstance(selected, KINDS[request.param])
    return selected


@pytest.fixture
def bucket(settings, s3):
    settings.AUDIT_CHECKPOINT_DIR = ""
    settings.AUDIT_CHECKPOINT_S3 = s3.location()
    return archive()


def _chain() -> str:
    return f"tenant:{rand('acme')}"


def _race(writers: int, write) -> tuple[list[int], list[int]]:
    """`write(n)` by `writers` threads let go at once: who succeeded, who was refused."""
    start, won, refused = threading.Barrier(writers), [], []

    def attempt(n: int) -> None:
        start.wait()
        try:
            write(n)
            won.append(n)
        except ArchiveConflict:
            refused.append(n)

    threads = [threading.Thread(target=attempt, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return won, refused


def test_a_first_checkpoint_is_written_and_read_back(where):
    chain = _chain()
    assert where.latest(chain) is None
    where.replace(chain, "first checkpoint\n", None)
    held = where.latest(chain)
    assert held is not None
    assert held.note == "first checkpoint\n"
    assert held.version


def test_a_replacement_naming_the_version_read_takes_its_place(where):
    chain = _chain()
    where.replace(chain, "first\n", None)
    first = where.latest(chain)
    where.replace(chain, "second\n", first)
    second = where.latest(chain)
    assert second.note == "second\n"
    assert second.version != first.version
    where.replace(chain, "third\n", second)
    assert where.latest(chain).note == "third\n"


def test_a_replacement_naming_a_stale_version_is_refused_and_changes_nothing(where):
    chain = _chain()
    where.replace(chain, "first\n", None)
    stale = where.latest(chain)
    where.replace(chain, "second\n", stale)
    current = where.latest(chain)
    with pytest.raises(ArchiveConflict):
        where.replace(chain, "from a stale read\n", stale)
    with pytest.raises(ArchiveConflict):  # a first write where one is already held
        where.replace(chain, "from a read of nothing\n", None)
    with pytest.raises(ArchiveConflict):
        where.replace(chain, "from a version never held\n", Held("x", "17"))
    assert where.latest(chain) == current


def test_of_two_concurrent_first_writes_exactly_one_wins(where):
    chain = _chain()
    won, refused = _race(2, lambda n: where.replace(chain, f"signer {n}\n", None))
    assert len(won) == 1 and len(refused) == 1, (won, refused)
    assert where.latest(chain).note == f"signer {won[0]}\n"
    assert chain in where.chains()


def test_of_concurrent_replacements_of_one_read_exactly_one_wins(where):
    chain = _chain()
    where.replace(chain, "first\n", None)
    read = where.latest(chain)
    won, refused = _race(3, lambda n: where.replace(chain, f"signer {n}\n", read))
    assert len(won) == 1 and len(refused) == 2, (won, refused)
    assert where.latest(chain).note == f"signer {won[0]}\n"


def test_chains_lists_every_chain_written(where):
    names = sorted([_chain(), _chain(), GLOBAL_CHAIN])
    for name in names:
        where.replace(name, f"checkpoint of {name}\n", None)
    listed = where.chains()
    assert set(names) <= set(listed)
    assert listed == sorted(listed)
    for name in names:
        assert where.latest(name).note == f"checkpoint of {name}\n"


# -- the S3 archive --------------------------------------------------------------------


def test_a_bucket_holds_one_object_per_chain_named_as_the_directory_names_its_files(
    bucket, s3, tmp_path
):
    chain = _chain()
    bucket.replace(chain, "a checkpoint\n", None)
    prefix = bucket.where.prefix
    client = s3.client()
    client.put_object(Bucket=s3.bucket, Key=prefix + "notes.txt", Body=b"not a checkpoint")
    client.put_object(Bucket=s3.bucket, Key=prefix + "older/x.checkpoint", Body=b"elsewhere")
    listed = client.list_objects_v2(Bucket=s3.bucket, Prefix=prefix)
    name = quote(chain, safe="") + ".checkpoint"
    assert prefix + name in [item["Key"] for item in listed["Contents"]]
    got = client.get_object(Bucket=s3.bucket, Key=prefix + name)
    assert got["Body"].read() == b"a checkpoint\n"
    assert got["ETag"] == bucket.latest(chain).version
    assert bucket.chains() == [chain]
    directory = DirectoryArchive(tmp_path)
    directory.replace(chain, "a checkpoint\n", None)
    assert [p.name for p in tmp_path.glob("*.checkpoint")] == [name]


def test_a_checkpoint_deleted_after_it_was_read_is_a_conflict(bucket, s3):
    chain = _chain()
    bucket.replace(chain, "first\n", None)
    read = bucket.latest(chain)
    key = bucket.where.prefix + quote(chain, safe="") + ".checkpoint"
    s3.client().delete_object(Bucket=s3.bucket, Key=key)
    with pytest.raises(ArchiveConflict):
        bucket.replace(chain, "second\n", read)
    with pytest.raises(ArchiveDamaged, match="was deleted"):
        bucket.latest(chain)  # a versioned bucket shows what was there


def test_a_checkpoint_removed_from_under_a_versioned_archive_is_named_not_forgotten(where, request):
    chain = _chain()
    where.replace(chain, "first\n", None)
    if isinstance(where, DirectoryArchive):
        pytest.skip("a directory keeps no trace of a file removed from it")
    if isinstance(where, StoreArchive):
        store = where.store
        assert isinstance(store, VaultStore)
        client = request.getfixturevalue("bao").client()
        client.secrets.kv.v2.delete_metadata_and_all_versions(
            store._path(f"{PREFIX}/chain/{chain}"), mount_point=store.options.kv_mount
        )
    else:
        key = where.where.prefix + quote(chain, safe="") + ".checkpoint"
        request.getfixturevalue("s3").client().delete_object(Bucket=where.where.bucket, Key=key)
    with pytest.raises(ArchiveDamaged):
        where.latest(chain)


def test_a_bucket_under_object_lock_keeps_every_checkpoint_replaced(settings, s3):
    if s3.proc is None:
        pytest.skip("creates a bucket of its own, on the local server only")
    name = rand("locked")
    client = s3.client()
    client.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    client.put_object_lock_configuration(
        Bucket=name,
        ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled",
            "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": 1}},
        },
    )
    settings.AUDIT_CHECKPOINT_DIR = ""
    settings.AUDIT_CHECKPOINT_S3 = s3.location(bucket=name)
    where, chain = archive(), _chain()
    key = settings.AUDIT_CHECKPOINT_S3["prefix"] + quote(chain, safe="") + ".checkpoint"
    where.replace(chain, "first\n", None)
    first = where.latest(chain)
    where.replace(chain, "second\n", first)
    with pytest.raises(ArchiveConflict):
        where.replace(chain, "from a stale read\n", first)
    versions = client.list_object_versions(Bucket=name, Prefix=key)["Versions"]
    kept = [
        client.get_object(Bucket=name, Key=v["Key"], VersionId=v["VersionId"])["Body"].read()
        for v in versions
    ]
    assert sorted(kept) == [b"first\n", b"second\n"]


def _write(tenant: str, count: int) -> None:
    with transaction.atomic():
        for n in range(count):
            record("test.archive", actor=Actor.system(), tenant=tenant, details={"n": n})
    integrate_all()


def test_the_signer_keeps_its_checkpoint_in_the_bucket_and_a_cut_off_tail_is_named(
    bucket, committed_db
):
    tenant = rand("s3")
    _write(tenant, 40)
    chain = chain_for(tenant)
    issued = sign_chain(chain)
    assert (issued.new, issued.checkpoint.size) == (True, 40)
    held = bucket.latest(chain)
    assert held.note == issued.note
    assert chain in bucket.chains()
    [verified] = verify_with_checkpoints(only=[chain])
    assert verified.result.ok
    assert verified.checkpoint is not None and verified.checkpoint.size == 40
    _write(tenant, 5)
    assert sign_chain(chain).checkpoint.size == 45
    tamper(
        [
            "DELETE FROM audit_event WHERE id IN"
            " (SELECT event_id FROM audit_link WHERE chain = %s AND seq > 42)",
            "DELETE FROM audit_link WHERE chain = %s AND seq > 42",
        ],
        [chain],
    )
    [verified] = verify_with_checkpoints(only=[chain])
    assert verified.result.first_bad is not None
    assert "42 events, fewer than the 45" in verified.result.first_bad.reason
    before = bucket.latest(chain)
    with pytest.raises(CheckpointRefused, match="fewer than the 45"):
        sign_chain(chain)
    assert bucket.latest(chain) == before


def test_a_directory_and_a_bucket_together_are_refused(settings, s3):
    settings.AUDIT_CHECKPOINT_S3 = s3.location()
    with pytest.raises(ImproperlyConfigured, match="KEYWARD_AUDIT_CHECKPOINT_DIR"):
        archive()


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        ({"KEYWARD_AUDIT_CHECKPOINT_S3_URL": "https://bucket/prefix"}, "_S3_URL"),
        ({"KEYWARD_AUDIT_CHECKPOINT_S3_URL": "s3://Not_A_Bucket/x"}, "_S3_URL"),
        ({"KEYWARD_AUDIT_CHECKPOINT_S3_URL": "s3://bucket/a//b"}, "_S3_URL"),
        (
            {
                "KEYWARD_AUDIT_CHECKPOINT_S3_URL": "s3://bucket",
                "KEYWARD_AUDIT_CHECKPOINT_S3_ENDPOINT": "minio:9000",
            },
            "_S3_ENDPOINT",
        ),
        (
            {
                "KEYWARD_AUDIT_CHECKPOINT_S3_URL": "s3://bucket",
                "KEYWARD_AUDIT_CHECKPOINT_S3_REGION": "eu west",
            },
            "_S3_REGION",
        ),
        (
            {
                "KEYWARD_AUDIT_CHECKPOINT_S3_URL": "s3://bucket",
                "KEYWARD_AUDIT_CHECKPOINT_S3_ACCESS_KEY_ID": "AKIAEXAMPLE",
            },
            "_S3_ACCESS_KEY_ID",
        ),
        ({"KEYWARD_AUDIT_CHECKPOINT_S3_ENDPOINT": "https://minio:9000"}, "_S3_URL"),
        (
            {
                "KEYWARD_AUDIT_CHECKPOINT_S3_URL": "s3://bucket",
                "KEYWARD_AUDIT_CHECKPOINT_DIR": "/var/lib/keyward/checkpoints",
            },
            "KEYWARD_AUDIT_CHECKPOINT_DIR",
        ),
    ],
)
def test_a_malformed_bucket_configuration_stops_start_up_naming_the_variable(
    tmp_path, variables, named
):
    result = run_configured(tmp_path, **variables)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert named in result.stderr


def test_a_url_with_credentials_is_refused_without_quoting_them(tmp_path):
    result = run_configured(
        tmp_path, KEYWARD_AUDIT_CHECKPOINT_S3_URL="s3://AKIAEXAMPLE:hunter2-canary@bucket/x"
    )
    assert "ImproperlyConfigured" in result.stderr
    assert "hunter2-canary" not in result.stderr


def test_a_bucket_configuration_is_read_with_its_secret_from_a_file(tmp_path):
    secret = tmp_path / "s3-secret"
    secret.write_text("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n")
    probe = (
        "import django; django.setup(); from django.conf import settings; "
        "from auditor.archive import archive; c = settings.AUDIT_CHECKPOINT_S3; "
        "print(c['bucket'], c['prefix'], c['endpoint'], c['region'], c['timeout'], "
        "c['secret_access_key'] == 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY', "
        "archive().describe())"
    )
    result = run_configured(
        tmp_path,
        probe,
        KEYWARD_AUDIT_CHECKPOINT_S3_URL="s3://audit-bucket/keyward/checkpoints/",
        KEYWARD_AUDIT_CHECKPOINT_S3_ENDPOINT="https://minio.internal:9000/",
        KEYWARD_AUDIT_CHECKPOINT_S3_REGION="eu-west-1",
        KEYWARD_AUDIT_CHECKPOINT_S3_ACCESS_KEY_ID="AKIAEXAMPLE",
        KEYWARD_AUDIT_CHECKPOINT_S3_SECRET_ACCESS_KEY_FILE=str(secret),
        KEYWARD_AUDIT_CHECKPOINT_S3_TIMEOUT_MS="2500",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "audit-bucket",
        "keyward/checkpoints/",
        "https://minio.internal:9000",
        "eu-west-1",
        "2.5",
        "True",
        "bucket",
        "s3://audit-bucket/keyward/checkpoints/",
        "at",
        "https://minio.internal:9000",
    ]


CANARY = "keyward-canary-" + "Zq9" * 12


def _forms(secret: str) -> list[str]:
    return [secret, base64.b64encode(secret.encode()).decode(), quote(secret, safe="")]


@pytest.fixture
def unreachable(request, settings, s3):
    """A bucket whose every answer is a failure, reached with the canary as secret key:
    nothing listening, a server that never answers, or one refusing the signature."""
    kind, servers = request.param, list[SilentServer | ProviderStub]()
    if kind == "refused":
        endpoint = f"http://127.0.0.1:{free_port()}"
    elif kind == "silent":
        silent = SilentServer()
        servers.append(silent)
        endpoint = silent.addr
    else:
        stub = ProviderStub()
        servers.append(stub)
        stub.answer(
            403,
            b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>SignatureDoesNotMatch</Code>"
            b"<Message>The request signature we calculated does not match the signature you "
            b"provided. Check your key and signing method.</Message></Error>",
            {"Content-Type": "application/xml"},
        )
        endpoint = stub.url
    settings.AUDIT_CHECKPOINT_DIR = ""
    settings.AUDIT_CHECKPOINT_S3 = s3.location(
        endpoint=endpoint, access_key_id="AKIAKEYWARDCANARY", secret_access_key=CANARY, timeout=0.2
    )
    yield kind
    for server in servers:
        server.close()


@pytest.mark.parametrize("unreachable", ["refused", "silent", "signature"], indirect=True)
def test_a_failing_bucket_fails_closed_and_never_shows_its_secret_key(unreachable, caplog):
    caplog.set_level(logging.DEBUG)  # botocore's own debug lines included
    where = archive()
    failures: list[ArchiveUnavailable] = []
    for attempt in (
        lambda: where.latest("tenant:acme"),
        lambda: where.replace("tenant:acme", "a checkpoint\n", None),
        where.chains,
    ):
        with pytest.raises(ArchiveUnavailable) as raised:
            attempt()
        failures.append(raised.value)
    expected = {"refused": "EndpointConnectionError", "silent": "Timeout"}
    assert expected.get(unreachable, "SignatureDoesNotMatch") in str(failures[0])
    assert isinstance(where, S3Archive)
    shown = [caplog.text, repr(where), repr(where.where), where.describe()]
    for failure in failures:
        shown += [str(failure), repr(failure), *traceback.format_exception(failure)]
        summary = traceback.TracebackException.from_exception(failure, capture_locals=True)
        shown += list(summary.format())  # what an error reporter showing locals would print
    for form in _forms(CANARY):
        assert not any(form in text for text in shown), form
    assert "checkpoint archive: S3 GetObject failed" in caplog.text
