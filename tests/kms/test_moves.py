"""Moving a tenant between secret stores (POST /api/v1/tenants/{slug}/moves): every live
version copied at its own number, verified, the tenant switched in one transaction and
nothing left in the old store; exchange answered before, between the steps and after;
refusals that change nothing. Two stores of two regions: two local stores, and two
OpenBao servers read directly."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import hvac.exceptions
import pytest
from django.utils import timezone

from audit.models import AuditEvent
from kms import jobs, queries
from kms.actions import keys, moves, retirement
from kms.models import KeyVersion, ProviderKey, Rotation, TenantMove
from stores.models import LocalSecret
from stores.registry import get_store
from tenants.actions import do_create_grant, do_create_tenant
from tenants.models import Tenant
from tests.factories import client, make_admin, make_principal
from tests.kms.helpers import openai_key
from tests.kms.world import SYSTEM, onboard_key

pytestmark = pytest.mark.django_db


@dataclass
class Regions:
    """Two stores, `default` (region eu) and `us`, and the OpenBao behind each, if any."""

    servers: dict[str, Any]
    prefix: str

    def held(self, store: str, tenant: Tenant) -> dict[str, dict[int, str | None]]:
        """Every path the store holds for the tenant, read from the store itself: each
        version's secret, None once destroyed."""
        if not self.servers:
            return _local_held(tenant)
        bao = self.servers[store].client()
        found: dict[str, dict[int, str | None]] = {}
        for path in _listed(bao, f"{self.prefix}/{tenant.id}"):
            meta = bao.secrets.kv.v2.read_secret_metadata(path=path, mount_point="secret")
            found[path.removeprefix(f"{self.prefix}/")] = {
                int(n): None
                if v["destroyed"]
                else bao.secrets.kv.v2.read_secret_version(
                    path=path, version=int(n), mount_point="secret", raise_on_deleted_version=True
                )["data"]["data"]["api_key"]
                for n, v in meta["data"]["versions"].items()
            }
        return found


def _listed(bao: hvac.Client, folder: str) -> list[str]:
    try:
        names = bao.secrets.kv.v2.list_secrets(path=folder, mount_point="secret")["data"]["keys"]
    except hvac.exceptions.InvalidPath:
        return []
    paths = []
    for name in names:
        if name.endswith("/"):
            paths += _listed(bao, f"{folder}/{name.rstrip('/')}")
        else:
            paths.append(f"{folder}/{name}")
    return paths


def _local_held(tenant: Tenant) -> dict[str, dict[int, str | None]]:
    """Both local stores share one table: a path says which one holds it."""
    found: dict[str, dict[int, str | None]] = {}
    for row in LocalSecret.objects.filter(path__startswith=f"{tenant.id}/"):
        secret = None if row.destroyed_at else get_store().get(row.path, row.version)
        found.setdefault(row.path, {})[row.version] = secret
    return found


@pytest.fixture(params=["local", "vault"])
def regions(request: pytest.FixtureRequest, settings: Any) -> Regions:
    if request.param == "local":
        settings.SECRET_STORES = {
            "default": {"backend": "local", "region": "eu"},
            "us": {"backend": "local", "region": "us"},
        }
        return Regions({}, "")
    servers = {
        "default": request.getfixturevalue("bao"),
        "us": request.getfixturevalue("bao_second"),
    }
    prefix = "keyward-test-" + os.urandom(4).hex()
    settings.SECRET_STORES = {
        "default": servers["default"].store_config(path_prefix=prefix, region="eu"),
        "us": servers["us"].store_config(path_prefix=prefix, region="us"),
    }
    return Regions(servers, prefix)


@dataclass
class Rig:
    regions: Regions
    tenant: Tenant
    rotated: ProviderKey  # v1 retired, v2 previous, v3 current
    plain: ProviderKey  # v1 current
    secrets: dict[tuple[str, int], str]
    principal_secret: str
    actors: Any

    def release(self, key: ProviderKey, version: int | None = None) -> str:
        ask: dict[str, Any] = {"tenant": self.tenant.slug, "provider": "openai"}
        ask |= {"key": str(key.pk), "scopes": ["release"]}
        if version is not None:
            ask["key_version"] = version
        issued = client(self.principal_secret).post("/api/v1/tokens", ask, format="json")
        assert issued.status_code == 201, issued.content
        released = client(issued.json()["token"]).post("/api/v1/exchange")
        assert released.status_code == 200, released.content
        return str(released.json()["api_key"])

    def releases_everything(self) -> None:
        """Every live version of both keys is released as it was onboarded."""
        for key in (self.rotated, self.plain):
            key.refresh_from_db()
            for (label, version), secret in self.secrets.items():
                if label == key.label and version in moves.live_versions(key):
                    assert self.release(key, version) == secret
            assert self.release(key) == self.secrets[(key.label, key.current_version)]

    @property
    def alice(self) -> Any:
        return self.actors.as_("alice")

    def start(self, store: str = "us", as_: str = "alice") -> Any:
        return self.actors.as_(as_).post(_url(self.tenant), {"store": store}, format="json")


def _url(tenant: Tenant, tail: str = "") -> str:
    return f"/api/v1/tenants/{tenant.slug}/moves{tail}"


@pytest.fixture
def rig(regions: Regions, actors: Any, provider_stub: Any) -> Rig:
    tenant = actors.tenant_a
    secrets = {("rotated", 1): openai_key()}
    rotated = onboard_key(tenant, secrets[("rotated", 1)], label="rotated")
    for version in (2, 3):
        secrets[("rotated", version)] = openai_key()
        rotated = keys.do_rotate_key(
            rotated,
            secret=secrets[("rotated", version)],
            grace_period_seconds=600,
            validate=False,
            actor=SYSTEM,
        )
    first = KeyVersion.objects.get(key=rotated, version=1)
    assert retirement.do_retire_version(
        first.pk, actor=SYSTEM, now=timezone.now() + timedelta(hours=1)
    )
    secrets[("plain", 1)] = openai_key()
    plain = onboard_key(tenant, secrets[("plain", 1)], label="plain")
    principal, principal_secret = make_principal()
    do_create_grant(principal, tenant, "openai", ["release"], 900, actor=SYSTEM)
    return Rig(regions, tenant, rotated, plain, secrets, principal_secret, actors)


def _run(move_id: Any, rig: Rig | None = None) -> str:
    """Run the move one step at a time; between steps, every exchange still answers."""
    state = TenantMove.objects.get(pk=move_id).state
    while state in ("copying", "verifying", "switching", "destroying"):
        state = moves.do_run_move_step(move_id, actor=SYSTEM).state
        if rig is not None:
            rig.releases_everything()
    return state


def _snapshot(tenant: Tenant) -> Any:
    return (
        Tenant.objects.get(pk=tenant.pk).store,
        sorted(ProviderKey.objects.filter(tenant=tenant).values_list("store", "store_path")),
        sorted(KeyVersion.objects.filter(key__tenant=tenant).values_list("version", "stage")),
        TenantMove.objects.filter(tenant=tenant).count(),
    )


def test_a_move_copies_every_live_version_at_its_number_and_leaves_nothing_in_the_source(rig):
    old_paths = {k.label: k.store_path for k in (rig.rotated, rig.plain)}
    rig.releases_everything()
    response = rig.start()
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["tenant"] == rig.tenant.slug and body["state"] == "copying"
    assert (body["source"], body["target"]) == ("default", "us")
    assert (body["source_region"], body["target_region"]) == ("eu", "us")
    assert _run(body["id"], rig) == "completed"

    assert Tenant.objects.get(pk=rig.tenant.pk).store == "us"
    assert rig.regions.held("default", rig.tenant) == {} or not rig.regions.servers
    held = rig.regions.held("us", rig.tenant)
    for key in (rig.rotated, rig.plain):
        key.refresh_from_db()
        assert key.store == "us" and key.store_path == f"{rig.tenant.id}/{key.id}/{body['id']}"
        assert old_paths[key.label] not in held
    assert held[rig.rotated.store_path] == {
        1: None,  # retired before the move: its number kept, nothing in it
        2: rig.secrets[("rotated", 2)],
        3: rig.secrets[("rotated", 3)],
    }
    assert held[rig.plain.store_path] == {1: rig.secrets[("plain", 1)]}
    assert set(held) == {rig.rotated.store_path, rig.plain.store_path}

    done = rig.alice.get(_url(rig.tenant, f"/{body['id']}")).json()
    assert {s["step"]: s["state"] for s in done["steps"]} == dict.fromkeys(
        ("copy", "verify", "switch", "destroy"), "done"
    )
    assert done["progress"] == {"keys": 2, "versions": 3} and done["finished_at"]
    moved = AuditEvent.objects.get(action="tenant.store_moved")
    assert moved.tenant == rig.tenant.slug
    assert moved.details | {"move": ""} == {
        "move": "",
        "source": "default",
        "target": "us",
        "source_region": "eu",
        "target_region": "us",
        "keys": 2,
        "versions": 3,
        "revoked_keys": 0,
    }
    assert AuditEvent.objects.filter(action="tenant.move_completed").count() == 1
    # The key lives on in the target: its next version follows its own numbers there.
    new = openai_key()
    keys.do_rotate_key(
        rig.rotated, secret=new, grace_period_seconds=0, validate=False, actor=SYSTEM
    )
    assert rig.release(rig.rotated) == new
    assert ProviderKey.objects.get(pk=rig.rotated.pk).current_version == 4


def test_refusals_change_nothing(rig):
    before = _snapshot(rig.tenant)
    unknown = rig.start("atlantis")
    assert unknown.status_code == 400 and "store" in unknown.json()["error"]["fields"]
    same = rig.start("default")
    assert same.status_code == 409 and same.json()["error"]["code"] == "already_on_store"
    other = rig.actors.as_("bob").post(_url(rig.actors.tenant_b), {"store": "us"}, format="json")
    assert other.status_code == 404
    for name in ("carol", "charlie"):
        assert rig.start(as_=name).status_code == 403
    extra = rig.alice.post(_url(rig.tenant), {"store": "us", "now": True}, format="json")
    assert extra.status_code == 400
    assert _snapshot(rig.tenant) == before
    assert not TenantMove.objects.filter(tenant=rig.actors.tenant_b).exists()

    first = rig.start()
    assert first.status_code == 202
    running = _snapshot(rig.tenant)
    second = rig.start()
    assert second.status_code == 409 and second.json()["error"]["code"] == "move_in_progress"
    assert _snapshot(rig.tenant) == running


def test_a_move_is_refused_while_a_rotation_runs(rig):
    keys_before = _snapshot(rig.tenant)
    rotation = rig.alice.post(
        f"/api/v1/tenants/{rig.tenant.slug}/keys/{rig.plain.pk}/rotations",
        {"secret": openai_key()},
        format="json",
    )
    assert rotation.status_code == 202, rotation.content
    refused = rig.start()
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "rotation_in_progress"
    assert _snapshot(rig.tenant)[0] == keys_before[0]
    assert not TenantMove.objects.exists()


def test_until_the_switch_a_moving_tenant_gets_no_new_key_or_version_but_can_revoke(rig):
    move_id = rig.start().json()["id"]
    base = f"/api/v1/tenants/{rig.tenant.slug}/keys"
    before = _snapshot(rig.tenant)
    onboarded = rig.alice.post(
        f"{base}?validate=false",
        {"provider": "openai", "label": "new", "secret": openai_key()},
        format="json",
    )
    rotated = rig.alice.post(
        f"{base}/{rig.plain.pk}/rotate?validate=false", {"secret": openai_key()}, format="json"
    )
    staged = rig.alice.post(
        f"{base}/{rig.plain.pk}/rotations", {"secret": openai_key()}, format="json"
    )
    for refused in (onboarded, rotated, staged):
        assert refused.status_code == 409, refused.content
        assert refused.json()["error"]["code"] == "tenant_moving"
    assert _snapshot(rig.tenant) == before and not Rotation.objects.exists()

    moves.do_run_move_step(move_id, actor=SYSTEM)  # copied
    assert rig.alice.delete(f"{base}/{rig.plain.pk}").status_code == 204
    assert _run(move_id, None) == "completed"
    assert Tenant.objects.get(pk=rig.tenant.pk).store == "us"
    plain = ProviderKey.objects.get(pk=rig.plain.pk)
    assert plain.status == "revoked" and plain.store == "us"
    held = rig.regions.held("us", rig.tenant)
    assert plain.store_path not in held, "the revoked key's copies were destroyed"
    assert list(held) == [ProviderKey.objects.get(pk=rig.rotated.pk).store_path]
    if rig.regions.servers:
        assert rig.regions.held("default", rig.tenant) == {}
    moved = AuditEvent.objects.get(action="tenant.store_moved").details
    assert (moved["keys"], moved["revoked_keys"]) == (1, 1)
    # Once switched, the tenant's keys rotate again, in the target.
    assert (
        rig.alice.post(
            f"{base}/{rig.rotated.pk}/rotate?validate=false",
            {"secret": openai_key()},
            format="json",
        ).status_code
        == 200
    )


def test_a_version_retired_during_the_move_is_destroyed_in_the_target_too(rig):
    move_id = rig.start().json()["id"]
    moves.do_run_move_step(move_id, actor=SYSTEM)  # copied, v2 with them
    previous = KeyVersion.objects.get(key=rig.rotated, version=2)
    later = timezone.now() + timedelta(hours=1)
    assert retirement.do_retire_version(previous.pk, actor=SYSTEM, now=later)
    assert _run(move_id, rig) == "completed"
    rotated = ProviderKey.objects.get(pk=rig.rotated.pk)
    held = rig.regions.held("us", rig.tenant)[rotated.store_path]
    assert held == {1: None, 2: None, 3: rig.secrets[("rotated", 3)]}


def test_a_copy_that_does_not_read_back_identical_fails_the_move_on_the_source(rig):
    move_id = rig.start().json()["id"]
    moves.do_run_move_step(move_id, actor=SYSTEM)  # copied
    path = f"{rig.tenant.id}/{rig.plain.id}/{move_id}"
    get_store("us").destroy(path, [1])  # the target lost the copy
    assert _run(move_id, rig) == "failed"
    failed = TenantMove.objects.get(pk=move_id)
    assert "differs" in failed.failure and failed.discarded_at is not None
    assert failed.switched_at is None
    assert Tenant.objects.get(pk=rig.tenant.pk).store == ""
    assert set(ProviderKey.objects.filter(tenant=rig.tenant).values_list("store", flat=True)) == {
        "default"
    }
    rig.releases_everything()
    held = rig.regions.held("us", rig.tenant)
    assert not [p for p in held if p.endswith(str(move_id))], "its copies were destroyed"
    assert AuditEvent.objects.filter(action="tenant.move_failed").count() == 1
    # The tenant can try again.
    assert rig.start().status_code == 202


def test_a_move_run_twice_switches_once(rig):
    move_id = rig.start().json()["id"]
    assert moves.do_advance_move(move_id, actor=SYSTEM).state == "completed"
    assert moves.do_advance_move(move_id, actor=SYSTEM).state == "completed"
    assert AuditEvent.objects.filter(action="tenant.store_moved").count() == 1
    rig.releases_everything()


def test_the_sweep_takes_up_stalled_moves_and_failed_ones_left_with_copies(rig):
    move_id = rig.start().json()["id"]
    assert jobs.stalled_moves() == []
    later = timezone.now() + timedelta(minutes=2)
    assert jobs.stalled_moves(later) == [str(move_id)]
    TenantMove.objects.filter(pk=move_id).update(state="failed")
    assert jobs.stalled_moves() == [str(move_id)]
    assert jobs.advance_move(move_id).state == "failed"
    assert jobs.stalled_moves(later) == []


def test_the_platform_tenant_is_not_moved(actors, settings):
    settings.SECRET_STORES = {
        "default": {"backend": "local", "region": "eu"},
        "us": {"backend": "local", "region": "us"},
    }
    platform = do_create_tenant("platform", "Platform", platform=True, actor=SYSTEM)
    refused = actors.as_("alice").post(_url(platform), {"store": "us"}, format="json")
    assert refused.status_code == 400, refused.content
    assert refused.json()["error"]["code"] == "platform_tenant"
    assert not TenantMove.objects.filter(tenant=platform).exists()


def test_a_key_rotates_after_a_move_when_its_newest_number_was_a_cancelled_pending_version(rig):
    base = f"/api/v1/tenants/{rig.tenant.slug}/keys/{rig.plain.pk}"
    staged = rig.alice.post(f"{base}/rotations", {"secret": openai_key()}, format="json")
    assert staged.status_code == 202, staged.content
    cancelled = rig.alice.post(f"{base}/rotations/{staged.json()['id']}/cancel")
    assert cancelled.status_code == 200, cancelled.content
    assert KeyVersion.objects.get(key=rig.plain, version=2).stage == "destroyed"
    assert _run(rig.start().json()["id"], rig) == "completed"
    plain = ProviderKey.objects.get(pk=rig.plain.pk)
    assert rig.regions.held("us", rig.tenant)[plain.store_path] == {
        1: rig.secrets[("plain", 1)],
        2: None,  # the cancelled version's number, kept free in the target too
    }

    new = openai_key()
    rotated = rig.alice.post(f"{base}/rotate?validate=false", {"secret": new}, format="json")
    assert rotated.status_code == 200, rotated.content
    assert ProviderKey.objects.get(pk=rig.plain.pk).current_version == 3
    assert rig.release(plain) == new
    again = rig.alice.post(f"{base}/rotations", {"secret": openai_key()}, format="json")
    assert again.status_code == 202, again.content
    assert again.json()["pending_version"] == 4


def test_a_rotation_that_read_the_key_before_a_move_writes_its_secret_to_the_target(rig):
    stale = ProviderKey.objects.get(pk=rig.plain.pk)  # read before the move, as a slow check
    old_path = stale.store_path
    assert _run(rig.start().json()["id"]) == "completed"
    new = openai_key()
    rotated = keys.do_rotate_key(
        stale, secret=new, grace_period_seconds=600, validate=False, actor=SYSTEM
    )
    assert (rotated.store, rotated.current_version) == ("us", 2)
    assert rig.release(rotated) == new
    assert rig.regions.held("us", rig.tenant)[rotated.store_path] == {
        1: rig.secrets[("plain", 1)],
        2: new,
    }
    assert old_path not in rig.regions.held("default", rig.tenant), "nothing in the old region"


def _backoff_passes(move_id: Any) -> None:
    """The time a move waits before copying again has passed."""
    TenantMove.objects.filter(pk=move_id).update(not_before=timezone.now() - timedelta(seconds=1))


def _left_in_target(rig: Rig, move_id: Any) -> list[str]:
    return [p for p in rig.regions.held("us", rig.tenant) if p.endswith(str(move_id))]


def _on_its_source(rig: Rig) -> None:
    """The tenant works on the source store alone and may add keys again."""
    assert Tenant.objects.get(pk=rig.tenant.pk).store == ""
    stores = ProviderKey.objects.filter(tenant=rig.tenant).values_list("store", flat=True)
    assert set(stores) == {"default"}
    assert not queries.tenant_moving(rig.tenant.pk)


def test_a_move_whose_source_lost_a_live_version_backs_off_then_fails_on_the_source(rig):
    move_id = rig.start().json()["id"]
    # A retirement killed between the store call and the row: v2 is gone, its row live.
    get_store("default").destroy(rig.rotated.store_path, [2])
    steps = [moves.do_run_move_step(move_id, actor=SYSTEM) for _ in range(3)]
    assert [s.state for s in steps] == ["verifying", "switching", "copying"]
    assert steps[-1].retry_after is not None and steps[-1].retry_after > 0
    waited = TenantMove.objects.get(pk=move_id)
    assert waited.not_before is not None and waited.not_before > timezone.now()
    copies = rig.regions.held("us", rig.tenant)
    # Before the back-off has passed neither a delivery nor the sweep copies again.
    again = moves.do_run_move_step(move_id, actor=SYSTEM)
    assert again.state == "copying" and again.retry_after is not None
    assert jobs.stalled_moves(timezone.now() + timedelta(seconds=1)) == []
    assert rig.regions.held("us", rig.tenant) == copies

    for _ in range(3 * moves.RECOPY_LIMIT):
        _backoff_passes(move_id)
        advanced = moves.do_advance_move(move_id, actor=SYSTEM)
        if advanced.state == "failed":
            break
        assert advanced.state == "copying" and advanced.retry_after is not None
    failed = TenantMove.objects.get(pk=move_id)
    assert failed.state == "failed", failed.steps
    assert f"version 2 of key {rig.rotated.pk}" in failed.failure
    assert f"{moves.RECOPY_LIMIT} attempts" in failed.failure
    assert failed.discarded_at is not None and failed.switched_at is None
    assert _left_in_target(rig, move_id) == []
    _on_its_source(rig)
    assert rig.release(rig.plain) == rig.secrets[("plain", 1)]
    assert rig.release(rig.rotated) == rig.secrets[("rotated", 3)]
    assert AuditEvent.objects.filter(action="tenant.move_failed").count() == 1


def test_a_move_is_cancelled_before_the_switch_and_the_tenant_stays_on_its_source(rig):
    move_id = rig.start().json()["id"]
    moves.do_run_move_step(move_id, actor=SYSTEM)  # copied
    assert _left_in_target(rig, move_id)
    url = _url(rig.tenant, f"/{move_id}/cancel")
    before = (_snapshot(rig.tenant), TenantMove.objects.get(pk=move_id).state)
    other_admin = client(make_admin("security_admin", [rig.actors.tenant_b])[1])
    refused = {
        "another tenant's admin": other_admin.post(url).status_code,
        "through another tenant": rig.alice.post(
            _url(rig.actors.tenant_b, f"/{move_id}/cancel")
        ).status_code,
        "an auditor": rig.actors.as_("carol").post(url).status_code,
        "no role": rig.actors.as_("charlie").post(url).status_code,
    }
    assert refused == {
        "another tenant's admin": 404,
        "through another tenant": 404,
        "an auditor": 403,
        "no role": 403,
    }
    assert (_snapshot(rig.tenant), TenantMove.objects.get(pk=move_id).state) == before

    cancelled = rig.actors.as_("bob").post(url)
    assert cancelled.status_code == 200, cancelled.content
    body = cancelled.json()
    assert body["state"] == "cancelled" and body["finished_at"] and body["switched_at"] is None
    assert _left_in_target(rig, move_id) == [], "its copies were destroyed"
    assert TenantMove.objects.get(pk=move_id).discarded_at is not None
    _on_its_source(rig)
    rig.releases_everything()
    event = AuditEvent.objects.get(action="tenant.move_cancelled")
    assert (event.tenant, event.details["move"]) == (rig.tenant.slug, str(move_id))
    # A delivery that arrives later does nothing; the tenant can move again.
    assert moves.do_advance_move(move_id, actor=SYSTEM).state == "cancelled"
    assert _left_in_target(rig, move_id) == []
    twice = rig.alice.post(url)
    assert twice.status_code == 409 and twice.json()["error"]["code"] == "move_not_cancellable"
    assert rig.start().status_code == 202


def test_a_move_is_not_cancelled_once_switched(rig):
    move_id = rig.start().json()["id"]
    for _ in range(3):
        moves.do_run_move_step(move_id, actor=SYSTEM)  # copied, verified, switched
    url = _url(rig.tenant, f"/{move_id}/cancel")
    switched = _snapshot(rig.tenant)
    refused = rig.alice.post(url)
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "move_not_cancellable"
    assert TenantMove.objects.get(pk=move_id).state == "destroying"
    assert _snapshot(rig.tenant) == switched
    assert not AuditEvent.objects.filter(action="tenant.move_cancelled").exists()
    assert _run(move_id, rig) == "completed"
    assert rig.alice.post(url).status_code == 409


def test_a_verify_run_left_from_before_the_switch_keeps_a_pending_version_made_after_it(rig):
    move_id = rig.start().json()["id"]
    moves.do_run_move_step(move_id, actor=SYSTEM)  # copied
    stale = TenantMove.objects.select_related("tenant").get(pk=move_id)  # a slow verify run
    assert _run(move_id) == "completed"  # another worker verified, switched and emptied
    pending = openai_key()
    base = f"/api/v1/tenants/{rig.tenant.slug}/keys/{rig.rotated.pk}"
    staged = rig.alice.post(f"{base}/rotations", {"secret": pending}, format="json")
    assert staged.status_code == 202, staged.content
    assert staged.json()["pending_version"] == 4

    moves._verify(stale, SYSTEM)  # the slow run reaches the key only now

    rotated = ProviderKey.objects.get(pk=rig.rotated.pk)
    assert rig.regions.held("us", rig.tenant)[rotated.store_path][4] == pending
    assert KeyVersion.objects.get(key=rotated, version=4).stage == "pending"
    assert TenantMove.objects.get(pk=move_id).state == "completed"


def test_a_key_revoked_after_the_switch_is_destroyed_in_the_source_it_left_too(rig):
    old_path = rig.plain.store_path
    move_id = rig.start().json()["id"]
    for _ in range(3):
        moves.do_run_move_step(move_id, actor=SYSTEM)  # copied, verified, switched
    assert TenantMove.objects.get(pk=move_id).state == "destroying"
    assert rig.regions.held("default", rig.tenant)[old_path] == {1: rig.secrets[("plain", 1)]}

    revoked = rig.alice.delete(f"/api/v1/tenants/{rig.tenant.slug}/keys/{rig.plain.pk}")
    assert revoked.status_code == 204, revoked.content
    plain = ProviderKey.objects.get(pk=rig.plain.pk)
    assert plain.secrets_destroyed_at is not None
    assert AuditEvent.objects.filter(action="key.secrets_destroyed").count() == 1
    # Recorded destroyed only once no store holds it: the source it left neither.
    assert rig.regions.held("default", rig.tenant)[old_path] == {1: None}
    assert rig.regions.held("us", rig.tenant)[plain.store_path] == {1: None}
    assert _run(move_id) == "completed"
    assert rig.release(rig.rotated) == rig.secrets[("rotated", 3)]
