from __future__ import annotations

from collections.abc import Iterator

import pytest

# The OpenID provider of the single sign-on tests, and Keyward pointed at it.
from tests.console.oidc import oidc_console, oidc_provider  # noqa: F401


@pytest.fixture(autouse=True)
def _live_server_helper(request: pytest.FixtureRequest) -> Iterator[None]:
    """pytest-django's own helper gives a live_server test `transactional_db`, whose flush
    cannot empty the append-only audit tables; these tests commit through `committed_db`,
    which empties them as the database owner, and otherwise do as pytest-django does."""
    if "live_server" not in request.fixturenames:
        yield
        return
    request.getfixturevalue("committed_db")
    server = request.getfixturevalue("live_server")
    server._live_server_modified_settings.enable()
    try:
        yield
    finally:
        server._live_server_modified_settings.disable()
