"""The Anthropic admin adapter against a stub of Anthropic's Admin API for API keys."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import parse_qs

import pytest

from kms.providers.admin import ADMIN_ADAPTERS, AdminCredential
from kms.providers.admin.anthropic import AnthropicAdmin
from tests.admin_stubs import anthropic as docs
from tests.admin_stubs.anthropic import ADMIN_KEY, WORKSPACE, AnthropicStub
from tests.admin_stubs.routed import body_of, echoed, problems_match, refusal, served
from tests.kms.test_canary import assert_absent

ADAPTER = AnthropicAdmin()


@pytest.fixture
def stub() -> Iterator[AnthropicStub]:
    yield from served(AnthropicStub())


def admin(stub: AnthropicStub, **settings: str) -> AdminCredential:
    return AdminCredential(secret=ADMIN_KEY, settings=settings, base_url=stub.url)


def test_it_is_registered_and_creates_no_keys(stub):
    assert isinstance(ADMIN_ADAPTERS["anthropic"], AnthropicAdmin)
    assert not ADAPTER.creates_keys
    with pytest.raises(NotImplementedError):
        ADAPTER.mint(admin(stub), name="keyward-rotation-1")
    assert ADAPTER.minted(admin(stub), name="keyward-rotation-1") == []
    assert stub.seen == []


def test_retire_by_id_makes_the_key_inactive_with_the_admin_key(stub):
    key_id = stub.add_key("WXYZ")
    ADAPTER.retire(admin(stub), upstream_id=key_id)

    assert stub.keys[key_id]["status"] == "inactive"
    read, update = stub.seen
    assert (read.method, read.path) == ("GET", f"/v1/organizations/api_keys/{key_id}")
    assert (update.method, update.path) == ("POST", f"/v1/organizations/api_keys/{key_id}")
    assert body_of(update) == {"status": "inactive"}
    for seen in stub.seen:
        assert seen.headers["x-api-key"] == ADMIN_KEY
        assert seen.headers["anthropic-version"] == "2023-06-01"
        assert ADMIN_KEY not in seen.path + seen.query


@pytest.mark.parametrize("status", ["inactive", "archived"])
def test_retiring_a_key_already_retired_changes_nothing(stub, status):
    key_id = stub.add_key("WXYZ", status=status)
    ADAPTER.retire(admin(stub), upstream_id=key_id)
    assert stub.keys[key_id]["status"] == status
    assert stub.requests("POST") == []


def test_retiring_a_key_anthropic_no_longer_knows_succeeds(stub):
    ADAPTER.retire(admin(stub), upstream_id="apikey_01Rj2N8SVvo6BePZj99NhmiT")
    assert [s.method for s in stub.seen] == ["GET"]


def test_retire_by_hint_finds_the_one_key_on_any_page(stub):
    for last4 in ("aaaa", "bbbb", "cccc", "dddd"):
        stub.add_key(last4)
    key_id = stub.add_key("WXYZ")
    ADAPTER.retire(admin(stub), upstream_id="", hint="...WXYZ")

    assert stub.keys[key_id]["status"] == "inactive"
    assert [k["status"] for k in stub.keys.values()].count("active") == 4
    lists = [parse_qs(s.query) for s in stub.requests("GET")]
    assert [q.get("after_id") for q in lists] == [None, [list(stub.keys)[1]], [list(stub.keys)[3]]]
    assert all(q["limit"] == ["100"] for q in lists)


def test_the_workspace_setting_narrows_the_listing(stub):
    stub.add_key("WXYZ", workspace="wrkspc_01Other")
    key_id = stub.add_key("WXYZ")
    ADAPTER.retire(admin(stub, workspace_id=WORKSPACE), upstream_id="", hint="...WXYZ")
    assert stub.keys[key_id]["status"] == "inactive"
    assert parse_qs(stub.seen[0].query)["workspace_id"] == [WORKSPACE]


def test_a_hint_that_matches_two_keys_is_refused_and_changes_nothing(stub):
    stub.add_key("WXYZ", status="archived")
    stub.add_key("WXYZ")
    refused = refusal(lambda: ADAPTER.retire(admin(stub), upstream_id="", hint="...WXYZ"))
    assert not refused.transient
    assert stub.requests("POST") == []


def test_a_hint_whose_keys_are_all_retired_already_is_done(stub):
    stub.add_key("WXYZ", status="inactive")
    stub.add_key("WXYZ", status="archived")
    ADAPTER.retire(admin(stub), upstream_id="", hint="...WXYZ")
    assert stub.requests("POST") == []


@pytest.mark.parametrize("hint", ["...QQQQ", "", "...WX"])
def test_a_hint_that_finds_no_key_is_a_permanent_refusal(stub, hint):
    stub.add_key("WXYZ")
    refused = refusal(lambda: ADAPTER.retire(admin(stub), upstream_id="", hint=hint))
    assert not refused.transient
    assert stub.requests("POST") == []


@pytest.mark.parametrize("upstream_id", ["../users", "apikey_01x/../../users", "user_01abc"])
def test_an_upstream_id_that_is_not_a_key_id_is_refused_before_any_call(stub, upstream_id):
    refused = refusal(lambda: ADAPTER.retire(admin(stub), upstream_id=upstream_id))
    assert not refused.transient
    assert stub.seen == []


@pytest.mark.parametrize(
    ("method", "status", "body", "transient"),
    [
        ("GET", 429, docs.RATE_LIMIT, True),
        ("GET", 529, docs.OVERLOADED, True),
        ("GET", 500, docs.API_ERROR, True),
        ("GET", 401, docs.AUTHENTICATION, False),
        ("GET", 403, docs.PERMISSION, False),
        ("POST", 429, docs.RATE_LIMIT, True),
        ("POST", 503, b"<html>upstream connect error</html>", True),
        ("POST", 400, docs.INVALID_REQUEST, False),
        ("POST", 403, docs.PERMISSION, False),
    ],
)
def test_each_documented_refusal_is_transient_or_permanent(stub, method, status, body, transient):
    key_id = stub.add_key("WXYZ")
    if method == "POST":
        stub.fail(200, stub.keys[key_id], path=key_id)  # the read goes through
    stub.fail(status, body, path=key_id, headers={"retry-after": "17"} if status == 429 else None)
    refused = refusal(lambda: ADAPTER.retire(admin(stub), upstream_id=key_id))
    assert refused.transient is transient
    assert refused.reason.startswith(f"HTTP {status}")
    assert refused.retry_after == (17.0 if status == 429 else None)
    assert stub.keys[key_id]["status"] == "active"


def test_a_refused_listing_is_transient_with_its_retry_after(stub):
    stub.fail(429, docs.RATE_LIMIT, path="/api_keys", headers={"retry-after": "30"})
    refused = refusal(lambda: ADAPTER.retire(admin(stub), upstream_id="", hint="...WXYZ"))
    assert (refused.transient, refused.retry_after) == (True, 30.0)


@pytest.mark.parametrize("spelling", ["raw", "url", "base64"])
def test_a_refusal_that_echoes_the_admin_key_does_not_carry_it(stub, spelling):
    echo = echoed(ADMIN_KEY, spelling)
    message = f"invalid x-api-key {echo}"
    stub.fail(401, {"type": "error", "error": {"type": "authentication_error", "message": message}})
    refused = refusal(
        lambda: ADAPTER.retire(admin(stub), upstream_id="apikey_01Rj2N8SVvo6BePZj99NhmiT")
    )
    assert refused.reason.startswith("HTTP 401: invalid x-api-key ")
    assert_absent(ADMIN_KEY, str(refused), "the refusal")
    assert "Adm1nK3y" not in refused.reason


def test_redirects_are_not_followed(stub):
    stub.fail(307, {}, headers={"location": f"{stub.url}/v1/organizations/api_keys/apikey_01b"})
    refusal(lambda: ADAPTER.retire(admin(stub), upstream_id="apikey_01a"))
    assert len(stub.seen) == 1


def test_a_timeout_is_transient(stub, settings):
    settings.PROVIDER_TIMEOUT_MS = 200
    stub.fail(200, {}, delay=1.0)
    refused = refusal(lambda: ADAPTER.retire(admin(stub), upstream_id="apikey_01a"))
    assert (refused.transient, refused.reason) == (True, "timeout")


def test_the_egress_policy_refusing_the_host_is_permanent(stub, settings):
    settings.PROVIDER_URL_POLICY = "strict"
    refused = refusal(lambda: ADAPTER.retire(admin(stub), upstream_id="apikey_01a"))
    assert not refused.transient
    assert stub.seen == []


def test_the_default_base_url_and_its_override(settings):
    assert ADAPTER.base_url(AdminCredential(secret=ADMIN_KEY)) == "https://api.anthropic.com"
    settings.PROVIDER_ADMIN_BASE_URLS = {"anthropic": "http://127.0.0.1:9/"}
    assert ADAPTER.base_url(AdminCredential(secret=ADMIN_KEY)) == "http://127.0.0.1:9"


@pytest.mark.parametrize(
    ("values", "problems"),
    [({}, []), ({"workspace_id": WORKSPACE}, []), ({"project_id": "x"}, ["project_id: unknown"])],
)
def test_its_settings_are_checked(values, problems):
    assert problems_match(ADAPTER.check_settings(values), problems)
