"""Rotations that reach the provider, end to end through the API and the jobs, against a
stub of OpenAI's Administration API: an admin credential onboarded and never usable by a
token, a rotation without a secret whose new key the provider creates, an interrupted
attempt's key retired, refusals that leave the current version, the old key retired
upstream after its grace period, and a due key rotated by the schedule."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from audit.models import AuditEvent
from kms import jobs
from kms.actions import retirement
from kms.models import KeyVersion, ProviderKey, Rotation, Stage
from stores.registry import get_store
from tests.admin_stubs.openai import ADMIN_KEY, FORBIDDEN, PROJECT, RATE_LIMITED, OpenAIAdminStub
from tests.kms.helpers import onboard
from tests.kms.test_canary import assert_absent
from tests.provider_stub import Reply

pytestmark = pytest.mark.django_db


def _rotate(world: Any, key: ProviderKey, **body: Any) -> dict[str, Any]:
    url = f"/api/v1/tenants/{key.tenant.slug}/keys/{key.pk}/rotations"
    response = world.actors.as_("alice").post(url, body, format="json")
    assert response.status_code == 202, response.content
    return dict(response.json())


def _accounts(stub: OpenAIAdminStub, rotation: str) -> list[str]:
    return [a["id"] for a in stub.project.accounts.values() if a["name"] == f"keyward-{rotation}"]


def test_an_admin_credential_is_checked_stored_and_never_given_to_a_service(linked):
    world, key, admin, stub = linked
    assert admin["kind"] == "admin" and admin["upstream"] == {"project_id": PROJECT}
    assert ADMIN_KEY not in str(admin)
    assert any(s.path.endswith("/service_accounts") for s in stub.seen)  # the check listed
    assert str(key.admin_credential_id) == admin["id"]
    asked = world.issue(key=admin["id"])
    assert asked.status_code == 404  # no token can name an admin credential
    assert world.issue(key="admin").status_code == 404


def test_a_wrong_admin_credential_is_refused_and_nothing_is_stored(world, admin_api):
    response = onboard(
        world.actors.as_("alice"),
        world.actors.tenant_a.slug,
        "sk-admin-" + "wrong" * 8,
        kind="admin",
        upstream={"project_id": PROJECT},
    )
    assert response.status_code == 422
    assert not ProviderKey.objects.filter(kind="admin").exists()


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"kind": "admin", "upstream": {}}, "upstream"),
        ({"kind": "admin", "upstream": {"project_id": PROJECT, "other": "x"}}, "upstream"),
        ({"kind": "admin", "provider": "mistral", "upstream": {"x": "y"}}, "kind"),
        ({"upstream": {"project_id": PROJECT}}, "upstream"),
    ],
)
def test_bad_admin_credentials_are_refused(world, admin_api, fields, named):
    body = {"secret": ADMIN_KEY, **fields}
    if body.get("provider") == "mistral":
        body["secret"] = "m" * 32
    response = onboard(world.actors.as_("alice"), world.actors.tenant_a.slug, **body)
    assert response.status_code == 400, response.content
    assert named in response.json()["error"]["fields"]
    assert ProviderKey.objects.count() == 2  # the world's two keys


def test_a_key_can_only_name_an_admin_credential_of_its_tenant_and_provider(linked):
    world, key, admin, _ = linked
    alice = world.actors.as_("alice")
    elsewhere = onboard(alice, world.actors.tenant_b.slug, admin_credential=admin["id"])
    assert elsewhere.status_code == 400
    not_admin = onboard(alice, world.actors.tenant_a.slug, admin_credential=str(key.pk))
    assert not_admin.status_code == 400


def test_the_provider_creates_the_new_key_and_the_old_one_is_retired_upstream(linked, caplog):
    caplog.set_level("DEBUG")
    world, key, _, stub = linked
    first = _rotate(world, key, grace_period_seconds=60)
    assert first["mode"] == "automated" and first["state"] == "creating"
    assert jobs.advance_rotation(first["id"]).state == "retiring"
    [account] = _accounts(stub, first["id"])
    current = KeyVersion.objects.get(key=key, stage=Stage.CURRENT)
    assert current.upstream_id == account
    minted = get_store(key.store).get(key.store_path, current.version)
    assert minted.startswith("sk-svcacct-")
    hand_made = KeyVersion.objects.get(key=key, version=1)
    later = timezone.now() + timedelta(seconds=61)
    assert retirement.do_retire_version(hand_made.pk, actor=jobs.JOBS, now=later)
    assert not [k for k in stub.project.keys.values() if k["owner"]["type"] == "user"]
    second = _rotate(world, key, grace_period_seconds=0)
    jobs.advance_rotation(second["id"])
    retirement.do_retire_version(current.pk, actor=jobs.JOBS, now=later)
    assert account not in stub.project.accounts  # retired at OpenAI with its version
    assert Rotation.objects.get(pk=first["id"]).state == "completed"
    events = str(list(AuditEvent.objects.values_list("details", flat=True)))
    shown = world.actors.as_("alice").get(f"/api/v1/tenants/{key.tenant.slug}/keys").content
    for secret in (ADMIN_KEY, minted):
        assert_absent(secret, events, "audit events")
        assert_absent(secret, caplog.text, "the logs")
        assert_absent(secret, shown.decode(), "the API's answers")


def test_an_interrupted_attempts_key_is_retired_before_a_new_one_is_made(linked):
    world, key, _, stub = linked
    rotation = _rotate(world, key)
    orphan, _, _ = stub.add_account(f"keyward-{rotation['id']}")
    jobs.advance_rotation(rotation["id"])
    accounts = _accounts(stub, rotation["id"])
    assert len(accounts) == 1 and orphan not in accounts


def test_a_provider_refusing_to_create_fails_the_rotation_and_changes_nothing(linked):
    world, key, _, stub = linked
    rotation = _rotate(world, key)
    stub.reply = Reply(403, FORBIDDEN)
    assert jobs.advance_rotation(rotation["id"]).state == "failed"
    failed = Rotation.objects.get(pk=rotation["id"])
    assert "insufficient permissions" in failed.failure
    assert list(KeyVersion.objects.filter(key=key).values_list("stage", flat=True)) == ["current"]
    assert AuditEvent.objects.filter(action="key.rotation_failed").count() == 1


def test_a_new_key_the_provider_itself_refuses_is_retired_there_and_destroyed(
    linked, provider_stub
):
    world, key, _, stub = linked
    rotation = _rotate(world, key)
    provider_stub.answer(401, {"error": {"message": "Incorrect API key provided"}})
    assert jobs.advance_rotation(rotation["id"]).state == "failed"
    assert _accounts(stub, rotation["id"]) == []  # retired at OpenAI
    stages = sorted(KeyVersion.objects.filter(key=key).values_list("stage", flat=True))
    assert stages == ["current", "destroyed"]
    key.refresh_from_db()
    assert key.current_version == 1


def test_a_rate_limit_waits_and_the_rotation_goes_on_later(linked):
    world, key, _, stub = linked
    rotation = _rotate(world, key)
    stub.reply = Reply(429, RATE_LIMITED, {"Retry-After": "9"})
    advanced = jobs.advance_rotation(rotation["id"])
    assert advanced.state == "creating" and advanced.retry_after == 9
    assert _accounts(stub, rotation["id"]) == []
    early = jobs.advance_rotation(rotation["id"])  # before the provider's Retry-After
    assert early.state == "creating" and 0 < (early.retry_after or 0) <= 9
    Rotation.objects.filter(pk=rotation["id"]).update(
        not_before=timezone.now() + timedelta(minutes=10)
    )
    assert jobs.stalled_rotations(timezone.now() + timedelta(seconds=61)) == []
    Rotation.objects.filter(pk=rotation["id"]).update(not_before=None)  # the wait is over
    assert jobs.advance_rotation(rotation["id"]).state == "retiring"


def test_a_cancelled_automated_rotation_leaves_nothing_at_the_provider(linked, provider_stub):
    world, key, _, stub = linked
    rotation = _rotate(world, key)
    provider_stub.answer(429, {"error": {"message": "slow down"}})  # the test step waits
    assert jobs.advance_rotation(rotation["id"]).state == "testing"
    assert len(_accounts(stub, rotation["id"])) == 1
    url = f"/api/v1/tenants/{key.tenant.slug}/keys/{key.pk}/rotations/{rotation['id']}/cancel"
    assert world.actors.as_("alice").post(url).status_code == 200
    assert _accounts(stub, rotation["id"]) == []
    assert KeyVersion.objects.filter(key=key, stage=Stage.PENDING).count() == 0


def test_a_due_key_is_rotated_by_the_schedule_once(linked):
    world, key, _, _ = linked
    ProviderKey.objects.filter(pk=key.pk).update(rotation_due_at=timezone.now() - timedelta(days=1))
    assert jobs.flag_rotation_due() == 1
    assert jobs.flag_rotation_due() == 0  # the due date and the day name the same rotation
    rotation = Rotation.objects.get(key=key)
    assert rotation.mode == "automated" and rotation.client_request_token.startswith("scheduled-")
    assert not AuditEvent.objects.filter(action="key.rotation_due", target=f"key:{key.pk}")
    manual = world.key_a
    ProviderKey.objects.filter(pk=manual.pk).update(
        rotation_due_at=timezone.now() - timedelta(days=1)
    )
    jobs.flag_rotation_due()
    assert AuditEvent.objects.filter(action="key.rotation_due", target=f"key:{manual.pk}")


def test_the_schedule_runs_again_once_the_provider_made_the_key(linked, provider_stub):
    _, key, _, stub = linked
    ProviderKey.objects.filter(pk=key.pk).update(rotation_due_at=timezone.now() - timedelta(days=1))
    assert jobs.flag_rotation_due() == 1
    rotation = Rotation.objects.get(key=key)
    provider_stub.answer(429, {"error": {"message": "slow down"}})  # created, not yet tested
    assert jobs.advance_rotation(rotation.pk).state == "testing"
    assert jobs.flag_rotation_due() == 0  # the due date and the day name the same rotation
    assert Rotation.objects.filter(key=key).count() == 1
    assert len(_accounts(stub, str(rotation.pk))) == 1


def test_a_failed_scheduled_rotation_reminds_a_person(linked):
    _, key, _, stub = linked
    due = timezone.now() - timedelta(days=1)
    ProviderKey.objects.filter(pk=key.pk).update(rotation_due_at=due)
    jobs.flag_rotation_due()
    stub.reply = Reply(403, FORBIDDEN)
    assert jobs.advance_rotation(Rotation.objects.get(key=key).pk).state == "failed"
    assert jobs.flag_rotation_due() == 1
    assert AuditEvent.objects.filter(action="key.rotation_due", target=f"key:{key.pk}").exists()
    assert Rotation.objects.filter(key=key).count() == 1


def test_a_worker_holding_the_create_step_keeps_a_second_one_out(linked):
    world, key, _, stub = linked
    rotation = _rotate(world, key)
    Rotation.objects.filter(pk=rotation["id"]).update(
        not_before=timezone.now() + timedelta(seconds=30)
    )
    held = jobs.advance_rotation(rotation["id"])
    assert held.state == "creating" and 0 < (held.retry_after or 0) <= 30
    assert _accounts(stub, rotation["id"]) == []


def test_revoking_mid_rotation_retires_at_the_provider_what_keyward_made(linked, provider_stub):
    world, key, _, stub = linked
    rotation = _rotate(world, key)
    provider_stub.answer(429, {"error": {"message": "slow down"}})  # stops at the test step
    jobs.advance_rotation(rotation["id"])
    assert len(_accounts(stub, rotation["id"])) == 1
    retirement.do_revoke_key(key, actor=jobs.JOBS)
    assert _accounts(stub, rotation["id"]) == []
    assert Rotation.objects.get(pk=rotation["id"]).state == "cancelled"


def test_revoking_a_retiring_rotations_key_ends_the_rotation_and_the_key_upstream(linked):
    world, key, _, stub = linked
    rotation = _rotate(world, key)
    assert jobs.advance_rotation(rotation["id"]).state == "retiring"
    retirement.do_revoke_key(key, actor=jobs.JOBS)
    assert Rotation.objects.get(pk=rotation["id"]).state == "cancelled"
    assert _accounts(stub, rotation["id"]) == []


def test_an_admin_credential_is_not_rotated_by_another(linked):
    world, _, admin, _ = linked
    response = onboard(
        world.actors.as_("alice"),
        world.actors.tenant_a.slug,
        ADMIN_KEY[:-1] + "Z",
        kind="admin",
        upstream={"project_id": PROJECT},
        admin_credential=admin["id"],
    )
    assert response.status_code == 400
    assert "admin_credential" in response.json()["error"]["fields"]


def test_an_existing_key_is_given_an_admin_credential_or_none(linked):
    world, _, admin, _ = linked
    alice = world.actors.as_("alice")
    key = world.key_a
    url = f"/api/v1/tenants/{key.tenant.slug}/keys/{key.pk}"
    for wrong in (str(key.pk), "not-a-uuid", str(world.key_b.pk)):
        assert alice.patch(url, {"admin_credential": wrong}, format="json").status_code == 400
    assert (
        world.actors.as_("carol")
        .patch(url, {"admin_credential": admin["id"]}, format="json")
        .status_code
        == 403
    )
    linked_now = alice.patch(url, {"admin_credential": admin["id"]}, format="json")
    assert linked_now.status_code == 200 and linked_now.json()["admin_credential"] == admin["id"]
    event = AuditEvent.objects.get(action="key.admin_credential_set", target=f"key:{key.pk}")
    assert event.details == {"admin_credential": admin["id"], "previous": None}
    cleared = alice.patch(url, {"admin_credential": None}, format="json")
    assert cleared.status_code == 200 and cleared.json()["admin_credential"] is None
