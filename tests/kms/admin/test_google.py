"""The Google admin adapter against a stub of Google's token endpoint and API Keys API."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from urllib.parse import parse_qs

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from kms.providers.admin import ADMIN_ADAPTERS, AdminCredential
from kms.providers.admin.google import GoogleAdmin
from tests.admin_stubs import google as docs
from tests.admin_stubs.google import GoogleStub, private_key
from tests.admin_stubs.routed import body_of, echoed, problems_match, refusal, served
from tests.kms.test_canary import assert_absent

PROJECT = "keyward-test"
NAME = "keyward-rotation-5f0c2a9e"


@pytest.fixture
def stub() -> Iterator[GoogleStub]:
    yield from served(GoogleStub())


@pytest.fixture
def adapter() -> GoogleAdmin:
    fast = GoogleAdmin()
    fast.poll_interval = 0.0
    return fast


def admin(stub: GoogleStub, **changes: str) -> AdminCredential:
    return AdminCredential(
        secret=docs.key_file(stub.token_uri, **changes),
        settings={"project_id": PROJECT},
        base_url=stub.api,
    )


def unb64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def test_it_is_registered_as_the_google_admin_adapter():
    assert isinstance(ADMIN_ADAPTERS["google"], GoogleAdmin)
    assert ADMIN_ADAPTERS["google"].creates_keys


def test_mint_creates_a_key_for_the_gemini_api_and_returns_its_string_and_name(stub, adapter):
    minted = adapter.mint(admin(stub), name=NAME)

    [name] = stub.keys
    assert minted.upstream_id == name
    assert minted.secret == stub.strings[name]
    _token, create, poll, read = stub.seen
    assert (create.method, create.path) == ("POST", f"/v2/projects/{PROJECT}/locations/global/keys")
    assert create.headers["authorization"] == f"Bearer {docs.TOKEN}"
    assert body_of(create) == {
        "displayName": NAME,
        "restrictions": {"apiTargets": [{"service": "generativelanguage.googleapis.com"}]},
    }
    assert (poll.method, poll.path.startswith("/v2/operations/akmf.")) == ("GET", True)
    assert (read.method, read.path) == ("GET", f"/v2/{name}/keyString")
    assert read.headers["authorization"] == f"Bearer {docs.TOKEN}"


def test_the_token_request_is_a_signed_jwt_bearer_assertion_and_nothing_else(stub, adapter):
    adapter.minted(admin(stub), name=NAME)

    token = stub.seen[0]
    assert (token.method, token.path) == ("POST", "/token")
    assert token.headers["content-type"] == "application/x-www-form-urlencoded"
    assert "authorization" not in token.headers
    form = parse_qs(token.body.decode())
    assert form["grant_type"] == ["urn:ietf:params:oauth:grant-type:jwt-bearer"]
    header, claims, signature = form["assertion"][0].split(".")
    assert json.loads(unb64(header)) == {
        "alg": "RS256",
        "typ": "JWT",
        "kid": "4c3b2a1f0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b",
    }
    said = json.loads(unb64(claims))
    assert said["iss"] == "keyward-rotator@keyward-test.iam.gserviceaccount.com"
    assert said["scope"] == "https://www.googleapis.com/auth/cloud-platform"
    assert said["aud"] == stub.token_uri
    assert said["exp"] - said["iat"] == 3600
    private_key().public_key().verify(
        unb64(signature), f"{header}.{claims}".encode(), padding.PKCS1v15(), hashes.SHA256()
    )


def test_minted_finds_the_keys_of_that_display_name_on_every_page(stub, adapter):
    wanted = [stub.add_key(NAME), stub.add_key(NAME)]
    for other in ("Gemini production", "keyward-rotation-0000", "Browser key"):
        stub.add_key(other)
    stub.keys = dict(sorted(stub.keys.items(), key=lambda kv: kv[0] not in wanted[1:]))

    assert sorted(adapter.minted(admin(stub), name=NAME)) == sorted(wanted)
    lists = [s for s in stub.seen if s.path.endswith("/keys")]
    assert [s.query for s in lists] == ["", "pageToken=2", "pageToken=4"]
    assert {s.path for s in lists} == {f"/v2/projects/{PROJECT}/locations/global/keys"}


def test_minted_finds_nothing_when_no_key_has_that_name(stub, adapter):
    stub.add_key("Gemini production")
    assert adapter.minted(admin(stub), name=NAME) == []


def test_retire_deletes_the_key_and_a_second_retire_succeeds(stub, adapter):
    name = stub.add_key("old")
    adapter.retire(admin(stub), upstream_id=name, hint="...abcd")
    assert name not in stub.keys
    adapter.retire(admin(stub), upstream_id=name, hint="...abcd")

    deletes = stub.requests("DELETE")
    assert [(d.path, d.headers["authorization"]) for d in deletes] == [
        (f"/v2/{name}", f"Bearer {docs.TOKEN}")
    ] * 2


@pytest.mark.parametrize(
    "upstream_id",
    ["", "AIzaSyWhatever", "projects/p/locations/global/keys/../../../token", "operations/x"],
)
def test_retire_refuses_an_upstream_id_that_is_not_a_key_name(stub, adapter, upstream_id):
    refused = refusal(lambda: adapter.retire(admin(stub), upstream_id=upstream_id))
    assert not refused.transient
    assert stub.seen == []


def test_an_operation_that_does_not_finish_is_transient_and_its_key_is_found_again(stub, adapter):
    stub.polls_before_done = 100
    adapter.poll_attempts = 3
    refused = refusal(lambda: adapter.mint(admin(stub), name=NAME))
    assert refused.transient
    assert len([s for s in stub.seen if "/operations/" in s.path]) == 3
    assert adapter.minted(admin(stub), name=NAME) == list(stub.keys)


@pytest.mark.parametrize(("code", "transient"), [(8, True), (14, True), (7, False), (3, False)])
def test_a_failed_operation_is_transient_only_for_a_passing_condition(
    stub, adapter, code, transient
):
    failed = {
        "name": "operations/akmf.p7-1",
        "done": True,
        "error": {"code": code, "message": "no"},
    }
    stub.fail(200, failed, path="/keys")
    refused = refusal(lambda: adapter.mint(admin(stub), name=NAME))
    assert refused.transient is transient
    assert "operation failed: no" in refused.reason


@pytest.mark.parametrize(
    ("path", "status", "body", "transient"),
    [
        ("/keys", 429, docs.RESOURCE_EXHAUSTED, True),
        ("/keys", 503, docs.UNAVAILABLE, True),
        ("/keys", 500, b"<html>Server Error</html>", True),
        ("/keys", 401, docs.UNAUTHENTICATED, False),
        ("/keys", 403, docs.PERMISSION_DENIED, False),
        ("/keys", 400, docs.INVALID_ARGUMENT, False),
        ("/keys", 404, docs.NOT_FOUND, False),
        ("/keyString", 503, docs.UNAVAILABLE, True),
        ("/keyString", 403, docs.PERMISSION_DENIED, False),
        ("/token", 400, docs.INVALID_GRANT, False),
        ("/token", 503, docs.UNAVAILABLE, True),
    ],
)
def test_each_documented_refusal_is_transient_or_permanent(
    stub, adapter, path, status, body, transient
):
    stub.fail(status, body, path=path, headers={"Retry-After": "17"} if status == 429 else None)
    refused = refusal(lambda: adapter.mint(admin(stub), name=NAME))
    assert refused.transient is transient
    assert refused.reason.startswith(f"HTTP {status}")
    assert refused.retry_after == (17.0 if status == 429 else None)


def test_listing_and_deleting_map_refusals_the_same_way(stub, adapter):
    gone = f"projects/{PROJECT}/locations/global/keys/gone"
    stub.fail(429, docs.RESOURCE_EXHAUSTED, path="/keys", headers={"Retry-After": "5"})
    stub.fail(429, docs.RESOURCE_EXHAUSTED, path="/gone", headers={"Retry-After": "5"})
    for refused in (
        refusal(lambda: adapter.minted(admin(stub), name=NAME)),
        refusal(lambda: adapter.retire(admin(stub), upstream_id=gone)),
    ):
        assert (refused.transient, refused.retry_after) == (True, 5.0)


def test_a_timeout_is_transient(stub, adapter, settings):
    settings.PROVIDER_TIMEOUT_MS = 200
    stub.fail(200, {}, path="/keys", delay=1.0)
    refused = refusal(lambda: adapter.mint(admin(stub), name=NAME))
    assert (refused.transient, refused.reason) == (True, "timeout")


def secret_of(credential: AdminCredential, which: str) -> str:
    spelled: dict[str, str] = {
        "key file": credential.secret,
        "private key": json.loads(credential.secret)["private_key"],
        "access token": docs.TOKEN,
    }
    return spelled[which]


@pytest.mark.parametrize(
    ("path", "which"),
    [
        ("/token", "key file"),
        ("/token", "private key"),
        ("/keys", "key file"),
        ("/keys", "private key"),
        ("/keys", "access token"),
        ("/keyString", "access token"),
    ],
)
@pytest.mark.parametrize("spelling", ["raw", "url", "base64"])
def test_refusals_that_echo_the_service_account_or_the_token_carry_neither(
    stub, adapter, path, which, spelling
):
    credential = admin(stub)
    secret = secret_of(credential, which)
    echo = echoed(secret, spelling)
    stub.fail(400, {"error": {"code": 400, "message": f"bad: {echo}"}}, path=path)
    refused = refusal(lambda: adapter.mint(credential, name=NAME))
    assert refused.reason.startswith("HTTP 400: bad: ")
    assert_absent(secret, str(refused), f"a refused {path}")
    key = json.loads(credential.secret)
    pem = "".join(key["private_key"].splitlines()[1:-1])
    for part in (pem, key["private_key_id"], docs.TOKEN):  # no stretch of a secret either
        for i in range(0, len(part) - 12, 12):
            assert part[i : i + 12] not in refused.reason


def test_a_refusal_that_echoes_the_new_key_string_does_not_carry_it(stub, adapter, monkeypatch):
    canary = "AIzaSyCanary" + "Q" * 27
    done = stub._operation

    def with_key_string(name):
        reply = done(name)
        reply.body["response"]["keyString"] = canary
        return reply

    monkeypatch.setattr(stub, "_operation", with_key_string)
    stub.fail(
        500, {"error": {"code": 500, "message": f"could not read {canary}"}}, path="/keyString"
    )
    refused = refusal(lambda: adapter.mint(admin(stub), name=NAME))
    assert refused.transient
    assert_absent(canary, refused.reason, "the reason")


def test_redirects_are_not_followed(stub, adapter):
    stub.fail(302, {}, path="/keys", headers={"Location": f"{stub.url}/v2/elsewhere"})
    refusal(lambda: adapter.mint(admin(stub), name=NAME))
    assert [s.path for s in stub.seen] == [
        "/token",
        f"/v2/projects/{PROJECT}/locations/global/keys",
    ]


def test_the_egress_policy_refusing_the_host_is_permanent(stub, adapter, settings):
    settings.PROVIDER_URL_POLICY = "strict"
    refused = refusal(lambda: adapter.mint(admin(stub), name=NAME))
    assert not refused.transient
    assert "egress policy" in refused.reason
    assert stub.seen == []


@pytest.mark.parametrize(
    "secret",
    [
        "not json",
        json.dumps({"type": "authorized_user", "client_id": "x"}),
        json.dumps({"type": "service_account", "client_email": "a@b"}),
    ],
)
def test_a_credential_that_is_not_a_service_account_key_is_refused_before_any_call(
    stub, adapter, secret
):
    credential = AdminCredential(secret=secret, settings={"project_id": PROJECT}, base_url=stub.api)
    refused = refusal(lambda: adapter.minted(credential, name=NAME))
    assert not refused.transient
    assert stub.seen == []


def test_a_private_key_that_is_not_rsa_is_refused(stub, adapter):
    refused = refusal(
        lambda: adapter.minted(
            admin(stub, private_key="-----BEGIN PRIVATE KEY-----\nAAAA\n"), name=NAME
        )
    )
    assert not refused.transient
    assert "RSA" in refused.reason
    assert stub.seen == []


@pytest.mark.parametrize(
    ("values", "problems"),
    [
        ({"project_id": "keyward-test"}, []),
        ({"project_id": "123456789012"}, []),
        ({}, ["project_id: required"]),
        ({"project_id": "../../token"}, ["project_id: not a Google"]),
        ({"project_id": "p", "zone": "x"}, ["zone: unknown setting"]),
    ],
)
def test_its_settings_are_checked(values, problems):
    assert problems_match(GoogleAdmin().check_settings(values), problems)
