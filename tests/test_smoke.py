import pytest

from audit.models import AuditEvent
from tests.factories import client


def test_healthz_answers_without_credentials(db):
    response = client().get("/healthz")
    assert response.status_code == 200
    assert response["X-Request-ID"]


@pytest.mark.django_db
def test_alice_creates_a_tenant_and_it_is_audited(actors):
    response = actors.as_("alice").post(
        "/api/v1/tenants", {"slug": "acme", "name": "Acme"}, format="json"
    )
    assert response.status_code == 201, response.content
    assert AuditEvent.objects.filter(action="tenant.created", tenant="acme").count() == 1
