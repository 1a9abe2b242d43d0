"""Direct PostgreSQL connections for tests that act as another role than the application."""

from __future__ import annotations

import os
from typing import Any

import psycopg
from django.db import connection

SUPERUSER_URL = os.environ.get(
    "KEYWARD_TEST_PG_SUPERUSER_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
OWNER_ROLE = "keyward_owner"
APP_ROLE = "keyward_app"


def _dsn(dbname: str, user: str | None = None) -> str:
    info = psycopg.conninfo.conninfo_to_dict(SUPERUSER_URL)
    info["dbname"] = dbname
    if user:
        info["user"] = user
    return psycopg.conninfo.make_conninfo(**{k: str(v) for k, v in info.items() if v is not None})


def ensure_roles() -> None:
    """The two roles of README 'Database roles': the migration owner and the application."""
    with psycopg.connect(SUPERUSER_URL, autocommit=True) as conn:
        for role, options in ((OWNER_ROLE, "LOGIN CREATEDB"), (APP_ROLE, "LOGIN")):
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role]).fetchone()
            if not exists:
                conn.execute(f'CREATE ROLE "{role}" {options}')


def test_db_name() -> str:
    return str(connection.settings_dict["NAME"])


def database_url() -> str:
    """The test database as a KEYWARD_DATABASE_URL, for a subprocess (PostgreSQL as the
    application role, or the SQLite test file)."""
    if connection.vendor == "sqlite":
        return f"sqlite:///{test_db_name()}"
    return f"postgres://{APP_ROLE}@127.0.0.1:5432/{test_db_name()}"


def connect(user: str | None = None, **kwargs: Any) -> psycopg.Connection[Any]:
    """A new connection to the test database as `user` (the superuser by default)."""
    return psycopg.connect(_dsn(test_db_name(), user), **kwargs)
