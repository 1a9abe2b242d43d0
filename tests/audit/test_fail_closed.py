"""An action whose audit event cannot be written does not happen (rule 8)."""

from __future__ import annotations

import pytest

from audit.models import AuditEvent
from tenants.models import ServicePrincipal, Tenant
from tests import pg
from tests.factories import client as api_client
from tests.factories import make_admin, rand

# A failing audit insert is staged with a PostgreSQL trigger.
pytestmark = pytest.mark.postgresql

FAILING_TRIGGER = """
CREATE OR REPLACE FUNCTION audit_event_test_failure() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'audit storage failure'; END $$;
CREATE TRIGGER audit_event_test_failure BEFORE INSERT ON audit_event
    FOR EACH ROW WHEN (NEW.action <> 'access.denied' AND NEW.action <> 'auth.failed')
    EXECUTE FUNCTION audit_event_test_failure();
"""


@pytest.fixture
def failing_audit(committed_db):
    _, token = make_admin("security_admin")
    with pg.connect() as conn:
        conn.execute(FAILING_TRIGGER)
    try:
        yield api_client(token)
    finally:
        with pg.connect() as conn:
            conn.execute("DROP TRIGGER audit_event_test_failure ON audit_event")
            conn.execute("DROP FUNCTION audit_event_test_failure()")


def test_a_tenant_is_not_created_when_its_event_cannot_be_written(failing_audit):
    events = AuditEvent.objects.count()
    slug = rand("failed")
    response = failing_audit.post("/api/v1/tenants", {"slug": slug, "name": "X"}, format="json")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "audit_unavailable"
    assert response["Retry-After"]
    assert "audit storage failure" not in response.content.decode()
    assert not Tenant.objects.filter(slug=slug).exists()
    assert AuditEvent.objects.count() == events


def test_a_principal_is_not_created_and_no_secret_is_returned(failing_audit):
    name = rand("svc")
    response = failing_audit.post("/api/v1/principals", {"name": name}, format="json")
    assert response.status_code == 503
    assert "kwp_" not in response.content.decode()
    assert not ServicePrincipal.objects.filter(name=name).exists()


@pytest.fixture
def failing_after(committed_world):
    """The world first, then an audit table that refuses every event."""
    token = committed_world.token()
    with pg.connect() as conn:
        conn.execute(FAILING_TRIGGER)
    try:
        yield committed_world, token
    finally:
        with pg.connect() as conn:
            conn.execute("DROP TRIGGER audit_event_test_failure ON audit_event")
            conn.execute("DROP FUNCTION audit_event_test_failure()")


def test_one_statement_actions_fail_closed_when_their_event_cannot_be_written(failing_after):
    from kms.models import ScopedToken

    world, token = failing_after
    tokens_before = ScopedToken.objects.count()
    issued = world.issue()  # no transaction is open: token and event are one statement
    assert issued.status_code == 503, issued.content
    assert issued.json()["error"]["code"] == "audit_unavailable"
    assert ScopedToken.objects.count() == tokens_before
    released = api_client(token).post("/api/v1/exchange")
    assert released.status_code == 503, released.content
    assert world.secret_a not in released.content.decode()
