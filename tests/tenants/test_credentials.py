"""Credential format and storage (security.md rule 5)."""

from __future__ import annotations

import math
import zlib
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.db.models import signals
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from kms.models import ScopedToken
from kms.queries import load_token
from tenants import credentials
from tenants.models import AdminToken, ServicePrincipal
from tests.factories import client, make_admin, make_principal


def test_credentials_carry_prefix_256_random_bits_and_a_checksum():
    minted = {credentials.mint(p).plaintext for p in credentials.PREFIXES for _ in range(50)}
    assert len(minted) == 150
    for plaintext in minted:
        assert plaintext[:4] in credentials.PREFIXES
        assert len(plaintext) == 4 + 12 + 43 + 6
        assert credentials.parse(plaintext) is not None
    assert credentials.SECRET_LEN * math.log2(62) >= 256
    sample = next(iter(minted))
    flipped = sample[:20] + ("A" if sample[20] != "A" else "B") + sample[21:]
    assert credentials.parse(flipped) is None, "a typo must fail the checksum"
    body = sample[:-6]
    assert credentials._checksum(body) == credentials._base62(zlib.crc32(body.encode()), 6)


@pytest.mark.django_db
def test_only_hashes_of_credentials_are_in_the_database():
    _, admin_token = make_admin("security_admin")
    _, principal_secret = make_principal()
    with connection.cursor() as cursor:
        dumps = []
        for table in ("tenants_admintoken", "tenants_serviceprincipal", "audit_event"):
            cursor.execute(f"SELECT * FROM {table}")
            dumps.append(repr(cursor.fetchall()))
    everything = "\n".join(dumps)
    for secret in (admin_token, principal_secret):
        assert secret not in everything
        assert secret[4 + 12 :] not in everything, "the secret part must not be stored"
    row = AdminToken.objects.get(key_id=admin_token[4:16])
    assert row.digest == credentials.digest(admin_token, row.pepper_id)


@pytest.mark.django_db
def test_unknown_and_wrong_secrets_get_the_same_401():
    _, token = make_admin("security_admin")
    unknown = credentials.mint(credentials.ADMIN_PREFIX).plaintext
    # same key id, different secret, valid checksum
    body = token[:16] + credentials.mint(credentials.ADMIN_PREFIX).plaintext[16:59]
    wrong = body + credentials._checksum(body)
    responses = [client(t).get("/api/v1/tenants") for t in (unknown, wrong, "kwa_garbage")]
    bodies = []
    for response in responses:
        assert response.status_code == 401
        data = response.json()
        del data["error"]["request_id"]
        bodies.append(data)
        assert response["WWW-Authenticate"].startswith("Bearer")
    assert bodies[0] == bodies[1] == bodies[2]
    assert client(token).get("/api/v1/tenants").status_code == 200


@pytest.mark.django_db
def test_a_rotated_principal_secret_stops_working_at_once(actors):
    principal, old = make_principal()
    assert client(old).get("/api/v1/tenants").status_code == 403  # authenticated, no role
    response = actors.as_("alice").post(f"/api/v1/principals/{principal.id}/rotate-secret")
    assert response.status_code == 200
    new = response.json()["client_secret"]
    assert new != old
    assert client(old).get("/api/v1/tenants").status_code == 401
    assert client(new).get("/api/v1/tenants").status_code == 403


@pytest.mark.django_db
def test_a_deleted_principal_secret_stops_working_at_once(actors):
    principal, secret = make_principal()
    assert actors.as_("alice").delete(f"/api/v1/principals/{principal.id}").status_code == 204
    assert not ServicePrincipal.objects.filter(pk=principal.pk).exists()
    assert client(secret).get("/api/v1/tenants").status_code == 401
    assert actors.as_("alice").delete(f"/api/v1/principals/{principal.id}").status_code == 404


@pytest.mark.django_db
def test_last_used_is_written_at_most_once_a_minute():
    _, token = make_admin("security_admin")
    row = AdminToken.objects.get(key_id=token[4:16])
    assert row.last_used_at is None
    assert client(token).get("/api/v1/tenants").status_code == 200
    row.refresh_from_db()
    first = row.last_used_at
    assert first is not None
    assert client(token).get("/api/v1/tenants").status_code == 200
    row.refresh_from_db()
    assert row.last_used_at == first
    AdminToken.objects.filter(pk=row.pk).update(last_used_at=first - timedelta(seconds=61))
    assert client(token).get("/api/v1/tenants").status_code == 200
    row.refresh_from_db()
    assert row.last_used_at > first - timedelta(seconds=1)
    assert row.last_used_at <= timezone.now()


@pytest.mark.django_db
def test_a_pepper_rotation_rehashes_on_use_and_retiring_the_old_pepper_locks_out_the_rest(settings):
    old_ring = dict(settings.PEPPERS)
    _, used = make_admin("security_admin")
    _, unused = make_admin("security_admin")
    new_ring = {**old_ring, max(old_ring) + 1: b"n" * 40}
    with override_settings(PEPPERS=new_ring):
        assert client(used).get("/api/v1/tenants").status_code == 200
        row = AdminToken.objects.get(key_id=used[4:16])
        assert row.pepper_id == max(new_ring)
        assert row.digest == credentials.digest(used, max(new_ring))
    retired = {max(new_ring): new_ring[max(new_ring)]}
    with override_settings(PEPPERS=retired):
        assert client(used).get("/api/v1/tenants").status_code == 200
        assert client(unused).get("/api/v1/tenants").status_code == 401


@pytest.mark.django_db
def test_an_expired_admin_token_is_refused_like_any_other():
    _, token = make_admin("security_admin")
    AdminToken.objects.filter(key_id=token[4:16]).update(expires_at=timezone.now())
    response = client(token).get("/api/v1/tenants")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthenticated"


@pytest.mark.django_db
def test_a_known_id_with_a_wrong_secret_does_the_work_of_an_unknown_id(world):
    """The refusal of a known lookup id costs what an unknown one costs: one query, one
    HMAC, and no row built (building the row and what it joins was the measurable
    difference); `scripts/bench W1-W3` reports the timing of both."""
    other = "A" * credentials.SECRET_LEN
    presented: dict[type[Any], str] = {
        AdminToken: make_admin("security_admin")[1],
        ServicePrincipal: world.secret,
        ScopedToken: world.token(scopes=["release"]),
    }
    lookups: dict[type[Any], Any] = {ScopedToken: load_token}
    built: list[type] = []

    def count(sender: type, **kwargs: object) -> None:
        built.append(sender)

    signals.post_init.connect(count)
    try:
        for model, plaintext in presented.items():
            parsed = credentials.parse(plaintext)
            assert parsed is not None
            for key_id, reason in ((parsed.key_id, "mismatch"), ("Z" * 12, "unknown")):
                spelled = credentials.parse(credentials.spell(parsed.prefix, key_id, other))
                assert spelled is not None
                built.clear()
                with (
                    CaptureQueriesContext(connection) as queries,
                    pytest.raises(credentials.Rejected) as refused,
                ):
                    credentials.verify(model, spelled, lookup=lookups.get(model))
                assert refused.value.reason == reason
                assert (len(queries), built) == (1, []), (model.__name__, reason)
            built.clear()
            assert credentials.verify(model, parsed, lookup=lookups.get(model)).key_id
            assert model in built, "a matching credential is built"
    finally:
        signals.post_init.disconnect(count)
