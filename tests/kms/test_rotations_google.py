"""A rotation that reaches Google end to end, against a local OAuth token endpoint and API
Keys API: a service account key file as the admin credential, each new key restricted to
the Generative Language API and read once its long-running operation is done, the old key
deleted when its grace period ends, and refusals that leave the current version."""

from __future__ import annotations

import json
import secrets
import string
from typing import Any

import pytest

from audit.models import AuditEvent
from kms.models import KeyVersion, ProviderKey, Rotation, Stage
from kms.providers.admin import admin_adapter
from stores.exceptions import SecretMissing
from stores.registry import get_store
from tests.admin_stubs.google import (
    PERMISSION_DENIED,
    RESOURCE_EXHAUSTED,
    TOKEN,
    UNAVAILABLE,
    GoogleStub,
    key_file,
)
from tests.admin_stubs.routed import body_of
from tests.kms.helpers import admin_api, assert_kept_secret, end_grace, onboard, rotate, settle
from tests.provider_stub import GEMINI_INVALID

pytestmark = pytest.mark.django_db
PROJECT = "keyward-test"
GEMINI_ONLY = {"apiTargets": [{"service": "generativelanguage.googleapis.com"}]}


@pytest.fixture
def google(settings: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    stub = GoogleStub()
    stub.polls_before_done = 2  # the operation is still running when first read
    # Google's polling pace, not what the adapter does: the stub answers at once.
    monkeypatch.setattr(admin_adapter("google"), "poll_interval", 0.0)
    yield from admin_api(settings, "google", stub, stub.api)


@pytest.fixture
def linked(world, default_store, provider_stub, google):
    """Tenant A's service account for its project, and a Gemini key made by hand."""
    alice, slug = world.actors.as_("alice"), world.actors.tenant_a.slug
    admin = onboard(
        alice,
        slug,
        key_file(google.token_uri),
        provider="google",
        kind="admin",
        upstream={"project_id": PROJECT},
    )
    assert admin.status_code == 201, admin.content
    hand_made = "AIza" + "".join(secrets.choice(string.ascii_letters) for _ in range(35))
    key = onboard(alice, slug, hand_made, provider="google", admin_credential=admin.json()["id"])
    assert key.status_code == 201, key.content
    return world, ProviderKey.objects.get(pk=key.json()["id"]), google, hand_made


def _created(stub: GoogleStub, rotation: str) -> list[str]:
    return [n for n, k in stub.keys.items() if k["displayName"] == f"keyward-{rotation}"]


def _current(key: ProviderKey) -> KeyVersion:
    return KeyVersion.objects.get(key=key, stage=Stage.CURRENT)


def test_google_creates_a_gemini_only_key_and_the_old_one_is_deleted(linked, caplog):
    caplog.set_level("DEBUG")
    world, key, stub, hand_made = linked
    first = rotate(world, key, grace_period_seconds=0)
    assert settle(first["id"]).state == "retiring"
    [asked] = [s for s in stub.requests("POST") if s.path.endswith("/keys")]
    assert asked.path == f"/v2/projects/{PROJECT}/locations/global/keys"
    assert body_of(asked) == {"displayName": f"keyward-{first['id']}", "restrictions": GEMINI_ONLY}
    [made] = _created(stub, first["id"])
    assert stub.keys[made]["restrictions"] == GEMINI_ONLY
    assert list(stub.polls.values()) == [2]  # followed until done
    current = _current(key)
    assert current.upstream_id == made
    assert get_store(key.store).get(key.store_path, current.version) == stub.strings[made]
    minted_first = stub.strings[made]
    assert end_grace() == 1
    # A key made by hand has no resource name to delete it by: said, not guessed.
    refused = AuditEvent.objects.get(action="key.upstream_retire_failed", target=f"key:{key.pk}")
    assert refused.details["version"] == 1
    second = rotate(world, key, grace_period_seconds=0)
    assert settle(second["id"]).state == "retiring"
    [made_second] = _created(stub, second["id"])
    assert made in stub.keys
    assert end_grace() == 1
    assert made not in stub.keys and made_second in stub.keys  # deleted at Google
    assert [s.path for s in stub.requests("DELETE")] == [f"/v2/{made}"]
    assert [r.state for r in Rotation.objects.order_by("created_at")] == ["completed"] * 2
    assert_kept_secret(
        world,
        key,
        [
            json.loads(key_file(stub.token_uri))["private_key"],
            TOKEN,
            hand_made,
            minted_first,
            stub.strings[made_second],
        ],
        caplog.text,
    )


@pytest.mark.parametrize(
    ("status", "body", "headers", "state"),
    [
        (403, PERMISSION_DENIED, {}, "failed"),
        (429, RESOURCE_EXHAUSTED, {"Retry-After": "5"}, "creating"),
        (503, UNAVAILABLE, {}, "creating"),
    ],
)
def test_a_refusal_to_create_the_key_leaves_the_current_version(
    linked, status, body, headers, state
):
    world, key, stub, _ = linked
    rotation = rotate(world, key)
    stub.fail(status, body, path="/keys", method="POST", headers=headers)
    advanced = settle(rotation["id"])
    assert advanced.state == state
    if status == 429:
        assert advanced.retry_after == 5
    if state == "failed":
        assert "apikeys.keys.create" in Rotation.objects.get(pk=rotation["id"]).failure
    assert stub.keys == {}  # nothing created
    assert list(KeyVersion.objects.filter(key=key).values_list("stage", flat=True)) == ["current"]
    key.refresh_from_db()
    assert key.current_version == 1


def test_a_new_key_gemini_refuses_at_the_test_step_is_deleted_and_destroyed(linked, provider_stub):
    world, key, stub, _ = linked
    rotation = rotate(world, key)
    provider_stub.answer(400, GEMINI_INVALID)
    assert settle(rotation["id"]).state == "failed"
    pending = KeyVersion.objects.get(key=key, version=2)
    assert pending.stage == Stage.DESTROYED
    assert pending.upstream_id and pending.upstream_id not in stub.keys  # deleted at Google
    assert [s.path for s in stub.requests("DELETE")] == [f"/v2/{pending.upstream_id}"]
    with pytest.raises(SecretMissing):
        get_store(key.store).get(key.store_path, 2)
    key.refresh_from_db()
    assert key.current_version == 1 and _current(key).version == 1
