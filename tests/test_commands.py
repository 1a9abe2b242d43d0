"""Management commands: create_admin and audit_verify."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command

from audit.models import AuditEvent
from tenants.models import AdminToken, StaffRole
from tests.factories import client, make_tenant


def _create_admin(*args: str) -> str:
    out, err = io.StringIO(), io.StringIO()
    call_command("create_admin", *args, stdout=out, stderr=err)
    return out.getvalue().strip()


@pytest.mark.django_db
def test_create_admin_prints_a_working_token_once_and_audits():
    token = _create_admin("first-admin", "--role", "security_admin")
    assert token.startswith("kwa_")
    assert client(token).get("/api/v1/tenants").status_code == 200
    event = AuditEvent.objects.get(action="admin.created", target="user:first-admin")
    assert token not in repr(event.details)
    assert event.actor_type == "system"


@pytest.mark.django_db
def test_create_admin_updates_role_and_tenants_and_keeps_the_first_token():
    tenant = make_tenant()
    first = _create_admin("flip", "--role", "security_admin")
    second = _create_admin("flip", "--role", "auditor", "--tenant", tenant.slug)
    staff = StaffRole.objects.get(user__username="flip")
    assert (staff.role, staff.all_tenants) == ("auditor", False)
    assert list(staff.tenants.values_list("slug", flat=True)) == [tenant.slug]
    assert AdminToken.objects.filter(user__username="flip").count() == 2
    assert (
        client(first)
        .post("/api/v1/tenants", {"slug": "x1", "name": "X"}, format="json")
        .status_code
        == 403
    )
    listing = client(second).get("/api/v1/tenants").json()["results"]
    assert [t["slug"] for t in listing] == [tenant.slug]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "args",
    [
        ["bad user", "--role", "auditor"],
        ["ok", "--role", "auditor", "--tenant", "missing"],
        ["ok2", "--role", "root"],
    ],
)
def test_create_admin_refuses_bad_input_and_changes_nothing(args):
    events = AuditEvent.objects.count()
    with pytest.raises((CommandError, SystemExit)):
        _create_admin(*args)
    assert not StaffRole.objects.exists()
    assert AuditEvent.objects.count() == events
