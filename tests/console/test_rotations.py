"""Staged rotations on a key's console page: started with a request token made when the
form is shown (a double submit starts one rotation), moved on by a worker and shown step
by step, cancelled until the new version is current, refused with nothing changed, read
by auditors and hidden from admins of other tenants, through the API's actions; admin
credentials marked on the keys list and linked from the keys they rotate."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client

from audit.models import AuditEvent
from kms import jobs
from kms.actions import keys, retirement
from kms.actions.rotations import RotationRequest, do_start_rotation
from kms.models import KeyVersion, ProviderKey, Rotation, RotationState, Stage
from tests import provider_stub as docs
from tests.admin_stubs.openai import ADMIN_KEY, PROJECT
from tests.console.helpers import make_console_user, signed_in
from tests.kms.helpers import openai_key
from tests.kms.world import SYSTEM

pytestmark = pytest.mark.django_db

TOKEN = re.compile(r'name="staged-client_request_token" value="([^"]+)"')


def _state() -> tuple[int, int, int, int]:
    """What a refused change must leave as it was."""
    return (
        Rotation.objects.count(),
        KeyVersion.objects.count(),
        KeyVersion.objects.filter(stage=Stage.PENDING).count(),
        AuditEvent.objects.exclude(action="access.denied").count(),
    )


def _url(key: ProviderKey, tail: str = "") -> str:
    return f"/console/tenants/{key.tenant.slug}/keys/{key.pk}/{tail + '/' if tail else ''}"


def _token(client: Client, key: ProviderKey) -> str:
    """The request token the key page's staged rotation form carries."""
    found = TOKEN.search(client.get(_url(key)).content.decode())
    assert found is not None
    return found.group(1)


def _form(token: str, secret: str = "", grace: str | None = "3600", **extra: str) -> dict:
    form = {
        "staged-secret": secret,
        "staged-grace_period_seconds": grace,
        "staged-validate": "on",
        "staged-client_request_token": token,
        **extra,
    }
    return {name: value for name, value in form.items() if value is not None}


def _start(client: Client, key: ProviderKey, secret: str, **extra: str) -> Any:
    form = _form(_token(client, key), secret, **extra)
    return client.post(_url(key, "rotations"), form)


@pytest.fixture
def alice(actors: Any) -> Client:
    return signed_in(make_console_user("security_admin", name="alice"))


def test_a_staged_rotation_is_tested_by_a_worker_and_shown_step_by_step(
    world, provider_stub, alice
):
    key, new = world.key_a, openai_key()
    page = alice.get(_url(key)).content.decode()
    assert "Staged rotation" in page and "Rotate now" in page and "No staged rotation" in page
    response = _start(alice, key, new)
    assert response.status_code == 302, response.content.decode()
    assert response["Location"] == _url(key) + "?done=staged"
    rotation = Rotation.objects.get(key=key)
    assert rotation.state == RotationState.TESTING and rotation.mode == "manual"
    shown = alice.get(response["Location"]).content.decode()
    assert "The staged rotation has started" in shown and new not in shown
    assert 'badge-testing">Testing' in shown and "Cancel rotation" in shown
    assert "A staged rotation is running" in shown and "Start staged rotation" not in shown
    assert jobs.advance_rotation(rotation.pk).state == RotationState.RETIRING
    assert provider_stub.seen[-1].headers["authorization"] == f"Bearer {new}"
    shown = alice.get(_url(key)).content.decode()
    assert 'badge-retiring">Retiring' in shown and "Cancel rotation" not in shown
    made_current = shown.split("Make it current")[1].split("</li>")[0]
    assert "badge-step-done" in made_current
    assert "Start staged rotation" in shown  # the next one may start
    key.refresh_from_db()
    assert key.current_version == 2 and key.hint == "..." + new[-4:]
    started = AuditEvent.objects.get(action="key.rotation_started", target=f"key:{key.pk}")
    assert new not in str(started.details)


def test_a_stuck_step_says_what_it_waits_for(world, provider_stub, alice):
    assert _start(alice, world.key_a, openai_key()).status_code == 302
    provider_stub.answer(429, docs.OPENAI_RATE)
    rotation = Rotation.objects.get()
    assert jobs.advance_rotation(rotation.pk).state == RotationState.TESTING
    shown = alice.get(_url(world.key_a)).content.decode()
    assert "waiting: the provider answered rate_limited" in shown


def test_a_running_rotation_is_cancelled_and_a_promoted_one_cannot_be(world, provider_stub, alice):
    key = world.key_a
    assert _start(alice, key, openai_key()).status_code == 302
    rotation = Rotation.objects.get()
    response = alice.post(_url(key, f"rotations/{rotation.pk}/cancel"))
    assert response.status_code == 302
    assert response["Location"].endswith("?done=rotation-cancelled")
    rotation.refresh_from_db()
    assert rotation.state == RotationState.CANCELLED
    assert KeyVersion.objects.get(key=key, version=2).stage == Stage.DESTROYED
    assert AuditEvent.objects.filter(action="key.rotation_cancelled").count() == 1
    shown = alice.get(response["Location"]).content.decode()
    assert "The rotation is cancelled" in shown and "Reason: Cancelled." in shown
    assert _start(alice, key, openai_key()).status_code == 302
    second = Rotation.objects.get(state=RotationState.TESTING)
    jobs.advance_rotation(second.pk)
    before = _state()
    late = alice.post(_url(key, f"rotations/{second.pk}/cancel"))
    assert late.status_code == 409
    assert "Only a rotation whose new version is not yet current" in late.content.decode()
    assert _state() == before


def test_a_second_rotation_while_one_runs_is_a_conflict_that_changes_nothing(
    world, provider_stub, alice
):
    key = world.key_a
    token = _token(alice, key)  # a form shown before the first rotation started
    assert _start(alice, key, openai_key()).status_code == 302
    before = _state()
    response = alice.post(_url(key, "rotations"), _form(token, openai_key()))
    assert response.status_code == 409
    page = response.content.decode()
    assert "Another rotation of this key is running" in page and 'role="alert"' in page
    assert _state() == before


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"secret": ""}, "This field is required."),
        ({"grace": "99"}, "Select a valid choice."),
        ({"grace": "-1"}, "Select a valid choice."),
        ({"grace": None}, "This field is required."),
        ({"secret": "two words"}, "Must be printable ASCII without spaces."),
        ({"token": "not a token!"}, "The form was out of date"),
    ],
)
def test_bad_input_is_refused_and_changes_nothing(world, provider_stub, alice, change, message):
    key, secret = world.key_a, openai_key()
    token = change.pop("token", _token(alice, key))
    form = _form(token, change.pop("secret", secret), **change)
    before = _state()
    response = alice.post(_url(key, "rotations"), form)
    assert response.status_code == 400
    page = response.content.decode()
    assert message in page and 'role="alert"' in page
    assert secret not in page and "two words" not in page
    fresh = TOKEN.search(page)
    assert fresh is not None and fresh.group(1) != token  # the form comes back with a new one
    assert _state() == before
    assert provider_stub.seen == []


def test_a_double_submit_starts_one_rotation(world, provider_stub, alice):
    key, new = world.key_a, openai_key()
    form = _form(_token(alice, key), new)
    first = alice.post(_url(key, "rotations"), form)
    again = alice.post(_url(key, "rotations"), form)
    assert first.status_code == again.status_code == 302
    assert Rotation.objects.count() == 1
    assert AuditEvent.objects.filter(action="key.rotation_started").count() == 1
    before = _state()
    other = alice.post(_url(key, "rotations"), {**form, "staged-secret": openai_key()})
    assert other.status_code == 409
    assert "started a rotation with another secret" in other.content.decode()
    assert _state() == before


def test_an_auditor_sees_the_rotations_but_changes_nothing(world, provider_stub, alice):
    key = world.key_a
    assert _start(alice, key, openai_key()).status_code == 302
    rotation = Rotation.objects.get()
    carol = signed_in(make_console_user("auditor", name="carol"))
    page = carol.get(_url(key)).content.decode()
    assert "Rotations" in page and 'badge-testing">Testing' in page
    assert "Cancel rotation" not in page and "Start staged rotation" not in page
    before = _state()
    assert carol.post(_url(key, "rotations"), _form("t-1", openai_key())).status_code == 403
    assert carol.post(_url(key, f"rotations/{rotation.pk}/cancel")).status_code == 403
    assert _state() == before
    denied = AuditEvent.objects.filter(action="access.denied", details__status=403)
    assert [e.tenant for e in denied] == [key.tenant.slug] * 2


def test_another_tenants_rotations_are_hidden_and_the_refusals_audited(world, provider_stub):
    a, b = world.actors.tenant_a, world.actors.tenant_b
    theirs = world.key_b
    rotation, _ = _started(theirs)
    bob = signed_in(make_console_user("security_admin", [a], name="bob"))
    before = _state()
    assert bob.post(_url(theirs, "rotations"), _form("t-1", openai_key())).status_code == 404
    assert bob.post(_url(theirs, f"rotations/{rotation.pk}/cancel")).status_code == 404
    # another tenant's rotation under a key she covers names nothing either
    assert bob.post(_url(world.key_a, f"rotations/{rotation.pk}/cancel")).status_code == 404
    assert bob.post(_url(world.key_a, "rotations/not-a-uuid/cancel")).status_code == 404
    assert _state() == before
    rotation.refresh_from_db()
    assert rotation.state == RotationState.TESTING
    hidden = AuditEvent.objects.filter(action="access.denied", details__status=404)
    assert [e.tenant for e in hidden] == [b.slug, b.slug]


def test_changes_need_their_csrf_token_and_a_signed_in_user(world, provider_stub):
    rotation, _ = _started(world.key_a)
    strict = Client(enforce_csrf_checks=True, REMOTE_ADDR="10.9.9.7")
    strict.force_login(make_console_user("security_admin", name="alice"))
    before = _state()
    start = strict.post(_url(world.key_a, "rotations"), _form("t-2", openai_key()))
    cancel = strict.post(_url(world.key_a, f"rotations/{rotation.pk}/cancel"))
    assert start.status_code == cancel.status_code == 403
    anonymous = Client().post(_url(world.key_a, f"rotations/{rotation.pk}/cancel"))
    assert anonymous.status_code == 302 and anonymous["Location"].startswith("/console/login/")
    assert _state() == before
    rotation.refresh_from_db()
    assert rotation.state == RotationState.TESTING


def test_a_revoked_key_offers_no_staged_rotation_and_refuses_one(world, provider_stub, alice):
    key = world.key_a
    token = _token(alice, key)
    retirement.do_revoke_key(key, actor=SYSTEM)
    assert "Start staged rotation" not in alice.get(_url(key)).content.decode()
    before = _state()
    response = alice.post(_url(key, "rotations"), _form(token, openai_key()))
    assert response.status_code == 409 and "The key is revoked." in response.content.decode()
    assert _state() == before


def test_an_admin_credential_is_marked_and_has_its_provider_create_the_new_key(
    world, provider_stub, alice
):
    admin = keys.do_onboard_key(
        world.actors.tenant_a,
        keys.KeyInput("openai", "admin", ADMIN_KEY, kind="admin", upstream={"project_id": PROJECT}),
        validate=False,
        actor=SYSTEM,
    )
    key = world.key_a
    ProviderKey.objects.filter(pk=key.pk).update(admin_credential=admin)
    world.token()
    page = alice.get("/console/keys/").content.decode()
    rows = [row.split("</tr>")[0] for row in page.split("<tr>")]
    assert "Admin credential" in next(row for row in rows if str(admin.pk) in row)
    assert "Admin credential" not in next(row for row in rows if str(key.pk) in row)
    admin_page = alice.get(_url(admin)).content.decode()
    assert "no token uses it" in admin_page and world.principal.name not in admin_page
    assert f'href="{_url(key)}"' in admin_page  # the keys it rotates
    page = alice.get(_url(key)).content.decode()
    assert "Rotated by" in page and f'href="{_url(admin)}"' in page
    assert "leave empty to have openai create the new key" in page
    assert world.principal.name in page  # a key's own tokens are listed
    response = _start(alice, key, "")
    assert response.status_code == 302 and response["Location"].endswith("?done=staged-automated")
    rotation = Rotation.objects.get(key=key)
    assert rotation.mode == "automated" and rotation.state == RotationState.CREATING
    shown = alice.get(_url(key)).content.decode()
    assert "Automated rotation" in shown and "Create the new key at the provider" in shown


def _started(key: ProviderKey) -> tuple[Rotation, bool]:
    return do_start_rotation(key, RotationRequest(secret=openai_key()), actor=SYSTEM)
