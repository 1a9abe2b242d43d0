"""The Azure OpenAI admin adapter against a local Entra ID and Azure Resource Manager that
answer as Microsoft documents."""

from __future__ import annotations

import json
from collections.abc import Iterator
from urllib.parse import parse_qs

import pytest

from kms.providers import ADAPTERS
from kms.providers.admin import ADMIN_ADAPTERS, AdminCredential, AdminError
from kms.providers.admin.azure import AzureOpenAIAdmin
from tests.admin_stubs import azure as ms
from tests.admin_stubs.azure import AzureStub
from tests.kms.test_canary import assert_absent, forms

CANARY = "Kw8Q~canaryClientSecret0123456789abcdefXYZ"
TOKEN = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.canaryAccessToken0123456789"
adapter = AzureOpenAIAdmin()


@pytest.fixture
def stub() -> Iterator[AzureStub]:
    server = AzureStub(client_secret=CANARY)
    try:
        yield server
    finally:
        server.close()


def credential(stub: AzureStub, **changes: str) -> AdminCredential:
    values = {
        "tenant_id": ms.TENANT,
        "client_id": ms.CLIENT_ID,
        "subscription_id": ms.SUBSCRIPTION,
        "resource_group": ms.GROUP,
        "account_name": ms.ACCOUNT,
        "login_base_url": stub.url,
    }
    return AdminCredential(secret=CANARY, settings=values | changes, base_url=stub.url)


def test_it_is_the_admin_adapter_of_azure_openai():
    assert isinstance(ADMIN_ADAPTERS["azure_openai"], AzureOpenAIAdmin)
    assert adapter.provider in ADAPTERS


def test_mint_regenerates_key2_when_key1_is_current(stub):
    key1 = stub.keys["key1"]
    minted = adapter.mint(credential(stub), name="rot-1", current_upstream_id="key1")
    assert (minted.secret, minted.upstream_id) == (stub.keys["key2"], "key2")
    assert stub.keys["key1"] == key1


@pytest.mark.parametrize("current", ["key2", "", "something-else"])
def test_mint_regenerates_key1_otherwise(stub, current):
    key2 = stub.keys["key2"]
    minted = adapter.mint(credential(stub), name="rot-1", current_upstream_id=current)
    assert (minted.secret, minted.upstream_id) == (stub.keys["key1"], "key1")
    assert stub.keys["key2"] == key2


def test_mint_sends_the_documented_requests(stub):
    adapter.mint(credential(stub), name="rot-1", current_upstream_id="key1")
    token, arm = stub.seen
    assert (token.method, token.path, token.query) == ("POST", ms.TOKEN_PATH, "")
    assert token.headers["content-type"] == "application/x-www-form-urlencoded"
    assert "authorization" not in token.headers
    assert parse_qs(token.body.decode()) == {
        "client_id": [ms.CLIENT_ID],
        "client_secret": [CANARY],
        "grant_type": ["client_credentials"],
        "scope": ["https://management.azure.com/.default"],
    }
    assert (arm.method, arm.path, arm.query) == (
        "POST",
        ms.ACCOUNT_PATH + "/regenerateKey",
        "api-version=2023-05-01",
    )
    assert arm.headers["authorization"] == f"Bearer {stub.tokens[0]}"
    assert arm.headers["content-type"] == "application/json"
    assert json.loads(arm.body) == {"keyName": "Key2"}
    assert_absent(CANARY, json.dumps(arm.headers) + arm.path + arm.query, "the ARM request")


def test_the_admin_base_url_setting_points_at_arm(stub, settings):
    settings.PROVIDER_ADMIN_BASE_URLS = {"azure_openai": stub.url}
    admin = AdminCredential(secret=CANARY, settings=credential(stub).settings)
    assert adapter.mint(admin, name="rot-1").upstream_id == "key1"


def test_minted_finds_nothing_and_asks_nothing(stub):
    assert adapter.minted(credential(stub), name="rot-1") == []
    assert stub.seen == []


def test_a_repeated_mint_replaces_the_unused_value_only(stub):
    key1 = stub.keys["key1"]
    first = adapter.mint(credential(stub), name="rot-1", current_upstream_id="key1")
    second = adapter.mint(credential(stub), name="rot-1", current_upstream_id="key1")
    assert first.upstream_id == second.upstream_id == "key2"
    assert second.secret == stub.keys["key2"] != first.secret
    assert stub.keys["key1"] == key1


def test_retire_regenerates_the_slot_and_can_be_repeated(stub):
    old, kept = stub.keys["key1"], stub.keys["key2"]
    adapter.retire(credential(stub), upstream_id="key1")
    adapter.retire(credential(stub), upstream_id="key1")
    assert stub.keys["key1"] != old
    assert stub.keys["key2"] == kept
    assert [json.loads(s.body) for s in stub.seen[1::2]] == [{"keyName": "Key1"}] * 2


@pytest.mark.parametrize("body", [ms.NOT_FOUND, ms.GROUP_NOT_FOUND])
def test_retiring_in_a_deleted_resource_succeeds(stub, body):
    stub.fail("arm", 404, body)
    adapter.retire(credential(stub), upstream_id="key2")


def test_retiring_an_unknown_slot_is_permanent(stub):
    with pytest.raises(AdminError) as raised:
        adapter.retire(credential(stub), upstream_id="key3")
    assert not raised.value.transient
    assert stub.seen == []


@pytest.mark.parametrize(
    ("kind", "status", "body", "transient"),
    [
        ("token", 401, ms.BAD_SECRET, False),
        ("token", 400, ms.NO_TENANT, False),
        ("token", 500, ms.ENTRA_DOWN, True),
        ("token", 503, b"<html>Service Unavailable</html>", True),
        ("arm", 400, ms.BAD_REQUEST, False),
        ("arm", 401, ms.BAD_TOKEN, False),
        ("arm", 403, ms.FORBIDDEN, False),
        ("arm", 404, ms.NOT_FOUND, False),
        ("arm", 500, ms.ARM_DOWN, True),
        ("arm", 503, ms.ARM_DOWN, True),
    ],
)
def test_each_documented_error_is_transient_or_permanent(stub, kind, status, body, transient):
    stub.fail(kind, status, body)
    with pytest.raises(AdminError) as raised:
        adapter.mint(credential(stub), name="rot-1")
    assert raised.value.transient is transient
    assert raised.value.reason.startswith(("Entra ID token: " if kind == "token" else "") + "HTTP")


def test_a_wrong_client_secret_is_explained(stub):
    with pytest.raises(AdminError) as raised:
        adapter.mint(
            AdminCredential("wrong", credential(stub).settings, stub.url),
            name="r",
        )
    assert raised.value.reason.startswith("Entra ID token: HTTP 401: invalid_client: AADSTS7000215")
    assert "Trace ID" not in raised.value.reason
    assert not raised.value.transient


def test_a_forbidden_call_names_the_missing_permission(stub):
    stub.fail("arm", 403, ms.FORBIDDEN)
    with pytest.raises(AdminError) as raised:
        adapter.retire(credential(stub), upstream_id="key1")
    assert raised.value.reason.startswith("HTTP 403: AuthorizationFailed: The client")


@pytest.mark.parametrize(("kind", "body"), [("token", ms.ENTRA_THROTTLED), ("arm", ms.THROTTLED)])
def test_throttling_is_transient_with_retry_after(stub, kind, body):
    stub.fail(kind, 429, body, headers={"Retry-After": "7"})
    with pytest.raises(AdminError) as raised:
        adapter.retire(credential(stub), upstream_id="key1")
    assert (raised.value.transient, raised.value.retry_after) == (True, 7.0)


@pytest.mark.parametrize("kind", ["token", "arm"])
def test_a_timeout_is_transient(stub, settings, kind):
    settings.PROVIDER_TIMEOUT_MS = 200
    stub.fail(kind, 200, {}, delay=1.0)
    with pytest.raises(AdminError) as raised:
        adapter.mint(credential(stub), name="rot-1")
    assert raised.value.transient
    assert "timeout" in raised.value.reason


def test_an_answer_without_the_key_is_transient_and_shows_no_key(stub):
    stub.fail("arm", 200, {"key1": stub.keys["key1"]})
    with pytest.raises(AdminError) as raised:
        adapter.mint(credential(stub), name="rot-1", current_upstream_id="key1")
    assert raised.value.transient
    assert_absent(stub.keys["key1"], raised.value.reason, "the reason")


def test_a_token_answer_without_a_token_is_transient(stub):
    stub.fail("token", 200, {"token_type": "Bearer", "expires_in": 3599})
    with pytest.raises(AdminError) as raised:
        adapter.mint(credential(stub), name="rot-1")
    assert raised.value.transient
    assert len(stub.seen) == 1


@pytest.mark.parametrize("spelled", forms(CANARY))
def test_an_echoed_client_secret_is_redacted_from_entra_errors(stub, spelled):
    body = ms.entra_error("invalid_client", 7000215, f"Invalid client secret {spelled}.")
    stub.fail("token", 401, body)
    with pytest.raises(AdminError) as raised:
        adapter.mint(credential(stub), name="rot-1")
    assert_absent(CANARY, raised.value.reason, "the reason")


def test_an_echoed_token_or_client_secret_is_redacted_from_arm_errors(stub):
    stub.fail("token", 200, {"token_type": "Bearer", "access_token": TOKEN})
    echo = ms.arm_error("InvalidAuthenticationToken", f"Token {TOKEN} for {CANARY}")
    stub.fail("arm", 401, echo)
    with pytest.raises(AdminError) as raised:
        adapter.mint(credential(stub), name="rot-1")
    assert stub.seen[-1].headers["authorization"] == f"Bearer {TOKEN}"
    assert_absent(CANARY, raised.value.reason, "the reason")
    assert_absent(TOKEN, raised.value.reason, "the reason")


@pytest.mark.parametrize("kind", ["token", "arm"])
def test_redirects_are_not_followed(stub, kind):
    stub.fail(kind, 302, {}, headers={"Location": stub.url + "/elsewhere"})
    with pytest.raises(AdminError) as raised:
        adapter.mint(credential(stub), name="rot-1")
    assert not raised.value.transient
    assert not any(s.path == "/elsewhere" for s in stub.seen)


def test_the_egress_policy_refusing_entra_is_permanent(stub, settings):
    settings.PROVIDER_URL_POLICY = "strict"
    settings.PROVIDER_URL_ALLOWLIST = []
    with pytest.raises(AdminError) as raised:
        adapter.mint(credential(stub), name="rot-1")
    assert not raised.value.transient
    assert stub.seen == []


def test_the_egress_policy_refusing_arm_is_permanent(stub):
    admin = credential(stub)
    with pytest.raises(AdminError) as raised:
        adapter.retire(
            AdminCredential(admin.secret, admin.settings, "ftp://127.0.0.1"), upstream_id="key1"
        )
    assert not raised.value.transient
    assert [s.path for s in stub.seen] == [ms.TOKEN_PATH]


def test_settings_are_checked():
    assert AzureOpenAIAdmin().check_settings({}) == [
        f"{name}: required ({meaning})" for name, meaning in adapter.required_settings.items()
    ]
    problems = adapter.check_settings(
        {
            "tenant_id": "contoso.onmicrosoft.com",
            "client_id": "not-a-guid",
            "subscription_id": ms.SUBSCRIPTION,
            "resource_group": "../..",
            "account_name": "a/b",
            "login_base_url": 3,
            "region": "x",
        }
    )
    assert problems == [
        "region: unknown setting",
        "client_id: not an Azure client id",
        "resource_group: not an Azure resource group",
        "account_name: not an Azure account name",
        "login_base_url: not a URL",
    ]


def test_a_malformed_setting_is_refused_before_any_call(stub):
    with pytest.raises(AdminError) as raised:
        adapter.mint(credential(stub, account_name="x/../../other"), name="rot-1")
    assert not raised.value.transient
    assert stub.seen == []
