"""The audit table is append-only for the application role (security.md rule 9)."""

from __future__ import annotations

import psycopg
import pytest

from audit.actors import Actor
from audit.recorder import record
from tests import pg

# Privileges and triggers of PostgreSQL roles.
pytestmark = [pytest.mark.usefixtures("committed_db"), pytest.mark.postgresql]

ATTEMPTS = {
    "update": ["UPDATE audit_event SET action = 'forged'"],
    "delete": ["DELETE FROM audit_event"],
    "truncate": ["TRUNCATE audit_event"],
    "disable_trigger": ["ALTER TABLE audit_event DISABLE TRIGGER ALL"],
    "disable_user_triggers": ["ALTER TABLE audit_event DISABLE TRIGGER USER"],
    "replication_role": [
        "SET session_replication_role = replica",
        "DELETE FROM audit_event",
    ],
    "drop": ["DROP TABLE audit_event"],
    "drop_cascade": ["DROP TABLE audit_event CASCADE"],
    "alter_owner": ["ALTER TABLE audit_event OWNER TO keyward_app"],
    "grant_self": [
        "GRANT UPDATE ON audit_event TO keyward_app",
        "UPDATE audit_event SET action = 'forged'",
    ],
}


def _events() -> list[tuple[object, ...]]:
    with pg.connect() as conn:
        return conn.execute(
            "SELECT id, action, hash FROM audit_event ORDER BY chain, seq"
        ).fetchall()


@pytest.mark.parametrize("name", sorted(ATTEMPTS))
def test_the_application_role_cannot_change_or_remove_events(name):
    record("test.event", actor=Actor.system(), details={"n": 1})
    before = _events()
    assert before
    with pytest.raises(psycopg.Error), pg.connect(pg.APP_ROLE) as conn:
        for statement in ATTEMPTS[name]:
            conn.execute(statement)
    assert _events() == before


def test_the_application_role_can_insert_and_select():
    record("test.event", actor=Actor.system())
    with pg.connect(pg.APP_ROLE) as conn:
        assert conn.execute("SELECT count(*) FROM audit_event").fetchone() == (1,)


def test_triggers_stop_even_the_table_owner():
    record("test.event", actor=Actor.system())
    before = _events()
    for statement in (
        "UPDATE audit_event SET action = 'x'",
        "DELETE FROM audit_event",
        "TRUNCATE audit_event",
    ):
        with pytest.raises(psycopg.Error, match="append-only"), pg.connect(pg.OWNER_ROLE) as conn:
            conn.execute(statement)
    assert _events() == before


def test_triggers_fire_under_replica_replication_role_for_the_superuser():
    record("test.event", actor=Actor.system())
    with pytest.raises(psycopg.Error, match="append-only"), pg.connect() as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute("DELETE FROM audit_event")
    assert len(_events()) == 1
