from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection, connections

from tests import pg
from tests.factories import Actors, make_actors

USES_POSTGRES = os.environ.get("KEYWARD_DATABASE_URL", "").startswith(("postgres", "postgresql"))


def pytest_configure(config: pytest.Config) -> None:
    if USES_POSTGRES:
        pg.ensure_roles()


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup: Any, django_db_blocker: Any) -> Iterator[None]:
    """Migrate as the owner role, then run every test as the application role."""
    from django.conf import settings

    db = connections["default"]
    owner = db.settings_dict["USER"]
    if not USES_POSTGRES or not settings.DB_APP_ROLE:
        yield
        return
    with django_db_blocker.unblock():
        db.close()
    db.settings_dict["USER"] = settings.DB_APP_ROLE
    yield
    with django_db_blocker.unblock():
        for conn in connections.all():
            conn.close()
    db.settings_dict["USER"] = owner


def _reset_committed_state() -> None:
    """Empty every application table, the append-only one included, as the superuser."""
    tables = [
        t for t in connection.introspection.django_table_names(only_existing=True)
        if t not in ("django_migrations", "django_content_type", "auth_permission")
    ]  # fmt: skip
    connections.close_all()
    if connection.vendor != "postgresql":
        return
    with pg.connect() as conn:
        conn.execute("ALTER TABLE audit_event DISABLE TRIGGER USER")
        conn.execute("TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " CASCADE")
        conn.execute("ALTER TABLE audit_event ENABLE ALWAYS TRIGGER audit_event_no_update_delete")
        conn.execute("ALTER TABLE audit_event ENABLE ALWAYS TRIGGER audit_event_no_truncate")


@pytest.fixture
def committed_db(django_db_setup: Any, django_db_blocker: Any) -> Iterator[None]:
    """Real commits, visible to other threads and connections; emptied afterwards."""
    with django_db_blocker.unblock():
        try:
            yield
        finally:
            _reset_committed_state()


@pytest.fixture
def actors(db: None) -> Actors:
    return make_actors()


@pytest.fixture
def committed_actors(committed_db: None) -> Actors:
    return make_actors()
