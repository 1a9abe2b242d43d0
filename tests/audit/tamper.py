"""Edits of the audit log the way an attacker with full database access would make them:
append-only triggers switched off for the duration (as the PostgreSQL superuser, or by
dropping and re-creating them on SQLite)."""

from __future__ import annotations

from collections.abc import Sequence
from importlib import import_module

from django.db import connection

from tests import pg

TABLES = ("audit_event", "audit_link", "audit_rejection")


def tamper(statements: Sequence[str], params: Sequence[object] = ()) -> None:
    if connection.vendor == "sqlite":
        _tamper_sqlite(statements, params)
        return
    with pg.connect() as conn:
        for table in TABLES:
            conn.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
        for statement in statements:
            conn.execute(statement, params if "%s" in statement else None)
        for table in TABLES:
            conn.execute(f"ALTER TABLE {table} ENABLE ALWAYS TRIGGER {table}_no_update_delete")
            conn.execute(f"ALTER TABLE {table} ENABLE ALWAYS TRIGGER {table}_no_truncate")


def _tamper_sqlite(statements: Sequence[str], params: Sequence[object]) -> None:
    triggers = import_module("audit.migrations.0005_sequencer").sqlite_triggers()
    with connection.cursor() as cursor:
        for statement in triggers:
            if statement.startswith("DROP"):
                cursor.execute(statement)
        for statement in statements:
            values = [str(p) if not isinstance(p, int) else p for p in params]
            # SQLite keeps UUIDs as 32 hex digits.
            values = [
                v.replace("-", "") if isinstance(v, str) and len(v) == 36 else v for v in values
            ]
            cursor.execute(statement, values if "%s" in statement else None)
        for statement in triggers:
            cursor.execute(statement)
