"""Edits of the audit log the way an attacker with full database access would make them:
append-only triggers switched off for the duration (as the PostgreSQL superuser, or by
dropping and re-creating them on SQLite)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from importlib import import_module
from typing import Any

from django.db import connection

from tests import pg

TABLES = ("audit_event", "audit_link", "audit_tree_node", "audit_rejection")
Run = Callable[[str, Sequence[Any] | None], Any]


@contextmanager
def triggers_lifted() -> Iterator[Run]:
    """A way to run statements while the append-only triggers are off; they are back on
    (as the migrations wrote them) when the block ends."""
    if connection.vendor == "sqlite":
        triggers = import_module("audit.migrations.0006_merkle_tree").sqlite_triggers()
        with connection.cursor() as cursor:
            for statement in triggers:
                if statement.startswith("DROP"):
                    cursor.execute(statement)
            try:
                yield cursor.execute
            finally:
                for statement in triggers:
                    cursor.execute(statement)
        return
    with pg.connect() as conn:
        for table in TABLES:
            conn.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
        try:
            yield conn.execute
        finally:
            for table in TABLES:
                conn.execute(f"ALTER TABLE {table} ENABLE ALWAYS TRIGGER {table}_no_update_delete")
                conn.execute(f"ALTER TABLE {table} ENABLE ALWAYS TRIGGER {table}_no_truncate")


def _for_backend(params: Sequence[object]) -> list[Any]:
    values: list[Any] = list(params)
    if connection.vendor == "sqlite":  # SQLite keeps UUIDs as 32 hex digits
        values = [
            v.hex if hasattr(v, "hex") and not isinstance(v, str | int) else v for v in values
        ]
        values = [v.replace("-", "") if isinstance(v, str) and len(v) == 36 else v for v in values]
    return values


def tamper(statements: Sequence[str], params: Sequence[object] = ()) -> None:
    """Run each statement with `params` (the same for all), triggers lifted."""
    tamper_each([(statement, params) for statement in statements])


def tamper_each(steps: Sequence[tuple[str, Sequence[object]]]) -> None:
    """Run each statement with its own parameters, triggers lifted once for all."""
    with triggers_lifted() as run:
        for statement, params in steps:
            run(statement, _for_backend(params) if "%s" in statement else None)
