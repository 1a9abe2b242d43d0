"""Provider keys in the console: onboarding against a provider, the refused key's reason
explained, validation, rotation with a grace period, revocation by typed confirmation and a
key's live tokens, all through the API's actions (the same checks and audit events); the
secret never on a page, and nothing changed by a refusal."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from audit.models import AuditEvent
from kms.models import KeyStatus, KeyVersion, ProviderKey, ScopedToken, Stage, ValidationResult
from tests import provider_stub as docs
from tests.console.helpers import key_url, make_console_user, signed_in
from tests.kms.helpers import openai_key

pytestmark = pytest.mark.django_db


def _state() -> tuple[int, int, int, int]:
    """What a refused change must leave as it was."""
    return (
        ProviderKey.objects.count(),
        KeyVersion.objects.count(),
        ScopedToken.objects.filter(revoked_at=None).count(),
        AuditEvent.objects.exclude(action__in=["access.denied", "audit.searched"]).count(),
    )


def _onboard(client: Client, tenant: str, secret: str = "", **extra: Any) -> Any:
    form = {
        "tenant": tenant,
        "provider": "openai",
        "label": "prod-console",
        "secret": secret,
        "rotation_period_days": "90",
        "validate": "on",
        **extra,
    }
    return client.post("/console/keys/", {k: v for k, v in form.items() if v is not None})


@pytest.fixture
def alice(actors: Any) -> Client:
    return signed_in(make_console_user("security_admin", name="alice"))


def test_a_key_is_onboarded_after_its_provider_accepts_it(world, provider_stub, alice):
    secret = openai_key()
    response = _onboard(alice, world.actors.tenant_a.slug, secret)
    assert response.status_code == 302, response.content.decode()
    key = ProviderKey.objects.get(label="prod-console")
    assert response["Location"] == key_url(key) + "?done=onboarded"
    assert provider_stub.seen[-1].headers["authorization"] == f"Bearer {secret}"
    page = alice.get(response["Location"]).content.decode()
    assert "The key is onboarded." in page and key.hint in page
    assert "The provider accepted the key." in page
    assert secret not in page
    event = AuditEvent.objects.get(action="key.created", target=f"key:{key.pk}")
    assert secret not in str(event.details)


def test_a_refused_key_shows_the_providers_reason_and_nothing_is_stored(
    world, provider_stub, alice
):
    provider_stub.answer(401, docs.OPENAI_INVALID)
    secret = openai_key()
    before = ProviderKey.objects.count()
    response = _onboard(alice, world.actors.tenant_a.slug, secret)
    page = response.content.decode()
    assert response.status_code == 422
    assert "The provider does not accept this key" in page
    assert "The provider does not know this key" in page  # what "invalid" means
    assert "The provider said:" in page and "Incorrect API key provided" in page
    assert secret not in page and 'value="' + secret not in page
    assert ProviderKey.objects.count() == before
    refused = AuditEvent.objects.get(action="key.onboard_refused")
    assert refused.details["result"] == "invalid"


@pytest.mark.parametrize(
    ("change", "status", "field_message"),
    [
        ({"label": ""}, 400, "This field is required."),
        ({"label": "bad\nlabel"}, 400, "Use 1-100 ASCII letters"),
        ({"label": "nul\x00byte"}, 400, "Null characters are not allowed."),
        ({"provider": "nope"}, 400, "Select a valid choice."),
        ({"rotation_period_days": "0"}, 400, "greater than or equal to 1"),
        ({"rotation_period_days": "x"}, 400, "Enter a whole number."),
        ({"base_url": "ftp://example.com"}, 400, "must be an http(s) URL"),
        ({"secret": ""}, 400, "This field is required."),
        ({"secret": "not an openai key"}, 400, "Must be printable ASCII without spaces."),
    ],
)
def test_bad_onboarding_input_is_refused_and_changes_nothing(
    world, provider_stub, alice, change, status, field_message
):
    before = _state()
    form = {"tenant": world.actors.tenant_a.slug, "secret": openai_key(), **change}
    response = _onboard(alice, **form)
    assert response.status_code == status
    page = response.content.decode()
    assert field_message in page and 'role="alert"' in page
    assert _state() == before
    assert provider_stub.seen == []


def test_a_second_key_with_the_same_label_is_a_conflict(world, provider_stub, alice):
    response = _onboard(alice, world.actors.tenant_a.slug, openai_key(), label="prod")
    assert response.status_code == 409
    assert "already has a key with this label" in response.content.decode()


def test_a_limited_admin_onboards_only_for_her_tenants_and_sees_only_their_keys(
    world, provider_stub
):
    a, b = world.actors.tenant_a, world.actors.tenant_b
    bob = signed_in(make_console_user("security_admin", [a], name="bob"))
    listing = bob.get("/console/keys/").content.decode()
    assert str(world.key_a.pk) in listing and str(world.key_b.pk) not in listing
    assert bob.get(f"/console/keys/?tenant={b.slug}").status_code == 404
    before = _state()
    assert _onboard(bob, b.slug, openai_key()).status_code == 404
    assert _state() == before
    hidden = AuditEvent.objects.filter(action="access.denied", details__status=404)
    assert [e.tenant for e in hidden] == [b.slug, b.slug]
    assert _onboard(bob, a.slug, openai_key()).status_code == 302


def test_another_tenants_key_is_hidden_and_the_refusal_audited(world):
    bob = signed_in(make_console_user("security_admin", [world.actors.tenant_a], name="bob"))
    other = world.key_b
    wrong_tenant = f"/console/tenants/{world.actors.tenant_a.slug}/keys/{other.pk}/"
    not_canonical = key_url(world.key_a).replace(str(world.key_a.pk), world.key_a.pk.hex)
    for url in (key_url(other), wrong_tenant, "/console/tenants/a/keys/not-a-uuid/", not_canonical):
        assert bob.get(url).status_code == 404
    for action in ("validate", "rotate", "revoke"):
        assert bob.post(key_url(other, action), {"revoke-confirm": other.label}).status_code == 404
    other.refresh_from_db()
    assert other.status == KeyStatus.ACTIVE
    hidden = AuditEvent.objects.filter(action="access.denied", details__status=404)
    assert hidden.count() == 5 and {e.tenant for e in hidden} == {world.actors.tenant_b.slug}


def test_an_auditor_reads_keys_but_changes_nothing(world, provider_stub):
    carol = signed_in(make_console_user("auditor", name="carol"))
    page = carol.get(key_url(world.key_a)).content.decode()
    assert world.key_a.label in page and "Rotate key" not in page and "Revoke key" not in page
    before = _state()
    assert _onboard(carol, world.actors.tenant_a.slug, openai_key()).status_code == 403
    for action in ("validate", "rotate", "revoke"):
        assert carol.post(key_url(world.key_a, action)).status_code == 403
    assert _state() == before
    denied = AuditEvent.objects.filter(action="access.denied", details__status=403)
    assert denied.count() == 4
    # each in the chain of the tenant its URL names, as the API records them
    assert sorted(e.tenant for e in denied) == ["", *[world.actors.tenant_a.slug] * 3]


def test_anonymous_users_are_sent_to_sign_in(world):
    response = Client().get(key_url(world.key_a))
    assert response.status_code == 302 and response["Location"].startswith("/console/login/")


def test_checking_a_key_records_the_result_with_what_it_means(world, provider_stub, alice):
    provider_stub.answer(429, docs.OPENAI_RATE)
    response = alice.post(key_url(world.key_a, "validate"))
    assert response.status_code == 302  # recorded as a transient result, not refused
    world.key_a.refresh_from_db()
    assert world.key_a.status == KeyStatus.ACTIVE  # a rate limit never marks a key invalid
    provider_stub.answer(401, docs.OPENAI_INVALID)
    assert alice.post(key_url(world.key_a, "validate")).status_code == 302
    world.key_a.refresh_from_db()
    assert world.key_a.status == KeyStatus.INVALID
    page = alice.get(key_url(world.key_a)).content.decode()
    assert "The provider does not know this key" in page
    assert "Incorrect API key provided" in page
    assert ValidationResult.objects.filter(key=world.key_a, result="invalid").exists()
    assert AuditEvent.objects.filter(action="key.validated", target=f"key:{world.key_a.pk}")


def test_rotation_keeps_the_old_secret_for_the_grace_period(world, provider_stub, alice):
    key, secret = world.key_a, openai_key()
    response = alice.post(
        key_url(key, "rotate"),
        {"rotate-secret": secret, "rotate-grace_period_seconds": "86400", "rotate-validate": "on"},
    )
    assert response.status_code == 302
    key.refresh_from_db()
    assert key.current_version == 2 and key.hint == "..." + secret[-4:]
    old = KeyVersion.objects.get(key=key, version=1)
    assert old.stage == Stage.PREVIOUS
    assert old.retire_after is not None
    assert 86000 < (old.retire_after - key.updated_at).total_seconds() <= 86400
    event = AuditEvent.objects.get(action="key.rotated", target=f"key:{key.pk}")
    assert secret not in str(event.details)
    page = alice.get(response["Location"]).content.decode()
    assert "The key is rotated" in page and secret not in page


@pytest.mark.parametrize(
    "form",
    [
        {"rotate-secret": "", "rotate-grace_period_seconds": "3600"},
        {"rotate-secret": "SECRET", "rotate-grace_period_seconds": "99"},
        {"rotate-secret": "SECRET", "rotate-grace_period_seconds": "-1"},
        {"rotate-secret": "SECRET"},
        {"rotate-secret": "two words", "rotate-grace_period_seconds": "3600"},
    ],
)
def test_a_bad_rotation_is_refused_and_changes_nothing(world, provider_stub, alice, form):
    secret = openai_key()
    sent = {name: value.replace("SECRET", secret) for name, value in form.items()}
    before = _state()
    response = alice.post(key_url(world.key_a, "rotate"), sent)
    assert response.status_code == 400
    page = response.content.decode()
    assert 'role="alert"' in page and secret not in page
    assert _state() == before


def test_a_rotation_the_provider_refuses_is_explained(world, provider_stub, alice):
    provider_stub.answer(401, docs.OPENAI_INVALID)
    before = _state()
    response = alice.post(
        key_url(world.key_a, "rotate"),
        {
            "rotate-secret": openai_key(),
            "rotate-grace_period_seconds": "3600",
            "rotate-validate": "on",
        },
    )
    assert response.status_code == 422
    assert "Incorrect API key provided" in response.content.decode()
    assert _state()[:3] == before[:3]


def test_revoking_needs_the_label_typed_and_ends_the_keys_tokens(world, alice):
    token = world.token()
    key = world.key_a
    page = alice.get(key_url(key)).content.decode()
    issued = ScopedToken.objects.get()
    assert str(issued.pk) in page and world.principal.name in page
    before = _state()
    for typed in ("", "PROD", key.label + " "):
        assert alice.post(key_url(key, "revoke"), {"revoke-confirm": typed}).status_code == 400
    assert _state() == before
    response = alice.post(key_url(key, "revoke"), {"revoke-confirm": key.label})
    assert response.status_code == 302 and response["Location"].endswith("?done=revoked")
    key.refresh_from_db()
    assert key.status == KeyStatus.REVOKED and key.secrets_destroyed_at is not None
    assert world.api(token).post("/api/v1/exchange").status_code == 401
    assert AuditEvent.objects.filter(action="key.revoked", target=f"key:{key.pk}").exists()
    assert "Revoke key" not in alice.get(key_url(key)).content.decode()


def test_a_live_token_is_revoked_from_its_keys_page(world, alice):
    token = world.token()
    issued = ScopedToken.objects.get()
    response = alice.post(f"{key_url(world.key_a)}tokens/{issued.pk}/revoke/")
    assert response.status_code == 302
    issued.refresh_from_db()
    assert issued.revoked_at is not None
    assert world.api(token).post("/api/v1/exchange").status_code == 401
    assert AuditEvent.objects.filter(action="token.revoked").exists()
    assert str(issued.pk) not in alice.get(key_url(world.key_a)).content.decode()


def test_a_token_is_revoked_only_through_its_own_key(world, alice):
    world.token()
    issued = ScopedToken.objects.get()
    bob = signed_in(make_console_user("security_admin", [world.actors.tenant_b], name="bob"))
    for client, url in (
        (alice, f"{key_url(world.key_b)}tokens/{issued.pk}/revoke/"),
        (alice, f"{key_url(world.key_a)}tokens/not-a-uuid/revoke/"),
        (bob, f"{key_url(world.key_b)}tokens/{issued.pk}/revoke/"),
    ):
        assert client.post(url).status_code == 404
    issued.refresh_from_db()
    assert issued.revoked_at is None
    hidden = AuditEvent.objects.get(action="access.denied", details__status=404)
    assert hidden.tenant == world.actors.tenant_a.slug  # bob's try, in the token's chain


def test_changes_need_their_csrf_token(world, alice):
    strict = Client(enforce_csrf_checks=True, REMOTE_ADDR="10.9.9.8")
    strict.force_login(make_console_user("security_admin", name="alice"))
    before = _state()
    response = strict.post(key_url(world.key_a, "revoke"), {"revoke-confirm": world.key_a.label})
    assert response.status_code == 403
    assert _state() == before


def test_a_key_past_its_rotation_date_is_marked_due(world, alice):
    ProviderKey.objects.filter(pk=world.key_a.pk).update(
        rotation_due_at=timezone.now() - timedelta(days=1)
    )
    rows = alice.get("/console/keys/").content.decode().split("<tr>")
    row_a = next(row for row in rows if str(world.key_a.pk) in row)
    row_b = next(row for row in rows if str(world.key_b.pk) in row)
    assert "badge-due" in row_a and "badge-due" not in row_b
    dashboard = alice.get("/console/").content.decode()
    assert (
        f'href="/console/tenants/{world.actors.tenant_a.slug}/keys/{world.key_a.pk}/"' in dashboard
    )


def test_a_provider_outage_is_a_503_with_retry_after_and_stores_nothing(
    world, provider_stub, alice
):
    provider_stub.answer(503, {"error": {"message": "overloaded"}})
    before = _state()
    response = _onboard(alice, world.actors.tenant_a.slug, openai_key())
    assert response.status_code == 503 and int(response["Retry-After"]) > 0
    assert "untick" in response.content.decode()
    assert _state()[:3] == before[:3]
    rotated = alice.post(
        key_url(world.key_a, "rotate"),
        {
            "rotate-secret": openai_key(),
            "rotate-grace_period_seconds": "0",
            "rotate-validate": "on",
        },
    )
    assert rotated.status_code == 503 and int(rotated["Retry-After"]) > 0


def test_rotating_a_revoked_key_is_refused_in_plain_sight(world, alice):
    alice.post(key_url(world.key_a, "revoke"), {"revoke-confirm": world.key_a.label})
    response = alice.post(
        key_url(world.key_a, "rotate"),
        {"rotate-secret": openai_key(), "rotate-grace_period_seconds": "0"},
    )
    assert response.status_code == 409
    assert "The key is revoked." in response.content.decode()


def test_what_was_typed_to_confirm_a_revocation_is_not_shown_again(world, alice):
    typed = "sk-proj-" + "pasted" * 8
    response = alice.post(key_url(world.key_a, "revoke"), {"revoke-confirm": typed[:100]})
    assert response.status_code == 400 and typed[:100] not in response.content.decode()


def test_a_method_no_page_serves_is_405(world, alice):
    assert alice.put("/console/keys/").status_code == 405
    assert alice.delete(key_url(world.key_a)).status_code == 405
    assert alice.get(key_url(world.key_a, "revoke")).status_code == 405
    assert alice.post("/console/keys/", {"tenant": "no-such-tenant"}).status_code == 404


def test_a_keys_page_names_its_secret_store_and_region(world, alice, settings):
    settings.SECRET_STORES = {"default": {"backend": "local", "region": "eu-central"}}
    page = alice.get(key_url(world.key_a)).content.decode()
    assert "<code>default</code>, region eu-central" in page
