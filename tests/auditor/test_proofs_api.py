"""The auditor's proof endpoints (api.md "Audit"): the latest signed checkpoint of each
chain, an event's inclusion proof, consistency proofs and verification, each checked here
with the RFC 9162 verification algorithms against the signed checkpoint; tenant-limited
auditors see their tenants' chains only; bad input is refused and records nothing."""

from __future__ import annotations

import base64

import pytest

from audit import merkle, note
from audit.actors import Actor
from audit.chain import HASHED_FIELDS, canonical_bytes
from audit.models import AuditEvent, AuditLink
from audit.queries import integrated_events
from audit.recorder import GLOBAL_CHAIN, chain_for, record
from audit.sequencer import integrate_all
from auditor import jobs
from auditor.archive import archive
from tests.audit.tamper import tamper
from tests.auditor.forge import forged_checkpoint


def _write(tenant: str, count: int) -> None:
    for n in range(count):
        record("test.proof", actor=Actor.system(), tenant=tenant, details={"n": n})


@pytest.fixture
def signed(actors):
    _write(actors.tenant_a.slug, 40)
    _write(actors.tenant_b.slug, 10)
    integrate_all()
    assert not jobs.sign_checkpoints().refused
    return actors


def _leaves(chain: str) -> list[bytes]:
    rows = integrated_events().filter(chain=chain).order_by("link__seq").values(*HASHED_FIELDS)
    return [merkle.leaf_hash(canonical_bytes(row)) for row in rows]


def _b(text: str) -> bytes:
    return base64.b64decode(text)


def _checkpoints(api) -> dict:
    response = api.get("/api/v1/audit/checkpoint")
    assert response.status_code == 200, response.content
    body = response.json()
    key = note.Verifier.parse(body["log_key"])
    opened = {}
    for held in body["checkpoints"]:
        checkpoint = note.Checkpoint.parse(note.open_note(held["note"], [key]).text)
        assert checkpoint.origin.endswith("/" + held["chain"])
        assert (checkpoint.size, checkpoint.root) == (held["size"], _b(held["root"]))
        opened[held["chain"]] = checkpoint
    return opened


ENDPOINTS = ["checkpoint", "verify", "consistency?chain=global&from=1", "proof"]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize(
    ("who", "status"),
    [("carol", 200), ("alice", 403), ("charlie", 403), ("principal", 403), ("anonymous", 401)],
)
def test_only_auditors_read_proofs(signed, endpoint, who, status):
    if endpoint == "proof":
        event = AuditLink.objects.filter(chain=chain_for(signed.tenant_a.slug)).earliest("seq")
        endpoint = f"events/{event.pk}/proof"
    assert signed.as_(who).get(f"/api/v1/audit/{endpoint}").status_code == status


def test_every_chain_has_a_signed_checkpoint_of_its_tree(signed):
    opened = _checkpoints(signed.as_("carol"))
    a, b = chain_for(signed.tenant_a.slug), chain_for(signed.tenant_b.slug)
    assert {a, b, GLOBAL_CHAIN} <= set(opened)
    for chain in (a, b):
        assert opened[chain].root == merkle.root(_leaves(chain))
    assert AuditEvent.objects.filter(action="audit.checkpoint_read").exists()


def test_a_tenant_limited_auditor_sees_only_its_tenants_chains(signed):
    dave = signed.as_("dave")
    assert set(_checkpoints(dave)) == {chain_for(signed.tenant_a.slug)}
    other = chain_for(signed.tenant_b.slug)
    for url in (
        f"/api/v1/audit/checkpoint?chain={other}",
        f"/api/v1/audit/consistency?chain={other}&from=1",
        f"/api/v1/audit/verify?chain={other}",
        f"/api/v1/audit/consistency?chain={GLOBAL_CHAIN}&from=1",
    ):
        response = dave.get(url)
        assert response.status_code == 404, url
        assert response.json()["error"]["code"] == "chain_not_found"
    hidden = AuditLink.objects.filter(chain=other).earliest("seq")
    response = dave.get(f"/api/v1/audit/events/{hidden.pk}/proof")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "event_not_found"
    verified = dave.get("/api/v1/audit/verify").json()
    assert [c["chain"] for c in verified["chains"]] == [chain_for(signed.tenant_a.slug)]


def test_an_inclusion_proof_verifies_against_the_signed_checkpoint(signed):
    api = signed.as_("carol")
    chain = chain_for(signed.tenant_a.slug)
    checkpoint = _checkpoints(api)[chain]
    leaves = _leaves(chain)
    size = len(leaves)  # the tenant's creation, then the 40 events written here
    for link in AuditLink.objects.filter(chain=chain, seq__in=[1, 17, size]):
        body = api.get(f"/api/v1/audit/events/{link.pk}/proof").json()
        assert (body["index"], body["size"]) == (link.seq - 1, size)
        assert _b(body["leaf_hash"]) == leaves[link.seq - 1]
        assert body["checkpoint"]["note"].startswith(checkpoint.origin)
        proof = [_b(h) for h in body["proof"]]
        merkle.verify_inclusion(link.seq - 1, size, leaves[link.seq - 1], proof, checkpoint.root)
    smaller = api.get(f"/api/v1/audit/events/{link.pk}/proof?size=20")
    assert smaller.status_code == 400  # seq 40 is not in the tree of 20
    early = AuditLink.objects.get(chain=chain, seq=3)
    body = api.get(f"/api/v1/audit/events/{early.pk}/proof?size=20").json()
    merkle.verify_inclusion(
        2, 20, leaves[2], [_b(h) for h in body["proof"]], merkle.root(leaves[:20])
    )
    assert "checkpoint" not in body


def test_a_consistency_proof_joins_an_older_tree_to_the_checkpoint(signed):
    api = signed.as_("carol")
    chain = chain_for(signed.tenant_a.slug)
    checkpoint = _checkpoints(api)[chain]
    leaves = _leaves(chain)
    body = api.get(f"/api/v1/audit/consistency?chain={chain}&from=13").json()
    assert (body["from"], body["to"]) == (13, len(leaves))
    assert _b(body["from_root"]) == merkle.root(leaves[:13])
    assert _b(body["to_root"]) == checkpoint.root
    proof = [_b(h) for h in body["proof"]]
    merkle.verify_consistency(13, len(leaves), merkle.root(leaves[:13]), checkpoint.root, proof)


@pytest.mark.parametrize(
    "query",
    [
        "from=0",
        "from=42",
        "from=abc",
        "from=%EF%BC%91",  # a full-width digit
        "from=30&to=20",
        "from=1&to=99",
        "from=1&size=3",
    ],
)
def test_a_bad_consistency_request_is_refused_and_records_nothing(signed, query):
    chain = chain_for(signed.tenant_a.slug)
    before = AuditEvent.objects.count()
    response = signed.as_("carol").get(f"/api/v1/audit/consistency?chain={chain}&{query}")
    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == "invalid"
    assert AuditEvent.objects.count() == before


def test_a_missing_chain_or_event_is_a_clear_refusal(signed):
    api = signed.as_("carol")
    assert api.get("/api/v1/audit/consistency?from=1").status_code == 400
    assert api.get("/api/v1/audit/consistency?chain=tenant:nobody&from=1").status_code == 404
    missing = api.get("/api/v1/audit/events/6a1f8a56-3d0c-4b8e-9b1e-2f7c7f3c9d10/proof")
    assert missing.status_code == 404
    assert api.get("/api/v1/audit/events/not-a-uuid/proof").status_code == 404


def test_an_event_newer_than_the_checkpoint_waits_for_the_next(signed):
    _write(signed.tenant_a.slug, 1)
    integrate_all()
    newest = AuditLink.objects.get(chain=chain_for(signed.tenant_a.slug), seq=42)
    response = signed.as_("carol").get(f"/api/v1/audit/events/{newest.pk}/proof")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "not_yet_signed"
    later = signed.as_("carol").get(f"/api/v1/audit/events/{newest.pk}/proof?size=42")
    assert later.status_code == 200


def test_verify_answers_as_api_md_says_and_is_audited(signed):
    body = signed.as_("carol").get("/api/v1/audit/verify").json()
    assert body["ok"] is True and body["first_bad"] is None
    assert body["events_checked"] == AuditLink.objects.count()
    chain = chain_for(signed.tenant_a.slug)
    one = signed.as_("carol").get(f"/api/v1/audit/verify?chain={chain}").json()
    assert one["head"] == AuditLink.objects.get(chain=chain, seq=41).hash
    assert one["chains"][0]["checkpoint"]["size"] == 41
    assert AuditEvent.objects.filter(action="audit.verified").count() == 2


@pytest.fixture
def committed_signed(committed_actors):
    _write(committed_actors.tenant_a.slug, 40)
    integrate_all()
    assert not jobs.sign_checkpoints().refused
    return committed_actors


def test_verify_names_the_checkpoint_a_cut_chain_contradicts(committed_signed):
    chain = chain_for(committed_signed.tenant_a.slug)
    tamper(["DELETE FROM audit_link WHERE chain = %s AND seq > 35"], [chain])
    body = committed_signed.as_("carol").get(f"/api/v1/audit/verify?chain={chain}").json()
    assert body["ok"] is False
    assert "35 events, fewer than the 41 of the signed checkpoint of size 41" in body["first_bad"]


@pytest.mark.parametrize(
    "chain", ["tenant:", "tenant:Not%20A%20Slug", "acme", "tenant:" + "a" * 70, "tenant:a%00"]
)
def test_a_chain_name_that_names_no_chain_is_refused_and_records_nothing(signed, chain):
    before = AuditEvent.objects.count()
    for url in (
        f"/api/v1/audit/checkpoint?chain={chain}",
        f"/api/v1/audit/consistency?chain={chain}&from=1",
        f"/api/v1/audit/verify?chain={chain}",
    ):
        response = signed.as_("carol").get(url)
        assert response.status_code == 400, (url, response.content)
        assert response.json()["error"]["code"] in ("invalid", "bad_request")
    assert AuditEvent.objects.count() == before


def test_a_chain_of_no_tenant_is_refused_in_the_global_chain(signed):
    response = signed.as_("dave").get("/api/v1/audit/verify?chain=tenant:nobody-here")
    assert response.status_code == 404
    integrate_all()
    assert not AuditEvent.objects.filter(chain="tenant:nobody-here").exists()
    refused = AuditEvent.objects.filter(action="access.denied", details__status=404)
    assert refused.get().chain == GLOBAL_CHAIN


@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/audit/consistency?chain={chain}&from=" + "9" * 5000,
        "/api/v1/audit/consistency?chain={chain}&from=1&to=" + "9" * 20,
        "/api/v1/audit/consistency?chain={chain}&from=%C2%B2",  # a superscript two
        "/api/v1/audit/events/{event}/proof?size=" + "9" * 5000,
        "/api/v1/audit/events?limit=" + "9" * 5000,
    ],
)
def test_numbers_of_any_length_or_script_get_a_400(signed, url):
    chain = chain_for(signed.tenant_a.slug)
    event = AuditLink.objects.filter(chain=chain).earliest("seq").pk
    response = signed.as_("carol").get(url.format(chain=chain, event=event))
    assert response.status_code == 400, response.content


def test_proofs_are_refused_while_the_held_checkpoint_does_not_verify(signed):
    chain = chain_for(signed.tenant_a.slug)
    held = archive().latest(chain)
    archive().replace(chain, forged_checkpoint(chain, 41), held)
    api = signed.as_("carol")
    link = AuditLink.objects.filter(chain=chain).earliest("seq")
    for url in (
        f"/api/v1/audit/events/{link.pk}/proof",
        f"/api/v1/audit/consistency?chain={chain}&from=1",
    ):
        response = api.get(url)
        assert response.status_code == 409, response.content
        assert response.json()["error"]["code"] == "checkpoint_unverified"
    listed = api.get(f"/api/v1/audit/checkpoint?chain={chain}").json()["checkpoints"]
    assert "does not verify" in listed[0]["problem"]


def test_verify_reports_hidden_events_only_of_the_chains_asked(committed_signed):
    actors = committed_signed
    record("test.hidden", actor=Actor.system(), tenant=actors.tenant_b.slug)
    hidden = AuditEvent.objects.filter(action="test.hidden").get()
    tamper(["DELETE FROM audit_pending WHERE event_id = %s"], [hidden.pk])
    mine, theirs = chain_for(actors.tenant_a.slug), chain_for(actors.tenant_b.slug)
    carol, dave = actors.as_("carol"), actors.as_("dave")
    for api, url, ok in (
        (carol, "/api/v1/audit/verify", False),
        (carol, f"/api/v1/audit/verify?chain={theirs}", False),
        (carol, f"/api/v1/audit/verify?chain={mine}", True),
        (dave, "/api/v1/audit/verify", True),
    ):
        body = api.get(url).json()
        assert body["ok"] is ok, (url, body)
        assert (str(hidden.pk) in body["unaccounted"]) is not ok
