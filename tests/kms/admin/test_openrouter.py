"""OpenRouter's admin adapter against a local stub of its key management API: the documented
requests and answers, refusals transient or permanent, and no secret in any reason."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from kms.providers.admin import AdminCredential, AdminError, admin_adapter
from kms.providers.admin.openrouter import OpenRouterAdmin
from tests.admin_stubs import openrouter as docs
from tests.admin_stubs.openrouter import OpenRouterStub
from tests.bao import free_port
from tests.kms.test_canary import forms

ADAPTER = OpenRouterAdmin()
SECRET = "sk-or-v1-" + "c4a9ed2b" * 8  # the management key (fixed: it names tests)
NAME = "keyward-rotation-7f3a"


@pytest.fixture
def stub() -> Iterator[OpenRouterStub]:
    server = OpenRouterStub(SECRET)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def admin(stub: OpenRouterStub) -> AdminCredential:
    return AdminCredential(secret=SECRET, base_url=stub.url)


def sent(stub: OpenRouterStub, index: int = -1) -> Any:
    return json.loads(stub.seen[index].body)


# -- mint ---------------------------------------------------------------------------------
def test_mint_creates_a_key_with_the_attempts_name_and_returns_its_secret_and_hash(stub, admin):
    minted = ADAPTER.mint(admin, name=NAME)
    assert minted.secret.startswith("sk-or-v1-") and len(minted.secret) == 9 + 64
    assert stub.keys[minted.upstream_id]["name"] == NAME
    request = stub.seen[-1]
    assert (request.method, request.path, request.query) == ("POST", "/api/v1/keys", "")
    assert request.headers["authorization"] == f"Bearer {SECRET}"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["accept"] == "application/json"
    assert sent(stub) == {"name": NAME}


def test_mint_gives_the_new_key_the_credit_limit_of_the_settings(stub):
    admin = AdminCredential(secret=SECRET, settings={"limit": "12.50"}, base_url=stub.url)
    minted = ADAPTER.mint(admin, name=NAME)
    assert sent(stub) == {"name": NAME, "limit": 12.5}
    assert stub.keys[minted.upstream_id]["limit"] == 12.5


@pytest.mark.parametrize(
    "answer",
    [
        {"key": "{new}", "data": {"name": NAME}},
        {"data": {"hash": "ab" * 32, "name": NAME, "label": "{new}"}},
        {"key": "{new}", "data": "{new}"},
        ["{new}"],
    ],
)
def test_an_answer_without_the_key_or_its_hash_fails_without_repeating_it(stub, admin, answer):
    new = docs.new_key()
    stub.fail(201, json.loads(json.dumps(answer).replace("{new}", new)))
    with pytest.raises(AdminError) as refused:
        ADAPTER.mint(admin, name=NAME)
    assert not refused.value.transient
    for form in forms(new) + forms(SECRET):
        assert form not in str(refused.value) + refused.value.reason


# -- minted -------------------------------------------------------------------------------
def test_minted_finds_every_key_of_that_name_across_pages_disabled_ones_included(stub, admin):
    first = stub.add(NAME)[1]
    for i in range(150):
        stub.add(f"other-{i}")
    second = stub.add(NAME, disabled=True)[1]
    stub.add(NAME + "-not-quite")
    assert sorted(ADAPTER.minted(admin, name=NAME)) == sorted([first, second])
    queries = [(s.method, s.path, s.query) for s in stub.seen]
    assert queries == [
        ("GET", "/api/v1/keys", f"include_disabled=true&offset={offset}")
        for offset in (0, 100, 153)
    ]
    assert all(s.headers["authorization"] == f"Bearer {SECRET}" for s in stub.seen)


def test_minted_is_empty_when_no_key_has_that_name(stub, admin):
    stub.add("someone-elses-key")
    assert ADAPTER.minted(admin, name=NAME) == []


def test_minted_stops_when_the_provider_answers_a_page_it_already_gave(stub, admin):
    _, digest = stub.add(NAME)
    page = {"data": [stub.keys[digest]]}
    for _ in range(3):
        stub.fail(200, page)
    assert ADAPTER.minted(admin, name=NAME) == [digest]
    assert len(stub.seen) == 2


@pytest.mark.parametrize("answer", [{"data": None}, {"keys": []}, [], b"<html>"])
def test_an_unreadable_list_is_a_permanent_failure(stub, admin, answer):
    stub.fail(200, answer)
    with pytest.raises(AdminError) as refused:
        ADAPTER.minted(admin, name=NAME)
    assert not refused.value.transient


# -- retire -------------------------------------------------------------------------------
def test_retire_disables_the_key_then_deletes_it(stub, admin):
    _, digest = stub.add("old")
    ADAPTER.retire(admin, upstream_id=digest)
    assert digest not in stub.keys
    patch, delete = stub.seen
    assert (patch.method, patch.path) == ("PATCH", f"/api/v1/keys/{digest}")
    assert json.loads(patch.body) == {"disabled": True}
    assert patch.headers["authorization"] == f"Bearer {SECRET}"
    assert (delete.method, delete.path, delete.body) == ("DELETE", f"/api/v1/keys/{digest}", b"")


def test_retiring_a_key_that_is_already_gone_succeeds(stub, admin):
    _, digest = stub.add("old")
    ADAPTER.retire(admin, upstream_id=digest)
    ADAPTER.retire(admin, upstream_id=digest)
    assert [s.method for s in stub.seen] == ["PATCH", "DELETE", "PATCH"]


def test_a_key_deleted_between_the_disable_and_the_delete_is_retired(stub, admin):
    stub.fail(200, {"data": {"hash": "ab" * 32, "disabled": True}})
    stub.fail(404, docs.NOT_FOUND)
    ADAPTER.retire(admin, upstream_id="ab" * 32)
    assert [s.method for s in stub.seen] == ["PATCH", "DELETE"]


@pytest.mark.parametrize("body", [b"<html>Not Found</html>", b"", {"message": "no route"}])
def test_a_404_that_is_not_openrouters_error_is_not_taken_for_a_retired_key(stub, admin, body):
    stub.fail(404, body)
    with pytest.raises(AdminError) as refused:
        ADAPTER.retire(admin, upstream_id="ab" * 32)
    assert not refused.value.transient


def test_the_hash_is_one_path_segment(stub, admin):
    ADAPTER.retire(admin, upstream_id="../../credits?x=1")
    assert stub.seen[0].path == "/api/v1/keys/..%2F..%2Fcredits%3Fx%3D1"
    assert stub.seen[0].query == ""


def test_retire_without_a_hash_calls_nothing(stub, admin):
    with pytest.raises(AdminError):
        ADAPTER.retire(admin, upstream_id="")
    assert stub.seen == []


# -- refusals -----------------------------------------------------------------------------
CALLS: dict[str, Callable[[AdminCredential], Any]] = {
    "mint": lambda admin: ADAPTER.mint(admin, name=NAME),
    "minted": lambda admin: ADAPTER.minted(admin, name=NAME),
    "retire": lambda admin: ADAPTER.retire(admin, upstream_id="ab" * 32),
}


@pytest.mark.parametrize("call", sorted(CALLS))
@pytest.mark.parametrize(
    ("status", "body", "transient"),
    [
        (400, docs.BAD_REQUEST, False),
        (401, docs.UNAUTHORIZED, False),
        (403, docs.FORBIDDEN, False),
        (429, docs.RATE_LIMITED, True),
        (500, docs.SERVER_ERROR, True),
        (502, b"<html>Bad Gateway</html>", True),
    ],
)
def test_each_documented_refusal_is_transient_or_permanent(
    stub, admin, call, status, body, transient
):
    headers = {"Retry-After": "7"} if transient else {}
    stub.fail(status, body, headers)
    with pytest.raises(AdminError) as refused:
        CALLS[call](admin)
    assert refused.value.transient is transient
    assert refused.value.retry_after == (7.0 if transient else None)
    assert refused.value.reason.startswith(f"HTTP {status}")


def test_a_wrong_management_key_is_a_permanent_refusal(stub):
    admin = AdminCredential(secret="sk-or-v1-" + "0" * 64, base_url=stub.url)
    with pytest.raises(AdminError) as refused:
        ADAPTER.mint(admin, name=NAME)
    assert not refused.value.transient
    assert "Missing Authentication header" in refused.value.reason
    assert stub.keys == {}


def test_a_timeout_is_transient(stub, admin, settings):
    settings.PROVIDER_TIMEOUT_MS = 200
    stub.fail(201, {}, delay=1.0)
    with pytest.raises(AdminError) as refused:
        ADAPTER.mint(admin, name=NAME)
    assert (refused.value.transient, refused.value.reason) == (True, "timeout")


def test_an_unreachable_api_is_transient():

    admin = AdminCredential(secret=SECRET, base_url=f"http://127.0.0.1:{free_port()}/api/v1")
    with pytest.raises(AdminError) as refused:
        ADAPTER.minted(admin, name=NAME)
    assert refused.value.transient


@pytest.mark.parametrize("call", sorted(CALLS))
@pytest.mark.parametrize("form", forms(SECRET))
@pytest.mark.parametrize("status", [401, 429, 500])
def test_an_answer_echoing_the_management_key_gives_a_reason_without_it(
    stub, admin, call, form, status
):
    stub.fail(status, docs.error(status, f"Invalid management key {form} for this request"))
    with pytest.raises(AdminError) as refused:
        CALLS[call](admin)
    for spelling in forms(SECRET):
        assert spelling not in refused.value.reason
        assert spelling not in str(refused.value)


def test_a_refusal_echoing_a_key_keeps_no_key_in_the_reason(stub, admin):
    new = docs.new_key()
    stub.fail(400, docs.error(400, f"Key {new} already exists with name {NAME}"))
    with pytest.raises(AdminError) as refused:
        ADAPTER.mint(admin, name=NAME)
    assert new not in refused.value.reason and new[:20] not in refused.value.reason


# -- transport ----------------------------------------------------------------------------
def test_redirects_are_not_followed(stub, admin):
    elsewhere = OpenRouterStub(SECRET)
    try:
        stub.fail(307, {}, {"Location": elsewhere.url + "/keys"})
        with pytest.raises(AdminError) as refused:
            ADAPTER.mint(admin, name=NAME)
        assert not refused.value.transient
        assert (len(stub.seen), elsewhere.seen) == (1, [])
    finally:
        elsewhere.close()


def test_the_egress_policy_refusing_the_host_is_a_permanent_failure(stub, admin, settings):
    settings.PROVIDER_URL_POLICY = "strict"
    settings.PROVIDER_URL_ALLOWLIST = []
    for call in CALLS.values():
        with pytest.raises(AdminError) as refused:
            call(admin)
        assert not refused.value.transient
        assert "egress policy" in refused.value.reason
    assert stub.seen == []


def test_the_admin_base_url_setting_points_the_adapter_at_the_api(stub, settings):
    settings.PROVIDER_ADMIN_BASE_URLS = {"openrouter": stub.url}
    ADAPTER.minted(AdminCredential(secret=SECRET), name=NAME)
    assert stub.seen[0].path == "/api/v1/keys"


def test_the_default_api_is_openrouters(settings):
    settings.PROVIDER_ADMIN_BASE_URLS = {}
    assert ADAPTER.base_url(AdminCredential(secret=SECRET)) == "https://openrouter.ai/api/v1"


# -- settings and registry ----------------------------------------------------------------
@pytest.mark.parametrize("values", [{}, {"limit": "25"}, {"limit": "0.50"}, {"limit": "12.5"}])
def test_settings_that_are_accepted(values):
    assert ADAPTER.check_settings(values) == []


@pytest.mark.parametrize(
    ("values", "words"),
    [
        ({"limit": "0"}, "limit: must be more than zero"),
        ({"limit": "-5"}, "limit: must be a decimal"),
        ({"limit": 25}, "limit: must be a decimal"),
        ({"limit": "1e3"}, "limit: must be a decimal"),
        ({"limit": " 5"}, "limit: must be a decimal"),
        ({"limit": "\u0665"}, "limit: must be a decimal"),
        ({"limit": "NaN"}, "limit: must be a decimal"),
        ({"workspace": "w"}, "workspace: unknown setting"),
    ],
)
def test_settings_that_are_refused(values, words):
    (problem,) = ADAPTER.check_settings(values)
    assert problem.startswith(words)


def test_it_is_the_registered_admin_adapter_for_openrouter():
    adapter = admin_adapter("openrouter")
    assert isinstance(adapter, OpenRouterAdmin)
    assert adapter.creates_keys
    assert set(adapter.optional_settings) == {"limit"} and adapter.required_settings == {}
