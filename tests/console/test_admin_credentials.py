"""Admin credentials in the console: onboarded on the keys page with the settings their
provider's admin API needs, checked with that API first, and named on a key's page as the
one that rotates it, through the API's actions (the same checks, refusals and audit
events); the admin secret never on a page, and nothing changed by a refusal."""

from __future__ import annotations

from secrets import token_urlsafe
from typing import Any

import pytest
from django.test import Client

from audit.models import AuditEvent
from kms.actions import keys
from kms.models import KeyKind, KeyVersion, ProviderKey
from tests.admin_stubs.openai import ADMIN_KEY, PROJECT
from tests.console.helpers import key_url, make_console_user, signed_in
from tests.kms.helpers import openai_key
from tests.kms.world import SYSTEM, onboard_key

pytestmark = pytest.mark.django_db

WRONG_ADMIN_KEY = "sk-admin-" + "wrong" * 8


def _state() -> tuple[int, int, int]:
    """What a refused change must leave as it was (refusals themselves are audited)."""
    return (
        ProviderKey.objects.count(),
        KeyVersion.objects.count(),
        AuditEvent.objects.filter(action__in=["key.created", "key.admin_credential_set"]).count(),
    )


def _choose(client: Client, key: ProviderKey, admin_id: str) -> Any:
    return client.post(key_url(key, "admin-credential"), {"admin-admin_credential": admin_id})


def _onboard_admin(client: Client, tenant: str, secret: str = ADMIN_KEY, **extra: str) -> Any:
    form = {
        "tenant": tenant,
        "kind": "admin",
        "provider": "openai",
        "label": "openai-admin",
        "secret": secret,
        "rotation_period_days": "90",
        "validate": "on",
        "openai-project_id": PROJECT,
        **extra,
    }
    return client.post("/console/keys/", form)


def _admin_credential(tenant: Any, provider: str = "openai", label: str = "admin") -> ProviderKey:
    upstream = {"project_id": PROJECT} if provider == "openai" else {}
    return keys.do_onboard_key(
        tenant,
        keys.KeyInput(provider, label, token_urlsafe(32), kind="admin", upstream=upstream),
        validate=False,
        actor=SYSTEM,
    )


@pytest.fixture
def alice(actors: Any) -> Client:
    return signed_in(make_console_user("security_admin", name="alice"))


def test_the_keys_page_offers_each_admin_apis_settings_with_what_they_mean(world, alice):
    page = alice.get("/console/keys/").content.decode()
    assert 'name="kind" value="api_key" checked' in page and '<details class="settings">' in page
    assert 'name="openai-project_id"' in page and "The id (proj_...) of the project" in page
    assert 'name="azure_openai-client_id"' in page and 'name="openrouter-limit"' in page
    assert "workspace_id (optional)" in page  # anthropic's, which only retires keys
    assert 'name="mistral-' not in page  # no admin API known for it


def test_an_openai_admin_credential_is_checked_with_its_admin_api_and_onboarded(
    world, admin_api, alice
):
    response = _onboard_admin(alice, world.actors.tenant_a.slug)
    assert response.status_code == 302, response.content.decode()
    admin = ProviderKey.objects.get(label="openai-admin")
    assert response["Location"] == key_url(admin) + "?done=onboarded-admin"
    assert admin.kind == KeyKind.ADMIN and admin.upstream == {"project_id": PROJECT}
    assert admin_api.seen[-1].headers["authorization"] == f"Bearer {ADMIN_KEY}"
    assert admin_api.seen[-1].path.startswith(f"/v1/organization/projects/{PROJECT}/")
    page = alice.get(response["Location"]).content.decode()
    assert "The admin credential is onboarded." in page and admin.hint in page
    listing = alice.get("/console/keys/").content.decode()
    for body in (response.content.decode(), page, listing):
        assert ADMIN_KEY not in body
    created = AuditEvent.objects.get(action="key.created", target=f"key:{admin.pk}")
    assert ADMIN_KEY not in str(created.details)


def test_an_admin_credential_its_admin_api_refuses_is_explained_and_not_stored(
    world, admin_api, alice
):
    before = _state()
    response = _onboard_admin(alice, world.actors.tenant_a.slug, WRONG_ADMIN_KEY)
    page = response.content.decode()
    assert response.status_code == 422
    assert "The provider said:" in page and "Incorrect API key provided" in page
    assert 'id="h-onboard"' in page and 'role="alert"' in page  # beside the form
    assert 'value="admin" checked' in page and '<details class="settings" open>' in page
    assert WRONG_ADMIN_KEY not in page
    assert _state() == before
    refused = AuditEvent.objects.get(action="key.onboard_refused")
    assert refused.details["result"] == "invalid" and WRONG_ADMIN_KEY not in str(refused.details)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"openai-project_id": ""}, "project_id: required"),
        ({"anthropic-workspace_id": "wrkspc_1"}, "A setting for anthropic, not openai"),
        ({"openai-project_id": "proj\x01"}, "Use 1-500 printable ASCII characters."),
        ({"kind": "api_key"}, "Only an admin credential has settings."),
        ({"kind": "root"}, "Select a valid choice."),
        ({"provider": "mistral", "openai-project_id": ""}, "Keyward knows no admin API for"),
        ({"secret": ""}, "This field is required."),
        ({"secret": " " + ADMIN_KEY}, "Empty, or with leading or trailing spaces."),
    ],
)
def test_bad_admin_credential_input_is_refused_and_changes_nothing(
    world, admin_api, alice, change, message
):
    before = _state()
    response = _onboard_admin(alice, world.actors.tenant_a.slug, **change)
    assert response.status_code == 400
    page = response.content.decode()
    assert message in page and 'role="alert"' in page
    assert ADMIN_KEY not in page
    assert _state() == before
    assert admin_api.seen == []


def test_a_limited_admin_cannot_onboard_an_admin_credential_for_another_tenant(world, admin_api):
    a, b = world.actors.tenant_a, world.actors.tenant_b
    bob = signed_in(make_console_user("security_admin", [a], name="bob"))
    before = _state()
    response = _onboard_admin(bob, b.slug)
    assert response.status_code == 404
    assert ADMIN_KEY not in response.content.decode()
    assert _state() == before and admin_api.seen == []
    hidden = AuditEvent.objects.get(action="access.denied", details__status=404)
    assert hidden.tenant == b.slug


def test_a_key_is_given_an_admin_credential_and_has_it_cleared_on_its_page(world, alice):
    key = world.key_a
    admin = _admin_credential(world.actors.tenant_a)
    _admin_credential(world.actors.tenant_a, "anthropic", "other-provider")
    _admin_credential(world.actors.tenant_b, label="other-tenant")
    page = alice.get(key_url(key)).content.decode()
    offered = page[page.index('id="h-admin-credential"') :]
    assert f'value="{admin.pk}"' in offered and admin.label in offered
    assert "other-provider" not in offered and "other-tenant" not in offered
    response = _choose(alice, key, str(admin.pk))
    assert response["Location"] == key_url(key) + "?done=admin-credential-set"
    key.refresh_from_db()
    assert key.admin_credential_id == admin.pk
    shown = alice.get(response["Location"]).content.decode()
    assert "Rotated by" in shown and f'value="{admin.pk}" selected' in shown
    response = _choose(alice, key, "")
    assert response["Location"] == key_url(key) + "?done=admin-credential-cleared"
    key.refresh_from_db()
    assert key.admin_credential_id is None
    events = AuditEvent.objects.filter(action="key.admin_credential_set", target=f"key:{key.pk}")
    assert [(e.details["admin_credential"], e.details["previous"]) for e in events] == [
        (str(admin.pk), None),
        (None, str(admin.pk)),
    ]


SAME_PROVIDER_ONLY = "Must be a live admin credential of this tenant for the same provider."


@pytest.mark.parametrize(
    ("chosen", "message"),
    [
        ("other-provider", SAME_PROVIDER_ONLY),
        ("not-an-admin-credential", SAME_PROVIDER_ONLY),
        ("other-tenant", "No such admin credential in this tenant."),
        ("not-a-uuid", "Enter a valid UUID."),
    ],
)
def test_an_admin_credential_that_cannot_rotate_the_key_is_refused_and_changes_nothing(
    world, alice, chosen, message
):
    key, tenant_a = world.key_a, world.actors.tenant_a
    current = _admin_credential(tenant_a)
    keys.do_set_admin_credential(key, current, actor=SYSTEM)
    named = {
        "other-provider": lambda: _admin_credential(tenant_a, "anthropic").pk,
        "not-an-admin-credential": lambda: onboard_key(tenant_a, openai_key(), "plain").pk,
        "other-tenant": lambda: _admin_credential(world.actors.tenant_b).pk,
        "not-a-uuid": lambda: "not-a-uuid",
    }[chosen]()
    before = _state()
    response = _choose(alice, key, str(named))
    assert response.status_code == 400
    page = response.content.decode()
    assert 'id="id_admin-admin_credential_error"' in page and message in page
    key.refresh_from_db()
    assert key.admin_credential_id == current.pk
    assert _state() == before


def test_other_tenants_and_readers_cannot_set_a_keys_admin_credential(world):
    key, a = world.key_a, world.actors.tenant_a
    admin = _admin_credential(a)
    bob = signed_in(make_console_user("security_admin", [world.actors.tenant_b], name="bob"))
    carol = signed_in(make_console_user("auditor", name="carol"))
    before = _state()
    assert _choose(bob, key, str(admin.pk)).status_code == 404
    assert _choose(carol, key, str(admin.pk)).status_code == 403
    assert "Save admin credential" not in carol.get(key_url(key)).content.decode()
    key.refresh_from_db()
    assert key.admin_credential_id is None and _state() == before
    assert AuditEvent.objects.get(action="access.denied", details__status=404).tenant == a.slug


def test_an_admin_credentials_own_page_offers_none_and_one_cannot_be_set_on_it(world, alice):
    admin = _admin_credential(world.actors.tenant_a)
    page = alice.get(key_url(admin)).content.decode()
    assert "Rotates" in page and 'id="h-admin-credential"' not in page
    other = _admin_credential(world.actors.tenant_a, label="other")
    before = _state()
    response = _choose(alice, admin, str(other.pk))
    assert response.status_code == 400
    assert "An admin credential is not rotated by another." in response.content.decode()
    admin.refresh_from_db()
    assert admin.admin_credential_id is None and _state() == before
