"""Who may manage keys, and bad input: each refused with a clear 4xx, nothing stored, and
the secret never repeated back."""

from __future__ import annotations

import json

import pytest

from kms.models import ProviderKey
from stores.models import LocalSecret
from tests.kms.helpers import onboard, openai_key
from tests.provider_stub import KEYS

pytestmark = pytest.mark.django_db


@pytest.fixture
def env(actors, provider_stub, settings):
    settings.SECRET_STORES = {"default": {"backend": "local"}}
    return actors, provider_stub


def _nothing_stored():
    return not ProviderKey.objects.exists() and not LocalSecret.objects.exists()


def test_bob_onboarding_for_tenant_b_gets_404_and_nothing_is_stored(env):
    actors, stub = env
    response = onboard(actors.as_("bob"), actors.tenant_b.slug)
    assert response.status_code == 404
    assert _nothing_stored()
    assert stub.seen == [], "the provider is not even asked"


@pytest.mark.parametrize(
    ("who", "status"),
    [("carol", 403), ("dave", 403), ("charlie", 403), ("principal", 403), ("anonymous", 401)],
)
def test_only_security_admins_onboard(env, who, status):
    actors, _ = env
    assert onboard(actors.as_(who), actors.tenant_a.slug).status_code == status
    assert _nothing_stored()


def test_readers_see_keys_of_their_tenants_only(env):
    actors, _ = env
    key_a = onboard(actors.as_("alice"), actors.tenant_a.slug).json()
    key_b = onboard(actors.as_("alice"), actors.tenant_b.slug).json()
    for who in ("alice", "bob", "carol", "dave"):
        assert (
            actors.as_(who)
            .get(f"/api/v1/tenants/{actors.tenant_a.slug}/keys/{key_a['id']}")
            .status_code
            == 200
        )
    for who in ("bob", "dave"):
        api = actors.as_(who)
        assert api.get(f"/api/v1/tenants/{actors.tenant_b.slug}/keys").status_code == 404
        assert (
            api.get(f"/api/v1/tenants/{actors.tenant_b.slug}/keys/{key_b['id']}").status_code == 404
        )
        # tenant B's key through tenant A's URL is just as absent
        assert (
            api.get(f"/api/v1/tenants/{actors.tenant_a.slug}/keys/{key_b['id']}").status_code == 404
        )
    assert (
        actors.as_("charlie").get(f"/api/v1/tenants/{actors.tenant_a.slug}/keys").status_code == 403
    )


def test_bob_cannot_rotate_validate_or_revoke_tenant_b_keys(env):
    actors, _ = env
    key_b = onboard(actors.as_("alice"), actors.tenant_b.slug).json()
    url = f"/api/v1/tenants/{actors.tenant_b.slug}/keys/{key_b['id']}"
    bob = actors.as_("bob")
    assert bob.post(f"{url}/rotate", {"secret": openai_key()}, format="json").status_code == 404
    assert bob.post(f"{url}/validate").status_code == 404
    assert bob.delete(url).status_code == 404
    assert ProviderKey.objects.get(pk=key_b["id"]).status == "active"
    assert ProviderKey.objects.get(pk=key_b["id"]).current_version == 1


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"provider": "openia"}, "provider"),
        ({"secret": ""}, "secret"),
        ({"secret": "sk-" + "a" * 5000}, "secret"),
        ({"secret": "  " + openai_key() + "  "}, "secret"),
        ({"secret": openai_key() + "\n"}, "secret"),
        ({"secret": "sk-proj-ключ" + "a" * 30}, "secret"),
        ({"secret": KEYS["anthropic"]}, "secret"),
        ({"provider": "anthropic", "secret": KEYS["openai"]}, "secret"),
        ({"provider": "google", "secret": KEYS["groq"]}, "secret"),
        ({"label": ""}, "label"),
        ({"label": "bad\nlabel"}, "label"),
        ({"label": "x" * 101}, "label"),
        ({"rotation_period_days": 0}, "rotation_period_days"),
        ({"surprise": 1}, "surprise"),
        ({"provider": "openai_compatible"}, "base_url"),
    ],
)
def test_bad_input_is_refused_naming_the_field_and_nothing_is_stored(env, settings, fields, named):
    actors, stub = env
    settings.PROVIDER_BASE_URLS = {
        k: v for k, v in settings.PROVIDER_BASE_URLS.items() if k != "openai_compatible"
    }
    body = {"provider": "openai", "label": "prod", "secret": openai_key(), **fields}
    response = actors.as_("alice").post(
        f"/api/v1/tenants/{actors.tenant_a.slug}/keys", body, format="json"
    )
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert named in error.get("fields", {}), error
    text = response.content.decode()
    if len(body["secret"].strip()) > 8:
        assert body["secret"].strip() not in text
    assert _nothing_stored()
    assert stub.seen == []


@pytest.mark.parametrize(
    "base_url",
    [
        "http://api.openai.com/v1",
        "https://127.0.0.1:8443/v1",
        "https://169.254.169.254/latest",
        "https://10.0.0.5/v1",
        "https://[::1]/v1",
        "https://user:pw@api.example.com/v1",
    ],
)
def test_a_forbidden_base_url_is_refused_in_production_policy(env, settings, base_url):
    actors, stub = env
    settings.PROVIDER_URL_POLICY = "strict"
    settings.PROVIDER_URL_ALLOWLIST = []
    response = onboard(actors.as_("alice"), actors.tenant_a.slug, base_url=base_url)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "forbidden_base_url"
    assert _nothing_stored()
    assert stub.seen == []


def test_validate_must_be_a_boolean(env):
    actors, _ = env
    body = {"provider": "openai", "label": "prod", "secret": openai_key()}
    response = actors.as_("alice").post(
        f"/api/v1/tenants/{actors.tenant_a.slug}/keys?validate=maybe", body, format="json"
    )
    assert response.status_code == 400
    assert _nothing_stored()


def test_a_base_url_override_is_used_for_the_check(env):
    actors, stub = env
    response = onboard(
        actors.as_("alice"),
        actors.tenant_a.slug,
        provider="openai_compatible",
        secret="gw-token-123",
        base_url=stub.url + "/gateway/v1",
    )
    assert response.status_code == 201, response.content
    assert stub.seen[-1].path == "/gateway/v1/models"
    assert json.loads(response.content)["base_url"] == stub.url + "/gateway/v1"
