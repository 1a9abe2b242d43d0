"""The provider-key endpoints of api.md, on both secret-store backends."""

from __future__ import annotations

import base64

import pytest

from audit.hmac import audit_hmac
from audit.models import AuditEvent
from kms.models import KeyVersion, ProviderKey
from kms.providers.base import MIN_ECHO, spellings
from stores.registry import get_store
from tests import provider_stub as docs
from tests.kms.helpers import nothing_stored, onboard, openai_key

pytestmark = pytest.mark.django_db


@pytest.fixture
def setup(actors, default_store, provider_stub, store_config, request):
    bao = request.getfixturevalue("bao") if store_config["backend"] == "vault" else None
    return actors, provider_stub, store_config, bao


def _stored_nothing(setup, tenant) -> bool:
    _, _, config, bao = setup
    return nothing_stored(tenant, bao, config.get("path_prefix", ""))


def test_onboarding_checks_stores_and_returns_metadata_only(setup):
    actors, stub, _, _ = setup
    secret = openai_key()
    response = onboard(actors.as_("alice"), actors.tenant_a.slug, secret)
    assert response.status_code == 201, response.content
    key = response.json()
    assert secret not in response.content.decode()
    assert "secret" not in key
    assert key["hint"] == "..." + secret[-4:]
    assert key["fingerprint"] == audit_hmac(secret)
    assert (key["status"], key["current_version"], key["last_validation"]) == ("active", 1, "ok")
    assert key["tenant"] == actors.tenant_a.slug and key["store"] == "default"
    assert [v["stage"] for v in key["versions"]] == ["current"]
    assert stub.seen[-1].headers["authorization"] == f"Bearer {secret}"
    row = ProviderKey.objects.get(pk=key["id"])
    assert get_store().get(row.store_path, 1) == secret
    event = AuditEvent.objects.get(action="key.created", target=f"key:{key['id']}")
    assert event.details["fingerprint"] == audit_hmac(secret)
    assert event.tenant == actors.tenant_a.slug


def test_validate_false_skips_the_provider(setup):
    actors, stub, _, _ = setup
    response = onboard(actors.as_("alice"), actors.tenant_a.slug, validate=False)
    assert response.status_code == 201
    assert stub.seen == []
    assert response.json()["last_validation"] == ""


def test_a_key_the_provider_calls_invalid_is_refused_and_nothing_is_stored(setup):
    actors, stub, _, _ = setup
    stub.answer(401, docs.OPENAI_INVALID)
    response = onboard(actors.as_("alice"), actors.tenant_a.slug)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "key_rejected"
    assert _stored_nothing(setup, actors.tenant_a)
    event = AuditEvent.objects.get(action="key.onboard_refused")
    assert (event.outcome, event.details["result"]) == ("denied", "invalid")


@pytest.mark.parametrize("answer", [(503, {"error": {"message": "down"}}), (429, docs.OPENAI_RATE)])
def test_an_unavailable_provider_is_an_error_that_validate_false_overrides(setup, answer):
    actors, stub, _, _ = setup
    stub.answer(*answer)
    secret = openai_key()
    response = onboard(actors.as_("alice"), actors.tenant_a.slug, secret)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "provider_unavailable"
    assert response["Retry-After"]
    assert _stored_nothing(setup, actors.tenant_a)
    assert AuditEvent.objects.filter(action="key.onboard_failed", outcome="error").count() == 1
    assert (
        onboard(actors.as_("alice"), actors.tenant_a.slug, secret, validate=False).status_code
        == 201
    )


def test_the_same_secret_twice_gets_409_naming_the_existing_key(setup):
    actors, *_ = setup
    secret = openai_key()
    first = onboard(actors.as_("alice"), actors.tenant_a.slug, secret).json()
    again = onboard(actors.as_("alice"), actors.tenant_a.slug, secret)
    assert again.status_code == 409
    assert again.json()["error"]["existing_key"] == first["id"]
    assert ProviderKey.objects.filter(tenant=actors.tenant_a).count() == 1
    assert onboard(actors.as_("alice"), actors.tenant_b.slug, secret).status_code == 201


def test_a_taken_label_gets_409(setup):
    actors, *_ = setup
    assert onboard(actors.as_("alice"), actors.tenant_a.slug, label="prod").status_code == 201
    response = onboard(actors.as_("alice"), actors.tenant_a.slug, label="prod")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "label_taken"


def test_rotation_makes_the_new_secret_current_and_keeps_the_previous_for_the_grace(setup):
    actors, stub, *_ = setup
    api, slug = actors.as_("alice"), actors.tenant_a.slug
    old, new = openai_key(), openai_key()
    key = onboard(api, slug, old).json()
    response = api.post(
        f"/api/v1/tenants/{slug}/keys/{key['id']}/rotate",
        {"secret": new, "grace_period_seconds": 600},
        format="json",
    )
    assert response.status_code == 200, response.content
    rotated = response.json()
    assert new not in response.content.decode()
    assert rotated["current_version"] == 2
    assert rotated["hint"] == "..." + new[-4:]
    stages = {v["version"]: v["stage"] for v in rotated["versions"]}
    assert stages == {1: "previous", 2: "current"}
    assert stub.seen[-1].headers["authorization"] == f"Bearer {new}"
    row = ProviderKey.objects.get(pk=key["id"])
    assert get_store().get(row.store_path, 1) == old, "the previous version stays usable"
    assert get_store().get(row.store_path, 2) == new
    assert KeyVersion.objects.filter(key=row, stage="current").count() == 1
    assert AuditEvent.objects.filter(action="key.rotated", target=f"key:{key['id']}").count() == 1


def test_rotation_to_an_invalid_secret_changes_nothing(setup):
    actors, stub, *_ = setup
    api, slug = actors.as_("alice"), actors.tenant_a.slug
    key = onboard(api, slug).json()
    stub.answer(401, docs.OPENAI_INVALID)
    response = api.post(
        f"/api/v1/tenants/{slug}/keys/{key['id']}/rotate", {"secret": openai_key()}, format="json"
    )
    assert response.status_code == 422
    row = ProviderKey.objects.get(pk=key["id"])
    assert row.current_version == 1
    assert [v.version for v in get_store().versions(row.store_path)] == [1]


def test_rotation_to_a_secret_already_used_gets_409(setup):
    actors, *_ = setup
    api, slug = actors.as_("alice"), actors.tenant_a.slug
    old = openai_key()
    key = onboard(api, slug, old).json()
    response = api.post(
        f"/api/v1/tenants/{slug}/keys/{key['id']}/rotate", {"secret": old}, format="json"
    )
    assert response.status_code == 409


def test_revocation_destroys_every_version_and_is_idempotent(setup):
    actors, _, config, bao = setup
    api, slug = actors.as_("alice"), actors.tenant_a.slug
    key = onboard(api, slug).json()
    api.post(
        f"/api/v1/tenants/{slug}/keys/{key['id']}/rotate", {"secret": openai_key()}, format="json"
    )
    assert api.delete(f"/api/v1/tenants/{slug}/keys/{key['id']}").status_code == 204
    row = ProviderKey.objects.get(pk=key["id"])
    assert row.status == "revoked" and row.secrets_destroyed_at is not None
    assert set(KeyVersion.objects.filter(key=row).values_list("stage", flat=True)) == {"destroyed"}
    assert all(v.destroyed for v in get_store().versions(row.store_path))
    assert len(get_store().versions(row.store_path)) == 2
    if bao is not None:
        metadata = bao.client().secrets.kv.v2.read_secret_metadata(
            path=f"{config['path_prefix']}/{row.store_path}", mount_point=bao.kv_mount
        )
        assert {v: d["destroyed"] for v, d in metadata["data"]["versions"].items()} == {
            "1": True,
            "2": True,
        }
    assert api.delete(f"/api/v1/tenants/{slug}/keys/{key['id']}").status_code == 204
    assert AuditEvent.objects.filter(action="key.revoked").count() == 1
    response = api.post(f"/api/v1/tenants/{slug}/keys/{key['id']}/validate")
    assert response.status_code == 409


def test_validation_records_history_and_only_invalid_changes_the_status(setup):
    actors, stub, *_ = setup
    api, slug = actors.as_("alice"), actors.tenant_a.slug
    key = onboard(api, slug).json()
    url = f"/api/v1/tenants/{slug}/keys/{key['id']}"
    for status, body in ((429, docs.OPENAI_RATE), (529, {}), (500, {}), (429, docs.OPENAI_QUOTA)):
        stub.answer(status, body)
        response = api.post(f"{url}/validate")
        assert response.status_code == 200
        assert response.json()["key_status"] == "active"
    stub.answer(401, docs.OPENAI_INVALID)
    response = api.post(f"{url}/validate").json()
    assert (response["result"], response["key_status"]) == ("invalid", "invalid")
    detail = api.get(url).json()
    assert (detail["status"], detail["last_validation"]) == ("invalid", "invalid")
    history = api.get(f"{url}/validations").json()["results"]
    assert [h["result"] for h in history][:5] == [
        "invalid",
        "quota_exhausted",
        "provider_unavailable",
        "provider_unavailable",
        "rate_limited",
    ]
    assert "invalid_api_key" in history[0]["reason"]
    stub.answer(200)
    assert api.post(f"{url}/validate").json()["key_status"] == "active"


def test_listing_and_detail_never_show_a_secret(setup):
    actors, *_ = setup
    secret = openai_key()
    key = onboard(actors.as_("alice"), actors.tenant_a.slug, secret).json()
    for path in ("", f"/{key['id']}", f"/{key['id']}/validations"):
        response = actors.as_("carol").get(f"/api/v1/tenants/{actors.tenant_a.slug}/keys{path}")
        assert response.status_code == 200
        assert secret not in response.content.decode()


def _echo(secret: str) -> dict:
    """An error body that writes the key back in part and in base64, as some gateways do."""
    encoded = base64.b64encode(secret.encode()).decode()
    return {
        "error": {
            "message": f"Incorrect API key provided: {secret[4:39]} (b64 {encoded}).",
            "type": "invalid_request_error",
            "code": "invalid_api_key",
        }
    }


def _no_run_of(secret: str, text: str, where: str) -> None:
    for spelling in spellings(secret):
        for i in range(len(spelling) - MIN_ECHO + 1):
            assert spelling[i : i + MIN_ECHO] not in text, f"a run of the key is in {where}"


def test_a_provider_that_echoes_the_key_leaves_no_run_of_it_anywhere(setup):
    actors, stub, _, _ = setup
    api, slug = actors.as_("alice"), actors.tenant_a.slug
    secret = openai_key()
    stub.answer(401, _echo(secret))
    refused = onboard(api, slug, secret)
    assert refused.status_code == 422
    _no_run_of(secret, refused.content.decode(), "the 422 body")
    assert "Incorrect API key provided" in refused.content.decode(), "the provider's words stay"
    stub.answer(200)
    key = onboard(api, slug, secret).json()
    stub.answer(401, _echo(secret))
    checked = api.post(f"/api/v1/tenants/{slug}/keys/{key['id']}/validate")
    _no_run_of(secret, checked.content.decode(), "the validation answer")
    history = api.get(f"/api/v1/tenants/{slug}/keys/{key['id']}/validations")
    _no_run_of(secret, history.content.decode(), "the validation history")
    events = repr(list(AuditEvent.objects.values_list("details", "target")))
    _no_run_of(secret, events, "audit events")
