"""Superuser-only edits of the audit table, the way an attacker with full access would."""

from __future__ import annotations

from collections.abc import Sequence

from tests import pg


def tamper(statements: Sequence[str], params: Sequence[object] = ()) -> None:
    with pg.connect() as conn:
        conn.execute("ALTER TABLE audit_event DISABLE TRIGGER USER")
        conn.execute(
            "ALTER TABLE audit_event DROP CONSTRAINT IF EXISTS audit_event_chain_seq_unique"
        )
        conn.execute(
            "ALTER TABLE audit_event DROP CONSTRAINT IF EXISTS audit_event_chain_prev_unique"
        )
        for statement in statements:
            conn.execute(statement, params if "%s" in statement else None)
        conn.execute("ALTER TABLE audit_event ENABLE ALWAYS TRIGGER audit_event_no_update_delete")
        conn.execute("ALTER TABLE audit_event ENABLE ALWAYS TRIGGER audit_event_no_truncate")


def restore_constraints() -> None:
    with pg.connect() as conn:
        conn.execute("ALTER TABLE audit_event DISABLE TRIGGER USER")
        conn.execute("DELETE FROM audit_event")
        conn.execute("ALTER TABLE audit_event ENABLE ALWAYS TRIGGER audit_event_no_update_delete")
        conn.execute("ALTER TABLE audit_event ENABLE ALWAYS TRIGGER audit_event_no_truncate")
        for name, cols in (
            ("audit_event_chain_seq_unique", "chain, seq"),
            ("audit_event_chain_prev_unique", "chain, prev_hash"),
        ):
            exists = conn.execute(
                "SELECT 1 FROM pg_constraint WHERE conname = %s", [name]
            ).fetchone()
            if not exists:
                conn.execute(f"ALTER TABLE audit_event ADD CONSTRAINT {name} UNIQUE ({cols})")
