"""Staged rotations (POST .../keys/{id}/rotations): a pending version tested with the
provider, promoted to current, the previous one retired after its grace period; idempotent
by client request token, one running rotation per key, cancellable until promotion, and
refusals that change nothing. On both secret-store backends."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from audit.models import AuditEvent
from kms import jobs
from kms.actions import keys, retirement
from kms.models import KeyVersion, ProviderKey, Rotation, ScopedToken, Stage
from stores.registry import get_store
from tests import provider_stub as docs
from tests.factories import client
from tests.kms.helpers import openai_key
from tests.kms.world import SYSTEM

pytestmark = pytest.mark.django_db


@pytest.fixture
def rig(world, default_store, provider_stub):
    """The world's key A on the store under test (tenant A, granted to the principal)."""
    secret = openai_key()
    key = keys.do_onboard_key(
        world.actors.tenant_a,
        keys.KeyInput("openai", "rotating", secret),
        validate=False,
        actor=SYSTEM,
    )
    return world, key, secret, provider_stub


def _url(key: ProviderKey, tail: str = "") -> str:
    return f"/api/v1/tenants/{key.tenant.slug}/keys/{key.pk}/rotations{tail}"


def _start(api: Any, key: ProviderKey, secret: str, **body: Any) -> Any:
    return api.post(_url(key), {"secret": secret, **body}, format="json")


def _released(world: Any, key: ProviderKey) -> str:
    token = world.token(key=str(key.pk))
    response = client(token).post("/api/v1/exchange")
    assert response.status_code == 200, response.content
    return str(response.json()["api_key"])


def _versions(key: ProviderKey) -> dict[int, str]:
    return dict(KeyVersion.objects.filter(key=key).values_list("version", "stage"))


def _stored(key: ProviderKey) -> dict[int, bool]:
    """Each store version of the key, and whether it is destroyed."""
    return {v.version: v.destroyed for v in get_store(key.store).versions(key.store_path)}


def test_a_rotation_tests_promotes_and_retires_without_a_moment_without_a_current_key(rig):
    world, key, old, stub = rig
    alice, new = world.actors.as_("alice"), openai_key()
    response = _start(alice, key, new, grace_period_seconds=600, client_request_token="r-1")
    assert response.status_code == 202, response.content
    body = response.json()
    assert new not in response.content.decode()
    assert body["state"] == "testing" and body["pending_version"] == 2
    steps = {s["step"]: s["state"] for s in body["steps"]}
    assert steps == {
        "create_pending": "done",
        "set_upstream": "skipped",
        "test": "waiting",
        "promote": "waiting",
        "retire_previous": "waiting",
    }
    assert _versions(key) == {1: Stage.CURRENT, 2: Stage.PENDING}
    assert _released(world, key) == old  # a pending version is never released
    stub.seen.clear()
    assert jobs.advance_rotation(body["id"]).state == "retiring"
    assert stub.seen[-1].headers["authorization"] == f"Bearer {new}"
    assert _versions(key) == {1: Stage.PREVIOUS, 2: Stage.CURRENT}
    assert _released(world, key) == new
    assert world.api(world.token(key=str(key.pk))).post("/api/v1/exchange").status_code == 200
    previous = KeyVersion.objects.get(key=key, version=1)
    assert retirement.do_retire_version(
        previous.pk, actor=jobs.JOBS, now=timezone.now() + timedelta(seconds=601)
    )
    rotation = Rotation.objects.get(pk=body["id"])
    assert rotation.state == "completed" and rotation.finished_at is not None
    assert {s["step"]: s["state"] for s in rotation.steps}["retire_previous"] == "done"
    assert _stored(key) == {1: True, 2: False}
    actions = list(
        AuditEvent.objects.filter(target=f"key:{key.pk}", action__startswith="key.rotat")
        .order_by("occurred_at", "id")
        .values_list("action", flat=True)
    )
    assert actions == [
        "key.rotation_started",
        "key.rotation_tested",
        "key.rotated",
        "key.rotation_completed",
    ]
    every = AuditEvent.objects.filter(target=f"key:{key.pk}")
    assert all(new not in str(e.details) and old not in str(e.details) for e in every)
    shown = alice.get(_url(key, f"/{body['id']}"))
    assert shown.status_code == 200 and shown.json()["state"] == "completed"
    assert alice.get(_url(key)).json()["results"][0]["id"] == body["id"]


def test_the_same_request_token_gives_the_same_rotation_once(rig):
    world, key, _, _ = rig
    alice, new = world.actors.as_("alice"), openai_key()
    first = _start(alice, key, new, client_request_token="same-request")
    again = _start(alice, key, new, client_request_token="same-request")
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]
    assert Rotation.objects.filter(key=key).count() == 1
    assert _versions(key) == {1: Stage.CURRENT, 2: Stage.PENDING}
    assert AuditEvent.objects.filter(action="key.rotation_started").count() == 1
    other = _start(alice, key, openai_key(), client_request_token="same-request")
    assert other.status_code == 409
    assert other.json()["error"]["code"] == "client_request_token_reused"
    assert _versions(key) == {1: Stage.CURRENT, 2: Stage.PENDING}


def test_a_second_rotation_while_one_runs_is_refused_and_stores_nothing(rig):
    world, key, _, _ = rig
    alice = world.actors.as_("alice")
    assert _start(alice, key, openai_key()).status_code == 202
    stored = _stored(key)
    second = _start(alice, key, openai_key())
    assert second.status_code == 409 and second.json()["error"]["code"] == "rotation_in_progress"
    assert _stored(key) == stored
    assert Rotation.objects.filter(key=key).count() == 1


def test_a_secret_the_provider_refuses_leaves_the_current_version_and_is_destroyed(rig):
    world, key, old, stub = rig
    body = _start(world.actors.as_("alice"), key, openai_key()).json()
    stub.answer(401, docs.OPENAI_INVALID)
    assert jobs.advance_rotation(body["id"]).state == "failed"
    rotation = Rotation.objects.get(pk=body["id"])
    assert "Incorrect API key provided" in rotation.failure
    assert {s["step"]: s["state"] for s in rotation.steps}["test"] == "failed"
    assert _versions(key) == {1: Stage.CURRENT, 2: Stage.DESTROYED}
    assert _stored(key) == {1: False, 2: True}
    key.refresh_from_db()
    assert key.current_version == 1 and key.status == "active"
    assert _released(world, key) == old
    tested = AuditEvent.objects.get(action="key.rotation_tested")
    assert tested.outcome == "denied" and tested.details["result"] == "invalid"
    stub.answer(200)
    assert _start(world.actors.as_("alice"), key, openai_key()).status_code == 202


def test_a_transient_provider_answer_waits_and_changes_nothing(rig):
    world, key, _, stub = rig
    body = _start(world.actors.as_("alice"), key, openai_key()).json()
    stub.answer(429, docs.OPENAI_RATE, headers={"Retry-After": "7"})
    advanced = jobs.advance_rotation(body["id"])
    assert advanced.state == "testing" and advanced.retry_after == 7
    rotation = Rotation.objects.get(pk=body["id"])
    assert {s["step"]: s.get("detail", "") for s in rotation.steps}["test"].startswith("waiting")
    assert _versions(key) == {1: Stage.CURRENT, 2: Stage.PENDING}
    stub.answer(200)
    assert jobs.advance_rotation(body["id"]).state == "retiring"


def test_a_rotation_is_cancelled_until_its_version_is_current(rig):
    world, key, old, _ = rig
    alice = world.actors.as_("alice")
    body = _start(alice, key, openai_key()).json()
    cancelled = alice.post(_url(key, f"/{body['id']}/cancel"))
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    assert _versions(key) == {1: Stage.CURRENT, 2: Stage.DESTROYED}
    assert _stored(key) == {1: False, 2: True}
    assert jobs.advance_rotation(body["id"]).state == "cancelled"  # a late message: nothing
    assert _released(world, key) == old
    assert alice.post(_url(key, f"/{body['id']}/cancel")).status_code == 200  # idempotent
    done = _start(alice, key, openai_key()).json()
    jobs.advance_rotation(done["id"])
    late = alice.post(_url(key, f"/{done['id']}/cancel"))
    assert late.status_code == 409 and late.json()["error"]["code"] == "rotation_not_cancellable"
    assert AuditEvent.objects.filter(action="key.rotation_cancelled").count() == 1


def test_revoking_the_key_cancels_its_running_rotation(rig):
    world, key, _, _ = rig
    body = _start(world.actors.as_("alice"), key, openai_key()).json()
    retirement.do_revoke_key(key, actor=jobs.JOBS)
    rotation = Rotation.objects.get(pk=body["id"])
    assert rotation.state == "cancelled" and rotation.failure == "The key was revoked."
    assert jobs.advance_rotation(body["id"]).state == "cancelled"
    assert all(destroyed for destroyed in _stored(key).values())


def test_validate_false_skips_the_test_step(rig):
    world, key, _, stub = rig
    body = world.actors.as_("alice").post(
        _url(key) + "?validate=false", {"secret": openai_key()}, format="json"
    )
    assert body.status_code == 202
    stub.seen.clear()
    assert jobs.advance_rotation(body.json()["id"]).state == "retiring"
    assert stub.seen == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "secret"),
        ({"secret": ""}, "secret"),
        ({"secret": "SECRET", "grace_period_seconds": -1}, "grace_period_seconds"),
        ({"secret": "SECRET", "grace_period_seconds": 10**9}, "grace_period_seconds"),
        ({"secret": "SECRET", "grace_period_seconds": "60"}, "grace_period_seconds"),
        ({"secret": "SECRET", "client_request_token": "has space"}, "client_request_token"),
        ({"secret": "SECRET", "client_request_token": "x" * 65}, "client_request_token"),
        ({"secret": "SECRET", "client_request_token": "nul\x00"}, "client_request_token"),
        ({"secret": "SECRET", "mode": "automated"}, "mode"),
        ({"secret": "two words"}, "secret"),
    ],
)
def test_bad_input_is_refused_and_changes_nothing(rig, body, field):
    world, key, _, _ = rig
    sent = {name: (openai_key() if v == "SECRET" else v) for name, v in body.items()}
    stored = _stored(key)
    response = world.actors.as_("alice").post(_url(key), sent, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json()["error"].get("fields", {})
    assert Rotation.objects.count() == 0 and _stored(key) == stored


def test_who_may_start_read_and_cancel_rotations(rig):
    world, key, _, _ = rig
    other = keys.do_onboard_key(
        world.actors.tenant_b,
        keys.KeyInput("openai", "other", openai_key()),
        validate=False,
        actor=jobs.JOBS,
    )
    started = _start(world.actors.as_("alice"), key, openai_key()).json()
    carol, dave, bob = (world.actors.as_(n) for n in ("carol", "dave", "bob"))
    assert carol.get(_url(key, f"/{started['id']}")).status_code == 200
    assert _start(carol, key, openai_key()).status_code == 403
    assert carol.post(_url(key, f"/{started['id']}/cancel")).status_code == 403
    assert dave.get(_url(other)).status_code == 404
    assert _start(bob, other, openai_key()).status_code == 404
    assert bob.get(_url(key, f"/{started['id']}")).status_code == 200
    wrong_key = f"/api/v1/tenants/{other.tenant.slug}/keys/{other.pk}/rotations/{started['id']}"
    assert world.actors.as_("alice").get(wrong_key).status_code == 404
    assert Rotation.objects.count() == 1
    assert ScopedToken.objects.count() == 0


def test_a_stalled_rotation_and_a_left_pending_version_are_taken_up_again(rig):
    world, key, _, _ = rig
    body = _start(world.actors.as_("alice"), key, openai_key()).json()
    assert jobs.stalled_rotations() == []
    later = timezone.now() + timedelta(minutes=2)
    assert jobs.stalled_rotations(later) == [body["id"]]
    Rotation.objects.filter(pk=body["id"]).update(state="cancelled")  # ended, version left
    assert jobs.stalled_rotations() == [body["id"]]
    assert jobs.advance_rotation(body["id"]).state == "cancelled"
    assert jobs.stalled_rotations() == []
    assert _versions(key)[2] == Stage.DESTROYED


def test_a_one_step_rotation_waits_for_a_staged_one(rig):
    world, key, _, _ = rig
    alice = world.actors.as_("alice")
    staged = _start(alice, key, openai_key()).json()
    url = f"/api/v1/tenants/{key.tenant.slug}/keys/{key.pk}/rotate?validate=false"
    now = alice.post(url, {"secret": openai_key()}, format="json")
    assert now.status_code == 409 and now.json()["error"]["code"] == "rotation_in_progress"
    jobs.advance_rotation(staged["id"])
    assert alice.post(url, {"secret": openai_key()}, format="json").status_code == 200
