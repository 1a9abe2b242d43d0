"""The OpenAI admin adapter against a local stub of OpenAI's Administration API."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from kms.providers.admin import ADMIN_ADAPTERS, AdminCredential, AdminError
from kms.providers.admin.openai import OpenAIAdmin
from tests.admin_stubs import openai as docs
from tests.admin_stubs.openai import ADMIN_KEY, PROJECT, OpenAIAdminStub
from tests.kms.test_canary import forms

adapter = ADMIN_ADAPTERS["openai"]
PATH = f"/v1/organization/projects/{PROJECT}"
NEW_KEY = "sk-svcacct-" + "N3wK3y" * 8
CALLS = [
    ("mint", {"name": "n"}),
    ("minted", {"name": "n"}),
    ("retire", {"upstream_id": "svc_acct_x"}),
    ("retire", {"upstream_id": "", "hint": "...WXYZ"}),
]


@pytest.fixture
def stub() -> Iterator[OpenAIAdminStub]:
    server = OpenAIAdminStub()
    try:
        yield server
    finally:
        server.close()


def admin_of(stub: OpenAIAdminStub, secret: str = ADMIN_KEY) -> AdminCredential:
    return AdminCredential(secret=secret, settings={"project_id": PROJECT}, base_url=stub.base_url)


def refusal(stub: OpenAIAdminStub, call: str = "mint", **kwargs: str) -> AdminError:
    with pytest.raises(AdminError) as refused:
        getattr(adapter, call)(admin_of(stub), **kwargs)
    return refused.value


def test_it_is_registered_and_needs_a_project():
    assert isinstance(adapter, OpenAIAdmin) and adapter.creates_keys
    assert adapter.check_settings({"project_id": PROJECT}) == []
    assert adapter.check_settings({}) == [
        f"project_id: required ({adapter.required_settings['project_id']})"
    ]


def test_mint_creates_a_service_account_and_returns_its_key_and_id(stub):
    minted = adapter.mint(admin_of(stub), name="keyward-rot-1")
    account = stub.project.accounts[minted.upstream_id]
    key = next(iter(stub.project.keys.values()))
    assert account["name"] == "keyward-rot-1"
    assert minted.secret.startswith("sk-svcacct-") and key["redacted_value"].endswith(
        minted.secret[-4:]
    )
    seen = stub.seen[-1]
    assert (seen.method, seen.path, seen.query) == ("POST", f"{PATH}/service_accounts", "")
    assert seen.headers["authorization"] == f"Bearer {ADMIN_KEY}"
    assert seen.headers["content-type"] == "application/json"
    assert json.loads(seen.body) == {"name": "keyward-rot-1"}


def test_an_answer_without_a_key_is_a_permanent_refusal(stub):
    stub.answer(
        200, {"object": "organization.project.service_account", "id": "svc_acct_x", "api_key": None}
    )
    refused = refusal(stub, name="n")
    assert not refused.transient


def test_minted_finds_the_accounts_of_one_name_across_pages(stub, monkeypatch):
    monkeypatch.setattr("kms.providers.admin.openai.PAGE_SIZE", 2)
    ids = [stub.add_account(name)[0] for name in ("rot-7", "a", "b", "rot-7", "c")]
    assert adapter.minted(admin_of(stub), name="rot-7") == [ids[0], ids[3]]
    assert [(s.method, s.path) for s in stub.seen] == [("GET", f"{PATH}/service_accounts")] * 3
    assert [s.query for s in stub.seen] == [
        "limit=2",
        f"limit=2&after={ids[1]}",
        f"limit=2&after={ids[3]}",
    ]


def test_minted_is_empty_when_no_account_has_the_name(stub):
    stub.add_account("someone-else")
    assert adapter.minted(admin_of(stub), name="rot-1") == []


def test_a_listing_that_never_ends_is_refused(stub, monkeypatch):
    monkeypatch.setattr("kms.providers.admin.openai.MAX_PAGES", 3)
    endless = {"object": "list", "data": [], "first_id": "a", "last_id": "a", "has_more": True}
    for _ in range(3):
        stub.answer(200, endless)
    assert not refusal(stub, "minted", name="x").transient


def test_retire_deletes_the_service_account_and_then_succeeds_again(stub):
    account, _, _ = stub.add_account("rot-1")
    adapter.retire(admin_of(stub), upstream_id=account)
    adapter.retire(admin_of(stub), upstream_id=account)
    assert stub.project.accounts == {} and stub.project.keys == {}
    assert [(s.method, s.path) for s in stub.seen] == [
        ("DELETE", f"{PATH}/service_accounts/{account}")
    ] * 2
    assert stub.seen[-1].headers["authorization"] == f"Bearer {ADMIN_KEY}"


def test_a_hand_onboarded_key_is_found_by_its_hint_and_deleted(stub):
    kept = stub.add_key("sk-proj-" + "k" * 40 + "AAAA")
    gone = stub.add_key("sk-proj-" + "k" * 40 + "WXYZ")
    adapter.retire(admin_of(stub), upstream_id="", hint="...WXYZ")
    assert list(stub.project.keys) == [kept]
    assert [(s.method, s.path) for s in stub.seen] == [
        ("GET", f"{PATH}/api_keys"),
        ("DELETE", f"{PATH}/api_keys/{gone}"),
    ]


def test_a_hand_onboarded_service_account_key_is_retired_with_its_account(stub):
    account, value, _ = stub.add_account("made-by-hand")
    adapter.retire(admin_of(stub), upstream_id="", hint="..." + value[-4:])
    assert stub.seen[-1].method == "DELETE"
    assert stub.seen[-1].path == f"{PATH}/service_accounts/{account}"
    assert stub.project.accounts == {}


def test_an_account_holding_other_keys_is_never_deleted_for_one_of_them(stub):
    account, value, _ = stub.add_account("shared")
    owner = {"type": "service_account", "service_account": stub.project.accounts[account]}
    stub.add_key("sk-svcacct-" + "s" * 40 + "ZZZZ", owner=owner)
    refused = refusal(stub, "retire", upstream_id="", hint="..." + value[-4:])
    assert not refused.transient and "none deleted" in refused.reason
    assert account in stub.project.accounts and [s.method for s in stub.seen] == ["GET"]


@pytest.mark.parametrize(
    ("tails", "hint"),
    [(["AAAA"], "...WXYZ"), (["WXYZ", "WXYZ"], "...WXYZ"), (["WXYZ"], "...YZ"), ([], "")],
)
def test_a_hint_that_matches_no_key_or_several_deletes_nothing(stub, tails, hint):
    for i, tail in enumerate(tails):
        stub.add_key(f"sk-proj-{i}" + "k" * 40 + tail)
    refused = refusal(stub, "retire", upstream_id="", hint=hint)
    assert not refused.transient
    assert "DELETE" not in [s.method for s in stub.seen]
    assert len(stub.project.keys) == len(tails)


@pytest.mark.parametrize(
    ("status", "body", "transient"),
    [
        (400, docs.error("Project is archived"), False),
        (401, docs.INVALID_ADMIN_KEY, False),
        (403, docs.FORBIDDEN, False),
        (404, docs.error("No such project: proj_abc"), False),
        (429, docs.RATE_LIMITED, True),
        (500, docs.SERVER_ERROR, True),
        (503, b"<html>upstream</html>", True),
    ],
)
def test_each_documented_refusal_of_mint_is_transient_or_permanent(stub, status, body, transient):
    stub.answer(status, body, headers={"retry-after": "17"} if transient else None)
    refused = refusal(stub, name="n")
    assert (refused.transient, refused.reason.startswith(f"HTTP {status}")) == (transient, True)
    assert refused.retry_after == (17.0 if transient else None)


@pytest.mark.parametrize("call", ["minted", "retire"])
def test_rate_limits_of_listing_and_deleting_are_transient_with_retry_after(stub, call):
    stub.answer(429, docs.RATE_LIMITED, headers={"retry-after": "5"})
    kwargs = {"name": "n"} if call == "minted" else {"upstream_id": "svc_acct_x"}
    refused = refusal(stub, call, **kwargs)
    assert (refused.transient, refused.retry_after) == (True, 5.0)


def test_a_refused_delete_is_not_taken_for_a_deleted_account(stub):
    stub.answer(403, docs.FORBIDDEN)
    assert not refusal(stub, "retire", upstream_id="svc_acct_x").transient


def test_a_wrong_admin_key_is_permanent(stub):
    with pytest.raises(AdminError) as refused:
        adapter.mint(admin_of(stub, "sk-admin-wrong" + "x" * 20), name="n")
    assert not refused.value.transient and refused.value.reason.startswith("HTTP 401")


def test_a_timeout_is_transient(stub, settings):
    settings.PROVIDER_TIMEOUT_MS = 200
    stub.answer(200, {}, delay=1.0)
    assert refusal(stub, name="n").reason == "timeout"


@pytest.mark.parametrize("status", [400, 401, 429, 500])
@pytest.mark.parametrize(("call", "kwargs"), CALLS)
def test_an_answer_echoing_the_admin_key_yields_a_reason_without_it(stub, status, call, kwargs):
    stub.answer(status, docs.error("bad key " + " | ".join(forms(ADMIN_KEY))))
    reason = refusal(stub, call, **kwargs).reason
    assert all(form not in reason for form in forms(ADMIN_KEY)), reason


def test_an_error_echoing_a_new_key_yields_a_reason_without_it(stub):
    stub.answer(500, docs.error(f"could not return {NEW_KEY}"))
    assert NEW_KEY not in refusal(stub, name="n").reason


def test_a_new_key_in_an_answer_without_an_id_is_not_in_the_refusal(stub):
    answer = {"object": "organization.project.service_account", "api_key": {"value": NEW_KEY}}
    stub.answer(200, answer)
    refused = refusal(stub, name="n")
    assert not refused.transient
    assert all(form not in refused.reason + repr(refused.args) for form in forms(NEW_KEY))


def test_redirects_are_not_followed(stub):
    stub.answer(307, {}, headers={"location": stub.url + "/elsewhere"})
    refused = refusal(stub, "retire", upstream_id="svc_acct_x")
    assert not refused.transient and len(stub.seen) == 1


def test_the_egress_policy_refusing_the_host_is_permanent(stub, settings):
    settings.PROVIDER_URL_POLICY = "strict"
    refused = refusal(stub, name="n")
    assert not refused.transient and "egress" in refused.reason
    assert stub.seen == []


def test_the_settings_override_points_the_adapter_at_the_stub(stub, settings):
    settings.PROVIDER_ADMIN_BASE_URLS = {"openai": stub.base_url}
    admin = AdminCredential(secret=ADMIN_KEY, settings={"project_id": PROJECT})
    assert adapter.minted(admin, name="n") == []
    assert adapter.base_url(AdminCredential(secret="x")) == stub.base_url
