from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import global_settings, settings
from django.db import connection, connections

from tests import pg
from tests.audit.tamper import triggers_lifted
from tests.factories import Actors, make_actors

USES_POSTGRES = os.environ.get("KEYWARD_DATABASE_URL", "").startswith(("postgres", "postgresql"))


def pytest_configure(config: pytest.Config) -> None:
    if USES_POSTGRES:
        pg.ensure_roles()
    # Tests hash passwords with a fast hasher (Django's own advice); the deployment keeps
    # Django's default list, which still checks every hash the tests' processes make
    # (tests/test_settings.py holds it to that).
    fast = "django.contrib.auth.hashers.MD5PasswordHasher"
    settings.PASSWORD_HASHERS = [fast, *global_settings.PASSWORD_HASHERS]


@pytest.fixture(autouse=True)
def _own_checkpoint_archive(settings: Any, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Each test keeps its signed checkpoints apart (created on the first write): the
    archive lives outside the database, so resetting the database does not empty it."""
    settings.AUDIT_CHECKPOINT_DIR = str(
        tmp_path_factory.getbasetemp() / f"checkpoints-{os.urandom(6).hex()}"
    )


# The fixtures through which a test reaches a database (committed_db through
# django_db_setup): a test with none of them and no django_db mark cannot touch one in this
# process (pytest-django blocks it), and the tests that start processes of their own either
# strip KEYWARD_* from their environment or ask for committed_db.
DATABASE_FIXTURES = frozenset({"db", "transactional_db", "django_db_setup"})


def uses_database(item: pytest.Item) -> bool:
    """Whether the test can reach the database of this run."""
    names = set(getattr(item, "fixturenames", ()))
    return bool(item.get_closest_marker("django_db") or names & DATABASE_FIXTURES)


def runs_again(item: pytest.Item) -> bool:
    """Whether a later backend of the same run runs the test again: only if it can reach
    the database, and not in a browser (what Chromium sees is the same on both; the
    console's behaviour on each database is what tests/console's other tests check)."""
    return uses_database(item) and not item.get_closest_marker("browser")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("KEYWARD_TEST_DATABASE_ONLY") == "1":
        # A later backend of the same run: the rest has just passed on the first.
        config.hook.pytest_deselected(items=[item for item in items if not runs_again(item)])
        items[:] = [item for item in items if runs_again(item)]
    if USES_POSTGRES:
        return
    skip = pytest.mark.skip(reason="PostgreSQL only; this run uses the embedded SQLite")
    for item in items:
        if item.get_closest_marker("postgresql"):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def django_db_setup(
    request: pytest.FixtureRequest,
    django_test_environment: None,
    django_db_blocker: Any,
    django_db_modify_db_settings: None,
) -> Iterator[None]:
    """Create the test database and migrate it as the owner role, then run every test as the
    application role. Always sets up `default`, so tests that commit for real (without the
    `db` fixture) find it too."""
    from django.test.utils import setup_databases, teardown_databases

    with django_db_blocker.unblock():
        config = setup_databases(verbosity=0, interactive=False, aliases={"default"})  # type: ignore[arg-type]
    db = connections["default"]
    owner = db.settings_dict["USER"]
    switch = USES_POSTGRES and bool(settings.DB_APP_ROLE)
    if switch:
        with django_db_blocker.unblock():
            db.close()
        db.settings_dict["USER"] = settings.DB_APP_ROLE
    try:
        yield
    finally:
        with django_db_blocker.unblock():
            connections.close_all()
            db.settings_dict["USER"] = owner
            teardown_databases(config, verbosity=0)


def _reset_committed_state() -> None:
    """Empty every application table, the append-only one included, as the superuser."""
    tables = [
        t
        for t in connection.introspection.django_table_names(only_existing=True)
        if t not in ("django_migrations", "django_content_type", "auth_permission")
    ]
    connections.close_all()
    with triggers_lifted() as run:
        if connection.vendor == "sqlite":  # no TRUNCATE on SQLite
            run("PRAGMA foreign_keys = OFF", None)
            for table in tables:
                run(f'DELETE FROM "{table}"', None)
            run("PRAGMA foreign_keys = ON", None)
        else:
            run("TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " CASCADE", None)
    connections.close_all()


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


def _served(server: Any) -> Iterator[Any]:
    """A server the session started, stopped when the session ends."""
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def bao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The OpenBao (or external Vault) every vault-backend test talks to."""
    from tests import bao as bao_servers

    external = bao_servers.external_server()
    if external is not None:
        yield external
        return
    yield from _served(bao_servers.start_dev_server(tmp_path_factory.mktemp("bao-dev")))


@pytest.fixture(scope="session")
def bao_second(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A second OpenBao dev server: the secret store of another region."""
    from tests import bao as bao_servers

    yield from _served(bao_servers.start_dev_server(tmp_path_factory.mktemp("bao-second")))


@pytest.fixture
def two_regions(bao: Any, bao_second: Any, settings: Any) -> tuple[Any, Any, str]:
    """Two stores on two servers standing for two regions: `default` on `bao` in region
    eu, `us` on `bao_second` in region us; returns the servers and this test's path prefix."""
    prefix = "keyward-test-" + os.urandom(4).hex()
    settings.SECRET_STORES = {
        "default": bao.store_config(path_prefix=prefix, region="eu"),
        "us": bao_second.store_config(path_prefix=prefix, region="us"),
    }
    return bao, bao_second, prefix


@pytest.fixture(scope="session")
def bao_raft(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A raft-backed OpenBao that tests may seal and unseal."""
    from tests import bao as bao_servers

    yield from _served(bao_servers.start_raft_server(tmp_path_factory.mktemp("bao-raft")))


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The S3-compatible service (moto on loopback, or the external one) every S3 test
    talks to."""
    # Imported here, as the OpenBao helpers are: boto3 is loaded only by runs that use S3.
    from tests import s3 as s3_servers

    external = s3_servers.external_server()
    if external is not None:
        yield external
        return
    server = s3_servers.start_moto_server(tmp_path_factory.mktemp("s3"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["local", "vault"])
def store_config(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Settings for the `default` store, once per backend."""
    if request.param == "local":
        return {"backend": "local"}
    server = request.getfixturevalue("bao")
    prefix = "keyward-test-" + os.urandom(4).hex()
    return dict(server.store_config(path_prefix=prefix))


@pytest.fixture
def default_store(store_config: dict[str, Any], settings: Any) -> Any:
    from stores.registry import get_store

    settings.SECRET_STORES = {"default": store_config}
    return get_store("default")


@pytest.fixture
def provider_stub(settings: Any) -> Iterator[Any]:
    """Every provider's default base URL points at one local stub server."""
    from kms.providers import ADAPTERS
    from tests.provider_stub import ProviderStub

    stub = ProviderStub()
    settings.PROVIDER_BASE_URLS = dict.fromkeys(ADAPTERS, stub.url)
    try:
        yield stub
    finally:
        stub.close()


@pytest.fixture
def admin_api(settings: Any) -> Iterator[Any]:
    """A stub of OpenAI's Administration API, where OpenAI admin credentials are sent."""
    from tests.admin_stubs.openai import OpenAIAdminStub

    stub = OpenAIAdminStub()
    settings.PROVIDER_ADMIN_BASE_URLS = {"openai": stub.base_url}
    try:
        yield stub
    finally:
        stub.close()


@pytest.fixture
def world(actors: Actors, settings: Any) -> Any:
    from tests.kms.world import make_world

    settings.SECRET_STORES = {"default": {"backend": "local"}}
    return make_world(actors)


@pytest.fixture
def committed_world(committed_actors: Actors, settings: Any) -> Any:
    from tests.kms.world import make_world

    settings.SECRET_STORES = {"default": {"backend": "local"}}
    return make_world(committed_actors)
