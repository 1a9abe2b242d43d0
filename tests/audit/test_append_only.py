"""The audit log's tables (events, chain links, tree nodes, rejections) are append-only for the
application role (security.md rule 9)."""

from __future__ import annotations

import psycopg
import pytest
from django.db import transaction

from audit import tree
from audit.actors import Actor
from audit.recorder import record
from audit.sequencer import integrate_all
from tests import pg

# Privileges and triggers of PostgreSQL roles.
pytestmark = [pytest.mark.usefixtures("committed_db"), pytest.mark.postgresql]

TABLES = ("audit_event", "audit_link", "audit_tree_node", "audit_rejection")
ATTEMPTS = {
    "update": ["UPDATE {t} SET {c} = {c}"],
    "delete": ["DELETE FROM {t}"],
    "truncate": ["TRUNCATE {t}"],
    "disable_trigger": ["ALTER TABLE {t} DISABLE TRIGGER ALL"],
    "disable_user_triggers": ["ALTER TABLE {t} DISABLE TRIGGER USER"],
    "replication_role": [
        "SET session_replication_role = replica",
        "DELETE FROM {t}",
    ],
    "drop": ["DROP TABLE {t}"],
    "drop_cascade": ["DROP TABLE {t} CASCADE"],
    "alter_owner": ["ALTER TABLE {t} OWNER TO keyward_app"],
    "grant_self": [
        "GRANT UPDATE ON {t} TO keyward_app",
        "UPDATE {t} SET {c} = {c}",
    ],
}
COLUMN = {
    "audit_event": "action",
    "audit_link": "hash",
    "audit_tree_node": "hash",
    "audit_rejection": "reason",
}


def _log() -> list[list[tuple[object, ...]]]:
    """Every row of every append-only table."""
    with pg.connect() as conn:
        return [conn.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall() for t in TABLES]


def _a_log_with_a_rejection() -> None:
    with transaction.atomic():  # enough events for a stored subtree of the Merkle tree
        for n in range(tree.WIDTH):
            record("test.event", actor=Actor.system(), details={"n": n})
    with pg.connect() as conn:  # a forged event: no valid MAC, handed to the sequencer
        conn.execute(
            "INSERT INTO audit_event (id, chain, occurred_at, actor_type, actor_id, action,"
            " tenant, target, outcome, request_id, details, mac) VALUES (gen_random_uuid(),"
            " 'global', now(), 'system', 'x', 'forged', '', '', 'success', '', '{}', 'bad')"
        )
        conn.execute(
            "INSERT INTO audit_pending (event_id) SELECT id FROM audit_event WHERE action = 'forged'"
        )
    integrate_all()


@pytest.mark.parametrize("table", TABLES)
@pytest.mark.parametrize("name", sorted(ATTEMPTS))
def test_the_application_role_cannot_change_or_remove_the_log(name, table):
    _a_log_with_a_rejection()
    before = _log()
    assert all(before)
    with pytest.raises(psycopg.Error), pg.connect(pg.APP_ROLE) as conn:
        for statement in ATTEMPTS[name]:
            conn.execute(statement.format(t=table, c=COLUMN[table]))
    assert _log() == before


def test_the_application_role_can_insert_and_select():
    record("test.event", actor=Actor.system())
    with pg.connect(pg.APP_ROLE) as conn:
        assert conn.execute("SELECT count(*) FROM audit_event").fetchone() == (1,)


@pytest.mark.parametrize("table", TABLES)
def test_triggers_stop_even_the_table_owner(table):
    _a_log_with_a_rejection()
    before = _log()
    for statement in (
        f"UPDATE {table} SET {COLUMN[table]} = 'x'",
        f"DELETE FROM {table}",
        f"TRUNCATE {table}",
    ):
        with pytest.raises(psycopg.Error, match="append-only"), pg.connect(pg.OWNER_ROLE) as conn:
            conn.execute(statement)
    assert _log() == before


@pytest.mark.parametrize("table", TABLES)
def test_triggers_fire_under_replica_replication_role_for_the_superuser(table):
    _a_log_with_a_rejection()
    before = _log()
    with pytest.raises(psycopg.Error, match="append-only"), pg.connect() as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute(f"DELETE FROM {table}")
    assert _log() == before
