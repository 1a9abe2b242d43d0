"""Hash chains: no fork under concurrency, and every manipulation is named (rule 10)."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from audit.actors import Actor
from audit.chain import GENESIS, canonical_bytes, link_hash
from audit.models import AuditEvent
from audit.recorder import chain_for, record
from audit.verify import verify_all, verify_chain
from tests.audit.tamper import restore_constraints, tamper
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


@pytest.mark.slow
def test_eight_concurrent_writers_never_fork_a_chain(committed_db):
    tenants = [rand("c") for _ in range(4)]
    errors: list[BaseException] = []
    threads = [threading.Thread(target=_write, args=(tenants, 500, errors, i)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert AuditEvent.objects.count() == 4000
    for tenant in tenants:
        rows = list(
            AuditEvent.objects.filter(chain=chain_for(tenant)).values_list("seq", "prev_hash")
        )
        assert len(rows) == 1000
        assert sorted(seq for seq, _ in rows) == list(range(1, 1001))
        predecessors = Counter(prev for _, prev in rows)
        assert predecessors.most_common(1)[0][1] == 1, "two events share a predecessor"
        result = verify_chain(chain_for(tenant))
        assert result.ok and result.events_checked == 1000


def test_an_event_hash_covers_its_content_and_predecessor(db):
    first = record("test.a", actor=Actor.system(), tenant="hashing", details={"k": "v"})
    second = record("test.b", actor=Actor.system(), tenant="hashing")
    assert first.prev_hash == GENESIS and first.seq == 1
    assert second.prev_hash == first.hash and second.seq == 2
    stored = AuditEvent.objects.get(pk=first.pk)
    assert link_hash(GENESIS, canonical_bytes(stored.__dict__)) == first.hash


def test_user_supplied_text_cannot_forge_lines(db):
    nasty = "ok\r\nFAKE line\x1b[31mred\u202egnp.exe\u2028x"
    event = record("test.text", actor=Actor.system(), target=nasty, details={nasty: nasty})
    stored = AuditEvent.objects.get(pk=event.pk)
    for text in (stored.target, *stored.details, *stored.details.values()):
        assert not any(ch in text for ch in "\r\n\x1b\u202e\u2028")
        assert "\\u000d\\u000a" in text and "\\u202e" in text
    assert verify_chain(stored.chain).ok


@pytest.fixture
def chain_of_five(committed_db):
    tenant = rand("tamper")
    events = [
        record("test.tamper", actor=Actor.system(), tenant=tenant, details={"n": n})
        for n in range(5)
    ]
    record("test.other", actor=Actor.system(), tenant=rand("other"))
    assert all(r.ok for r in verify_all())
    yield events
    restore_constraints()


def _verify_fails_naming(event_id: str) -> str:
    with pytest.raises(CommandError) as failure:
        call_command("audit_verify")
    assert failure.value.returncode == 1
    message = str(failure.value)
    assert event_id in message
    return message


@pytest.mark.postgresql  # tampering goes through a PostgreSQL superuser
def test_a_flipped_byte_is_named(chain_of_five):
    victim = chain_of_five[2]
    tamper(["UPDATE audit_event SET details = '{\"n\": 3}' WHERE id = %s"], [victim.id])
    assert "altered" in _verify_fails_naming(str(victim.id))


@pytest.mark.postgresql  # tampering goes through a PostgreSQL superuser
def test_a_flipped_byte_in_the_hash_itself_is_named(chain_of_five):
    victim = chain_of_five[1]
    flipped = ("1" if victim.hash[0] != "1" else "2") + victim.hash[1:]
    tamper(["UPDATE audit_event SET hash = %s WHERE id = %s"], [flipped, victim.id])
    _verify_fails_naming(str(victim.id))


@pytest.mark.postgresql  # tampering goes through a PostgreSQL superuser
def test_a_deleted_middle_row_is_named(chain_of_five):
    tamper(["DELETE FROM audit_event WHERE id = %s"], [chain_of_five[2].id])
    message = _verify_fails_naming(str(chain_of_five[3].id))
    assert "missing" in message


@pytest.mark.postgresql  # tampering goes through a PostgreSQL superuser
def test_two_swapped_sequence_numbers_are_named(chain_of_five):
    a, b = chain_of_five[1], chain_of_five[2]
    tamper(["UPDATE audit_event SET seq = %s WHERE id = %s"], [a.seq, b.id])
    tamper(["UPDATE audit_event SET seq = %s WHERE id = %s"], [b.seq, a.id])
    _verify_fails_naming(str(b.id))


@pytest.mark.postgresql  # tampering goes through a PostgreSQL superuser
def test_audit_verify_passes_on_intact_chains(chain_of_five, capsys):
    call_command("audit_verify")
    out = capsys.readouterr().out
    assert "ok: 2 chains, 6 events" in out


@pytest.mark.postgresql  # tampering goes through a PostgreSQL superuser
def test_the_periodic_verification_alerts_once_and_exposes_a_metric(chain_of_five, client):
    from auditor.jobs import verify_chains

    assert verify_chains() == []
    assert "keyward_audit_chains_broken 0" in client.get("/metrics").content.decode()
    victim = chain_of_five[3]
    tamper(["UPDATE audit_event SET target = 'forged' WHERE id = %s"], [victim.id])
    broken = verify_chains()
    assert broken == [victim.chain]
    assert verify_chains() == broken
    alerts = AuditEvent.objects.filter(action="audit.chain_broken")
    assert alerts.count() == 1, "one alert per breakage, not one per run"
    assert str(victim.id) in alerts.get().details["first_bad"]
    metrics = client.get("/metrics")
    assert metrics.status_code == 200
    assert "keyward_audit_chains_broken 1" in metrics.content.decode()
