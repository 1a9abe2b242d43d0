"""Hash chains built by the sequencer: no gap, no fork, every MAC checked, and every
manipulation named (rule 10). Runs on PostgreSQL and SQLite."""

from __future__ import annotations

import threading
import uuid
from collections import Counter

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, transaction

from audit.actors import Actor
from audit.chain import GENESIS, canonical_bytes, link_hash
from audit.models import AuditEvent, AuditLink, AuditPending, AuditRejection
from audit.recorder import chain_for, record
from audit.sequencer import integrate, integrate_all
from audit.verify import integration, verify_all, verify_chain
from tests.audit.tamper import tamper
from tests.factories import rand


def _write(tenants: list[str], per_thread: int, errors: list[BaseException], idx: int) -> None:
    try:
        for n in range(per_thread):
            record(
                "test.concurrent",
                actor=Actor.system(f"writer-{idx}"),
                tenant=tenants[(idx + n) % len(tenants)],
                details={"n": n},
            )
    except BaseException as exc:  # reported to the test thread
        errors.append(exc)
    finally:
        connection.close()


def _sequence(stop: threading.Event, errors: list[BaseException]) -> None:
    try:
        while not stop.is_set():
            integrate(limit=300)
    except BaseException as exc:
        errors.append(exc)
    finally:
        connection.close()


@pytest.mark.slow
def test_eight_writers_are_integrated_with_no_gap_or_fork(committed_db):
    tenants = [rand("c") for _ in range(4)]
    errors: list[BaseException] = []
    stop = threading.Event()
    sequencer = threading.Thread(target=_sequence, args=(stop, errors))
    sequencer.start()
    threads = [threading.Thread(target=_write, args=(tenants, 500, errors, i)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stop.set()
    sequencer.join()
    integrate_all()
    assert not errors
    assert AuditEvent.objects.count() == AuditLink.objects.count() == 4000
    assert not AuditPending.objects.exists() and not AuditRejection.objects.exists()
    for tenant in tenants:
        rows = list(
            AuditLink.objects.filter(chain=chain_for(tenant)).values_list("seq", "prev_hash")
        )
        assert sorted(seq for seq, _ in rows) == list(range(1, 1001))
        predecessors = Counter(prev for _, prev in rows)
        assert predecessors.most_common(1)[0][1] == 1, "two events share a predecessor"
        result = verify_chain(chain_for(tenant))
        assert result.ok and result.events_checked == 1000
    assert integration().ok


def test_an_event_is_chained_by_the_sequencer_not_by_its_request(db):
    first = record("test.a", actor=Actor.system(), tenant="hashing", details={"k": "v"})
    second = record("test.b", actor=Actor.system(), tenant="hashing")
    assert not AuditLink.objects.exists(), "a request takes no chain position"
    batch = integrate()
    assert batch.integrated == [first.id, second.id]
    one, two = AuditLink.objects.get(pk=first.pk), AuditLink.objects.get(pk=second.pk)
    assert (one.seq, one.prev_hash) == (1, GENESIS)
    assert (two.seq, two.prev_hash) == (2, one.hash)
    stored = AuditEvent.objects.filter(pk=first.pk).values().get()
    assert link_hash(GENESIS, canonical_bytes({**stored, "seq": 1})) == one.hash
    assert integrate().integrated == [], "nothing is integrated twice"


def test_events_of_a_rolled_back_transaction_never_appear(db):
    kept = record("test.kept", actor=Actor.system())
    with pytest.raises(RuntimeError), transaction.atomic():
        record("test.rolled_back", actor=Actor.system())
        raise RuntimeError("the action failed")
    assert integrate().integrated == [kept.id]
    assert not AuditEvent.objects.filter(action="test.rolled_back").exists()


def test_user_supplied_text_cannot_forge_lines(db):
    nasty = "ok\r\nFAKE line\x1b[31mred\u202egnp.exe\u2028x"
    event = record("test.text", actor=Actor.system(), target=nasty, details={nasty: nasty})
    stored = AuditEvent.objects.get(pk=event.pk)
    for text in (stored.target, *stored.details, *stored.details.values()):
        assert not any(ch in text for ch in "\r\n\x1b\u202e\u2028")
        assert "\\u000d\\u000a" in text and "\\u202e" in text
    integrate()
    assert verify_chain(stored.chain).ok


@pytest.fixture
def chain_of_five(committed_db):
    tenant = rand("tamper")
    events = [
        record("test.tamper", actor=Actor.system(), tenant=tenant, details={"n": n})
        for n in range(5)
    ]
    record("test.other", actor=Actor.system(), tenant=rand("other"))
    integrate_all()
    assert all(r.ok for r in verify_all())
    return [AuditLink.objects.get(pk=e.pk) for e in events]


def _verify_fails_naming(event_id: object) -> str:
    with pytest.raises(CommandError) as failure:
        call_command("audit_verify")
    assert failure.value.returncode == 1
    message = str(failure.value)
    assert str(event_id) in message
    return message


def test_a_flipped_byte_is_named(chain_of_five):
    victim = chain_of_five[2]
    tamper(["UPDATE audit_event SET details = '{\"n\": 3}' WHERE id = %s"], [victim.pk])
    assert "altered" in _verify_fails_naming(victim.pk)


def test_a_flipped_byte_in_the_hash_itself_is_named(chain_of_five):
    victim = chain_of_five[1]
    flipped = ("1" if victim.hash[0] != "1" else "2") + victim.hash[1:]
    tamper(["UPDATE audit_link SET hash = %s WHERE event_id = %s"], [flipped, victim.pk])
    _verify_fails_naming(victim.pk)


def test_a_deleted_event_is_named(chain_of_five):
    tamper(["DELETE FROM audit_event WHERE id = %s"], [chain_of_five[2].pk])
    assert "missing" in _verify_fails_naming(chain_of_five[2].pk)


def test_a_deleted_position_is_named(chain_of_five):
    tamper(["DELETE FROM audit_link WHERE event_id = %s"], [chain_of_five[2].pk])
    assert "missing or moved" in _verify_fails_naming(chain_of_five[3].pk)


def test_two_swapped_sequence_numbers_are_named(chain_of_five):
    a, b = chain_of_five[1], chain_of_five[2]
    tamper(["UPDATE audit_link SET seq = 1000000 WHERE event_id = %s"], [a.pk])
    tamper(["UPDATE audit_link SET seq = %s WHERE event_id = %s"], [a.seq, b.pk])
    tamper(["UPDATE audit_link SET seq = %s WHERE event_id = %s"], [b.seq, a.pk])
    _verify_fails_naming(b.pk)


def test_audit_verify_passes_on_intact_chains(chain_of_five, capsys):
    call_command("audit_verify")
    out = capsys.readouterr().out
    assert "ok: 2 chains, 6 events" in out


def _forge(action: str, *, hand_to_sequencer: bool) -> str:
    """A row written with only the database's credentials: no valid MAC."""
    forged = str(uuid.uuid4())
    tamper(
        [
            "INSERT INTO audit_event (id, chain, occurred_at, actor_type, actor_id, action,"
            " tenant, target, outcome, request_id, details, mac) VALUES"
            " (%s, 'global', '2026-01-01 00:00:00', 'system', 'x', %s, '', '', 'success', '',"
            " '{}', 'bad')"
        ],
        [forged, action],
    )
    if hand_to_sequencer:
        AuditPending.objects.create(event_id=forged)
    return forged


def test_a_row_with_a_wrong_mac_is_reported_and_never_integrated(chain_of_five):
    forged = _forge("key.released.forged", hand_to_sequencer=True)
    integrate_all()
    assert not AuditLink.objects.filter(event_id=uuid.UUID(forged)).exists()
    assert AuditRejection.objects.get(event_id=forged).reason.startswith("MAC does not verify")
    rejected = AuditEvent.objects.get(action="audit.event_rejected")
    assert rejected.details["event_id"] == forged
    assert "MAC" in _verify_fails_naming(forged)


def test_a_row_hidden_from_the_sequencer_is_reported(chain_of_five):
    forged = _forge("key.released.hidden", hand_to_sequencer=False)
    integrate_all()
    assert "hidden" in _verify_fails_naming(forged)


def test_the_periodic_verification_alerts_once_and_exposes_a_metric(chain_of_five, client):
    from auditor.jobs import verify_chains

    assert verify_chains() == []
    assert "keyward_audit_chains_broken 0" in client.get("/metrics").content.decode()
    victim = chain_of_five[3]
    tamper(["UPDATE audit_event SET target = 'forged' WHERE id = %s"], [victim.pk])
    broken = verify_chains()
    assert broken == [victim.chain]
    assert verify_chains() == broken


@pytest.mark.postgresql  # a sequencer process blocked on a PostgreSQL row lock
@pytest.mark.slow
def test_a_sequencer_killed_mid_batch_loses_nothing_and_links_nothing_twice(committed_db):
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from tests import pg

    events = [record("test.kill", actor=Actor.system(), tenant="kill") for _ in range(50)]
    env = {**os.environ, "KEYWARD_DATABASE_URL": pg.database_url()}
    root = Path(__file__).resolve().parents[2]
    with pg.connect() as holder:  # the batch links everything, then waits to drop pointers
        holder.execute("SELECT id FROM audit_pending ORDER BY id DESC LIMIT 1 FOR UPDATE")
        sequencer = subprocess.Popen(
            [sys.executable, "manage.py", "audit_sequencer", "--once"], cwd=root, env=env
        )
        deadline, waiting = time.monotonic() + 30, False
        with pg.connect(autocommit=True) as watcher:  # a fresh view of the activity each time
            while time.monotonic() < deadline and not waiting:
                row = watcher.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    " AND query ILIKE %s",
                    ["%delete%audit_pending%"],
                ).fetchone()
                waiting = bool(row and row[0])
                time.sleep(0.05)
        if not waiting:
            sequencer.kill()
        assert waiting, "the sequencer reached the end of its batch"
        os.kill(sequencer.pid, signal.SIGKILL)
        sequencer.wait(timeout=10)
        holder.rollback()
    assert not AuditLink.objects.exists(), "the killed batch committed nothing"
    assert AuditPending.objects.count() == 50, "nothing was lost"
    deadline = time.monotonic() + 10
    while AuditPending.objects.exists() and time.monotonic() < deadline:
        integrate_all()  # busy while the killed sequencer's session is still ending
        time.sleep(0.05)
    assert sorted(AuditLink.objects.filter(chain="tenant:kill").values_list("seq", flat=True)) == (
        list(range(1, 51))
    )
    assert set(AuditLink.objects.values_list("event_id", flat=True)) == {e.id for e in events}
    assert verify_chain("tenant:kill").ok and integration().ok


@pytest.mark.postgresql  # the cluster-wide lock is a PostgreSQL advisory lock
def test_one_sequencer_works_at_a_time(committed_db):
    from tests import pg

    record("test.lock", actor=Actor.system())
    with pg.connect() as other, other.transaction():
        other.execute("SELECT pg_advisory_xact_lock(%s)", [0x6B7761756474])
        assert integrate().busy
    assert integrate().integrated


@pytest.mark.parametrize("address", ["::ffff:10.0.0.1", "2001:db8::1", "192.0.2.7"])
def test_events_from_any_address_spelling_are_integrated(db, address):
    import ipaddress

    from core.context import Origin, bound_origin

    spelled = str(ipaddress.ip_address(address))  # as the request middleware spells it
    with bound_origin(Origin(request_id="r" * 16, source_ip=spelled)):
        event = record("test.address", actor=Actor.system(), tenant="addresses")
    assert integrate().integrated == [event.id]
    assert verify_chain("tenant:addresses").ok and integration().ok


def test_an_event_hidden_behind_a_planted_rejection_is_named(chain_of_five):
    from django.utils import timezone

    hidden = record("key.released", actor=Actor.system(), tenant="hide")
    # What the application role can do: insert a rejection and delete the pointer.
    AuditRejection.objects.create(event_id=hidden.id, reason="made up", rejected_at=timezone.now())
    AuditPending.objects.filter(event_id=hidden.id).delete()
    integrate_all()
    assert "planted rejection" in _verify_fails_naming(hidden.id)
