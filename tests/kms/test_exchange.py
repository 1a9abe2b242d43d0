"""Exchange, and every way a token stops working (security.md rule 6)."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from audit.models import AuditEvent
from kms.actions import keys
from kms.models import KeyVersion, ScopedToken
from tenants.models import Grant, ServicePrincipal
from tests.factories import client
from tests.kms.helpers import openai_key
from tests.kms.world import SYSTEM


def exchange(token):
    return client(token).post("/api/v1/exchange")


@pytest.mark.django_db
def test_exchange_releases_the_key_once_per_use_and_audits_without_the_secret(world):
    token = world.token(max_uses=2)
    response = exchange(token)
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["api_key"] == world.secret_a
    assert (body["provider"], body["key_id"], body["key_version"]) == (
        "openai",
        str(world.key_a.id),
        1,
    )
    assert body["base_url"] == "https://api.openai.com/v1"
    assert response["Cache-Control"] == "no-store"
    event = AuditEvent.objects.get(action="credential.released")
    assert event.actor_type == "token" and event.details["principal"] == str(world.principal.id)
    assert event.details["key_version"] == 1
    assert world.secret_a not in repr(event.details) and token not in repr(event.details)
    assert ScopedToken.objects.get().uses == 1


@pytest.mark.django_db
def test_a_proxy_only_token_cannot_release_the_key(world):
    token = world.token(scopes=["proxy"])
    response = exchange(token)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "insufficient_scope"
    assert world.secret_a not in response.content.decode()
    assert ScopedToken.objects.get().uses == 0


def _expire(world, token):
    past = timezone.now() - timedelta(seconds=1)
    ScopedToken.objects.update(created_at=past - timedelta(seconds=60), expires_at=past)


def _use_up(world, token):
    assert exchange(token).status_code == 200


def _revoke_token(world, token):
    assert (
        client(world.secret)
        .post("/api/v1/tokens/revoke", {"token": token}, format="json")
        .status_code
        == 200
    )


def _revoke_key(world, token):
    url = f"/api/v1/tenants/{world.actors.tenant_a.slug}/keys/{world.key_a.id}"
    assert world.actors.as_("alice").delete(url).status_code == 204


def _rotate_past_grace(world, token):
    keys.do_rotate_key(
        world.key_a, secret=openai_key(), grace_period_seconds=0, validate=False, actor=SYSTEM
    )


def _delete_principal(world, token):
    assert (
        world.actors.as_("alice").delete(f"/api/v1/principals/{world.principal.id}").status_code
        == 204
    )


def _delete_grant(world, token):
    assert world.actors.as_("alice").delete(f"/api/v1/grants/{world.grant.id}").status_code == 204


def _suspend_tenant(world, token):
    url = f"/api/v1/tenants/{world.actors.tenant_a.slug}"
    assert (
        world.actors.as_("alice").patch(url, {"status": "suspended"}, format="json").status_code
        == 200
    )


def _rotate_principal_secret(world, token):
    url = f"/api/v1/principals/{world.principal.id}/rotate-secret"
    assert world.actors.as_("alice").post(url).status_code == 200


def _suspend_and_reactivate_tenant(world, token):
    _suspend_tenant(world, token)
    url = f"/api/v1/tenants/{world.actors.tenant_a.slug}"
    active = world.actors.as_("alice").patch(url, {"status": "active"}, format="json")
    assert active.status_code == 200


CAUSES = {
    "principal secret rotated": _rotate_principal_secret,
    "tenant suspended and reactivated": _suspend_and_reactivate_tenant,
    "expired": _expire,
    "used up": _use_up,
    "revoked": _revoke_token,
    "key revoked": _revoke_key,
    "pinned version rotated past its grace": _rotate_past_grace,
    "principal deleted": _delete_principal,
    "grant deleted": _delete_grant,
    "tenant suspended": _suspend_tenant,
}


ENDED = {
    "expired",
    "revoked",
    "principal secret rotated",
    "tenant suspended",
    "tenant suspended and reactivated",
}


@pytest.mark.django_db
@pytest.mark.parametrize("cause", sorted(CAUSES))
def test_a_token_stops_working(world, cause):
    pin = {"key_version": 1} if cause.startswith("pinned") else {}
    token = world.token(max_uses=1, **pin)
    CAUSES[cause](world, token)
    uses_before = list(ScopedToken.objects.values_list("uses", flat=True))
    response = exchange(token)
    assert response.status_code == 401, (cause, response.content)
    assert response.json()["error"]["code"] == "unauthenticated"
    assert world.secret_a not in response.content.decode()
    assert list(ScopedToken.objects.values_list("uses", flat=True)) == uses_before
    introspected = client(world.secret).post(
        "/api/v1/tokens/introspect", {"token": token}, format="json"
    )
    if cause not in ("principal deleted", "principal secret rotated"):
        assert introspected.json() == {"active": False}
    admin = world.actors.as_("alice")
    assert admin.post("/api/v1/tokens/introspect", {"token": token}, format="json").json() == {
        "active": False
    }
    if cause in ENDED:  # a token that can never work again is no longer listed as live
        url = f"/api/v1/tenants/{world.actors.tenant_a.slug}/keys/{world.key_a.id}/tokens"
        assert admin.get(url).json()["results"] == []
    denied = AuditEvent.objects.filter(
        action__in=("credential.denied", "auth.failed"), outcome="denied"
    )
    assert denied.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("grace", [0, 600])
def test_a_token_issued_before_a_rotation_releases_the_new_secret(world, grace):
    token = world.token()
    assert exchange(token).json()["api_key"] == world.secret_a
    new = openai_key()
    keys.do_rotate_key(
        world.key_a, secret=new, grace_period_seconds=grace, validate=False, actor=SYSTEM
    )
    released = exchange(token)
    assert released.status_code == 200, released.content
    assert (released.json()["api_key"], released.json()["key_version"]) == (new, 2)
    event = AuditEvent.objects.filter(action="credential.released").latest("occurred_at")
    assert (event.details["key_version"], event.details["pinned"]) == (2, False)


@pytest.mark.django_db
def test_a_pinned_token_keeps_its_version_until_the_grace_ends(world):
    token = world.token(key_version=1)
    new = openai_key()
    keys.do_rotate_key(
        world.key_a, secret=new, grace_period_seconds=600, validate=False, actor=SYSTEM
    )
    old_release = exchange(token).json()
    assert (old_release["api_key"], old_release["key_version"]) == (world.secret_a, 1)
    assert exchange(world.token()).json()["api_key"] == new
    assert exchange(world.token(key_version=1)).json()["api_key"] == world.secret_a
    KeyVersion.objects.filter(key=world.key_a, version=1).update(
        retire_after=timezone.now() - timedelta(seconds=1)
    )
    assert exchange(token).status_code == 401, "the grace is over"


@pytest.mark.django_db
@pytest.mark.parametrize("version", [2, 99])
def test_a_token_pinned_to_an_unusable_version_is_refused(world, version):
    if version == 2:  # version 1 becomes previous with no grace left
        keys.do_rotate_key(
            world.key_a, secret=openai_key(), grace_period_seconds=0, validate=False, actor=SYSTEM
        )
    pinned = 1 if version == 2 else version
    before = ScopedToken.objects.count()
    response = world.issue(key_version=pinned)
    assert response.status_code == 409, response.content
    assert response.json()["error"]["code"] == "key_version_unavailable"
    assert ScopedToken.objects.count() == before
    denied = AuditEvent.objects.filter(action="token.denied").latest("occurred_at")
    assert denied.details["reason"] == "key_version_unavailable"


def test_twenty_concurrent_exchanges_of_a_single_use_token_release_once(committed_world):
    token = committed_world.token(max_uses=1)
    statuses: list[int] = []
    barrier = threading.Barrier(20)

    def run() -> None:
        try:
            barrier.wait()
            statuses.append(exchange(token).status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200] + [401] * 19
    assert ScopedToken.objects.get().uses == 1
    assert AuditEvent.objects.filter(action="credential.released").count() == 1


@pytest.mark.django_db
def test_introspection_reveals_a_token_only_to_its_principal_and_covering_admins(world):
    token = world.token(ttl_seconds=60, max_uses=3)
    own = (
        client(world.secret)
        .post("/api/v1/tokens/introspect", {"token": token}, format="json")
        .json()
    )
    assert own["active"] is True and own["client_id"] == str(world.principal.id)
    assert (
        own["scope"] == "release"
        and own["tenant"] == world.actors.tenant_a.slug
        and own["max_uses"] == 3
    )
    other = client(world.stranger_secret).post(
        "/api/v1/tokens/introspect", {"token": token}, format="json"
    )
    assert other.status_code == 200 and other.json() == {"active": False}
    assert (
        world.actors.as_("alice")
        .post("/api/v1/tokens/introspect", {"token": token}, format="json")
        .json()["active"]
        is True
    )
    bob_b_token = world.actors.as_("bob").post(
        "/api/v1/tokens/introspect", {"token": token}, format="json"
    )
    assert bob_b_token.json()["active"] is True, "bob covers tenant A"
    for who in ("carol", "charlie"):
        assert (
            world.actors.as_(who)
            .post("/api/v1/tokens/introspect", {"token": token}, format="json")
            .status_code
            == 403
        )
    for junk in (
        "kwt_nonsense",
        "kwa_" + "x" * 61,
        token[:-1] + ("A" if token[-1] != "A" else "B"),
    ):
        assert client(world.secret).post(
            "/api/v1/tokens/introspect", {"token": junk}, format="json"
        ).json() == {"active": False}


@pytest.mark.django_db
def test_revocation_is_idempotent_and_cannot_touch_another_principals_token(world):
    token = world.token()
    stranger = client(world.stranger_secret)
    assert (
        stranger.post("/api/v1/tokens/revoke", {"token": token}, format="json").status_code == 200
    )
    assert exchange(token).status_code == 200, "a stranger's revoke did nothing"
    for _ in range(2):
        assert (
            client(world.secret)
            .post("/api/v1/tokens/revoke", {"token": token}, format="json")
            .status_code
            == 200
        )
    assert exchange(token).status_code == 401
    assert AuditEvent.objects.filter(action="token.revoked").count() == 1


@pytest.mark.django_db
def test_admins_list_live_tokens_and_revoke_by_id(world):
    token = world.token()
    token_id = ScopedToken.objects.get().id
    url = f"/api/v1/tenants/{world.actors.tenant_a.slug}/keys/{world.key_a.id}/tokens"
    listing = world.actors.as_("carol").get(url)
    assert listing.status_code == 200
    assert [t["id"] for t in listing.json()["results"]] == [str(token_id)]
    assert token not in listing.content.decode()
    assert world.actors.as_("dave").get(url).status_code == 200
    key_b_url = f"/api/v1/tenants/{world.actors.tenant_b.slug}/keys/{world.key_b.id}/tokens"
    assert world.actors.as_("bob").get(key_b_url).status_code == 404
    assert world.actors.as_("carol").post(f"/api/v1/tokens/{token_id}/revoke").status_code == 403
    assert world.actors.as_("alice").post(f"/api/v1/tokens/{token_id}/revoke").status_code == 200
    assert exchange(token).status_code == 401
    assert world.actors.as_("alice").get(url).json()["results"] == []


@pytest.mark.django_db
def test_a_limited_admin_cannot_revoke_another_tenants_token(world):
    from tenants.actions import do_create_grant

    do_create_grant(
        world.principal, world.actors.tenant_b, "openai", ["release"], 600, actor=SYSTEM
    )
    token = world.token(tenant=world.actors.tenant_b.slug)
    token_id = ScopedToken.objects.get().id
    assert world.actors.as_("bob").post(f"/api/v1/tokens/{token_id}/revoke").status_code == 404
    assert client(world.secret).post("/api/v1/exchange").status_code == 403
    assert exchange(token).status_code == 200


@pytest.mark.django_db
def test_deleting_a_principal_or_grant_removes_its_tokens(world):
    world.token()
    assert ScopedToken.objects.count() == 1
    Grant.objects.filter(pk=world.grant.pk).delete()
    assert ScopedToken.objects.count() == 0
    assert ServicePrincipal.objects.filter(pk=world.principal.pk).exists()


@pytest.mark.django_db
def test_what_ends_old_tokens_leaves_new_ones_working(world):
    old = world.token()
    rotated = world.actors.as_("alice").post(
        f"/api/v1/principals/{world.principal.id}/rotate-secret"
    )
    world.secret = rotated.json()["client_secret"]
    fresh = world.token()
    url = f"/api/v1/tenants/{world.actors.tenant_a.slug}"
    alice = world.actors.as_("alice")
    assert alice.patch(url, {"status": "suspended"}, format="json").status_code == 200
    assert alice.patch(url, {"status": "active"}, format="json").status_code == 200
    after = world.token()
    assert [exchange(t).status_code for t in (old, fresh, after)] == [401, 401, 200]
    event = AuditEvent.objects.filter(action="credential.denied").latest("occurred_at")
    assert event.details["reason"] == "tenant_suspended"
