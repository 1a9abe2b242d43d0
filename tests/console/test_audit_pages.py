"""The audit log in the console: auditors search events, read one with its inclusion proof,
download signed exports and verify the chains, through what the API's audit endpoints
call (the same scoping, the same audit events); security admins and users without a role
refused, a tenant-limited auditor kept to her tenants, bad input refused with nothing
recorded."""

from __future__ import annotations

import html
import re
from pathlib import Path

import pytest
from django.test import Client

from audit.actors import Actor
from audit.models import AuditEvent, AuditLink
from audit.offline import verify_file
from audit.recorder import GLOBAL_CHAIN, chain_for, record
from audit.sequencer import integrate_all
from auditor import jobs, proofs, signing
from tests.audit.tamper import tamper
from tests.console.helpers import (
    POLICY,
    browser_client,
    dashboard_world,
    make_console_user,
    signed_in,
)

PAGES = ["/console/audit/", "/console/audit/export/", "/console/audit/verify/"]
EVENT_LINK = re.compile(r'href="/console/audit/events/([0-9a-f-]{36})/"')


def _write(tenant: str | None, count: int, action: str = "test.console") -> None:
    for n in range(count):
        record(action, actor=Actor.system("tests"), tenant=tenant, details={"n": n})


@pytest.fixture
def signed(actors, settings):
    """Events in both tenants' chains and the global one, integrated and signed."""
    settings.SECRET_STORES = {"default": {"backend": "local"}}
    _write(actors.tenant_a.slug, 5)
    _write(actors.tenant_b.slug, 3)
    _write(None, 2)
    integrate_all()
    assert not jobs.sign_checkpoints().refused
    return actors


def _carol() -> Client:
    return signed_in(make_console_user("auditor", name="carol"))


def _dave(actors) -> Client:
    return signed_in(make_console_user("auditor", [actors.tenant_a], name="dave"))


def _shown(response) -> list[str]:
    """The ids of the events a results page lists, in order."""
    assert response.status_code == 200, response.content
    return EVENT_LINK.findall(response.content.decode())


def _link(response, rel: str) -> str | None:
    found = re.search(rf'href="([^"]+)"[^>]*rel="{rel}"', response.content.decode())
    return html.unescape(found.group(1)) if found else None


def test_only_auditors_open_the_audit_pages(signed):
    alice = signed_in(make_console_user("security_admin", name="alice"))
    bob = signed_in(make_console_user("security_admin", [signed.tenant_a], name="bob"))
    carol, dave = _carol(), _dave(signed)
    event = AuditLink.objects.filter(chain=chain_for(signed.tenant_a.slug)).earliest("seq")
    pages = [
        *PAGES,
        f"/console/audit/events/{event.pk}/",
        f"/console/audit/events/{event.pk}/proof/",
    ]
    for url in pages:
        for client in (carol, dave):
            assert client.get(url).status_code == 200, url
        for client in (alice, bob):
            assert client.get(url).status_code == 403, url
        anonymous = browser_client().get(url)
        assert anonymous.status_code == 302 and anonymous["Location"].startswith("/console/login/")
    denied = AuditEvent.objects.filter(action="access.denied", details__status=403)
    assert denied.count() == 2 * len(pages), "every refusal is audited as the API's are"
    assert "Audit log" in carol.get("/console/").content.decode()
    assert "Audit log" not in alice.get("/console/").content.decode()


def test_the_audit_pages_carry_the_policy_and_no_inline_code(signed):
    carol = _carol()
    for url in PAGES:
        response = carol.get(url)
        assert response["Content-Security-Policy"] == POLICY
        assert "no-store" in response["Cache-Control"]
        page = response.content.decode()
        assert not re.search(r"<script(?![^>]*\bsrc=)", page), url
        assert "<style" not in page and " style=" not in page and " on" + "click" not in page


def test_the_filters_narrow_the_events_and_each_search_is_audited(signed):
    carol = _carol()
    a = signed.tenant_a.slug
    everything = _shown(carol.get("/console/audit/", {"limit": "1000"}))
    of_a = AuditEvent.objects.filter(tenant=a).values_list("id", flat=True)
    assert {str(i) for i in of_a} <= set(everything)
    narrowed = _shown(carol.get("/console/audit/", {"tenant": a, "action": "test.console"}))
    expected = AuditEvent.objects.filter(tenant=a, action="test.console")
    assert set(narrowed) == {str(e.pk) for e in expected} and len(narrowed) == 5
    assert (
        _shown(carol.get("/console/audit/", {"action": "test.console", "outcome": "denied"})) == []
    )
    assert _shown(carol.get("/console/audit/", {"since": "2999-01-01T00:00:00Z"})) == []
    system = _shown(carol.get("/console/audit/", {"actor": "system:tests", "tenant": a}))
    assert set(narrowed) <= set(system)
    empty = carol.get("/console/audit/", {"action": "test.console", "since": "", "until": ""})
    assert len(_shown(empty)) == 10, "an empty field filters nothing"
    search = AuditEvent.objects.filter(action="audit.searched").order_by("-occurred_at")[:6]
    filters = [e.details["filters"] for e in search]
    assert {"tenant": a, "action": "test.console", "via": "console"} in filters
    assert search[0].details["returned"] == 10


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"since": "yesterday"}, "since must be an RFC 3339 time with a zone."),
        ({"until": "2026-01-01T00:00:00"}, "until must be an RFC 3339 time with a zone."),
        ({"until": "2026-13-01T00:00:00Z"}, "until must be an RFC 3339 time with a zone."),
        ({"outcome": "maybe"}, "One of success, denied, error."),
        ({"colour": "red"}, "Unknown filter."),
        ({"cursor": "not a cursor!"}, "Malformed cursor."),
        ({"cursor": "bm9wZQ"}, "Malformed cursor."),  # base64 of "nope"
        ({"cursor": "b3x5ZXN0ZXJkYXl8eA"}, "Malformed cursor."),  # o|yesterday|x
        ({"limit": "0"}, "An integer from 1 to 1000."),
        ({"limit": "9" * 5000}, "An integer from 1 to 1000."),
    ],
)
def test_a_bad_filter_is_a_400_with_its_reason_and_records_nothing(signed, params, message):
    carol = _carol()
    before = AuditEvent.objects.count()
    response = carol.get("/console/audit/", params)
    assert response.status_code == 400
    page = response.content.decode()
    assert 'role="alert"' in page and html.escape(message) in page
    assert EVENT_LINK.findall(page) == []
    assert AuditEvent.objects.count() == before
    partial = carol.get("/console/audit/", params, HTTP_HX_REQUEST="true")
    assert partial.status_code == 400 and "<html" not in partial.content.decode()


def test_cursor_pages_walk_every_event_once_both_ways(signed):
    _write(signed.tenant_a.slug, 8, action="test.walk")
    carol = _carol()
    url: str | None = "/console/audit/?action=test.walk&limit=3"
    responses = []
    while url:
        responses.append(carol.get(url))
        url = _link(responses[-1], "next")
    pages = [_shown(response) for response in responses]
    walked = [i for page in pages for i in page]
    newest_first = AuditEvent.objects.filter(action="test.walk").order_by("-occurred_at", "-id")
    assert walked == [str(e.pk) for e in newest_first], "every event once, newest first"
    assert [len(page) for page in pages] == [3, 3, 2]
    assert [_link(r, "prev") is None for r in responses] == [True, False, False]
    newer = _link(responses[1], "prev")
    assert newer is not None and "action=test.walk" in newer and "limit=3" in newer
    assert _shown(carol.get(newer)) == pages[0]
    back = _link(responses[2], "prev")
    assert back is not None and _shown(carol.get(back)) == pages[1]


def test_htmx_filtering_swaps_the_results_alone(signed):
    carol = _carol()
    partial = carol.get("/console/audit/", {"action": "test.console"}, HTTP_HX_REQUEST="true")
    body = partial.content.decode()
    assert partial.status_code == 200 and body.startswith('<section id="audit-results"')
    assert "<html" not in body and len(EVENT_LINK.findall(body)) == 10
    restore = carol.get(
        "/console/audit/", HTTP_HX_REQUEST="true", HTTP_HX_HISTORY_RESTORE_REQUEST="true"
    )
    assert "<html" in restore.content.decode()
    full = carol.get("/console/audit/").content.decode()
    assert 'hx-get="/console/audit/"' in full and 'hx-push-url="true"' in full
    assert 'method="get" action="/console/audit/"' in full, "the form works without JavaScript"


def test_a_tenant_limited_auditor_sees_her_tenants_only(signed):
    dave = _dave(signed)
    a, b = signed.tenant_a.slug, signed.tenant_b.slug
    shown = set(_shown(dave.get("/console/audit/", {"limit": "1000"})))
    tenants = set(AuditEvent.objects.filter(id__in=shown).values_list("tenant", flat=True))
    assert tenants == {a}, "neither tenant B's events nor the global chain's"
    page = dave.get("/console/audit/").content.decode()
    assert f'value="{b}"' not in page
    denied = AuditEvent.objects.filter(action="access.denied", details__status=404)
    for slug in (b, "no-such-tenant"):
        assert dave.get("/console/audit/", {"tenant": slug}).status_code == 404
    assert list(denied.values_list("tenant", flat=True)) == [b], "the probe is audited there"
    theirs = AuditEvent.objects.filter(tenant=b).earliest("occurred_at")
    no_ones = AuditEvent.objects.filter(tenant="", action="test.console").earliest("occurred_at")
    for event in (theirs, no_ones):
        assert dave.get(f"/console/audit/events/{event.pk}/").status_code == 404
        assert dave.get(f"/console/audit/events/{event.pk}/proof/").status_code == 404
    assert denied.filter(tenant=b).count() == 3
    assert denied.filter(chain=GLOBAL_CHAIN, tenant="").count() == 2
    missing = dave.get("/console/audit/events/6a1f8a56-3d0c-4b8e-9b1e-2f7c7f3c9d10/")
    assert missing.status_code == 404 and denied.count() == 5, "absent: not audited"
    mine = AuditEvent.objects.filter(tenant=a).earliest("occurred_at")
    assert dave.get(f"/console/audit/events/{mine.pk}/").status_code == 200


def test_an_event_shows_every_field_and_its_details_escaped(signed):
    record(
        "test.detail",
        actor=Actor("user", "someone"),
        tenant=signed.tenant_a.slug,
        target="key:1",
        details={"label": "<script>alert(1)</script>", "nested": {"n": 1}},
    )
    integrate_all()
    event = AuditEvent.objects.get(action="test.detail")
    link = AuditLink.objects.get(event_id=event.pk)
    page = _carol().get(f"/console/audit/events/{event.pk}/").content.decode()
    assert "<script>alert" not in page
    assert "&quot;label&quot;: &quot;&lt;script&gt;alert(1)&lt;/script&gt;&quot;" in page
    assert "&quot;nested&quot;: {\n    &quot;n&quot;: 1\n  }" in page, "pretty-printed"
    for value in (str(event.pk), event.chain, link.prev_hash, link.hash, link.leaf_hash, "key:1"):
        assert value in page
    assert f"<dd>{link.seq}</dd>" in page
    assert f"/console/audit/events/{event.pk}/proof/" in page
    read = AuditEvent.objects.filter(action="audit.searched").latest("occurred_at")
    assert read.details == {"filters": {"id": str(event.pk), "via": "console"}, "returned": 1}


def test_an_event_not_yet_in_its_chain_says_so(signed):
    _write(signed.tenant_a.slug, 1, action="test.pending")
    event = AuditEvent.objects.get(action="test.pending")
    carol = _carol()
    assert "Not yet integrated" in carol.get(f"/console/audit/events/{event.pk}/").content.decode()
    assert carol.get(f"/console/audit/events/{event.pk}/proof/").status_code == 404


def test_the_inclusion_proof_is_the_apis_and_is_audited(signed):
    link = AuditLink.objects.get(chain=chain_for(signed.tenant_a.slug), seq=3)
    expected = proofs.inclusion(link, None)
    response = _carol().get(f"/console/audit/events/{link.pk}/proof/")
    page = html.unescape(response.content.decode())
    assert f"tree of size {expected['size']}" in page
    for value in (expected["leaf_hash"], *expected["proof"], expected["checkpoint"]["note"]):
        assert value in page
    read = AuditEvent.objects.get(action="audit.proof_read")
    assert read.details == {"kind": "inclusion", "event_id": str(link.pk), "size": expected["size"]}


def _download(client: Client, tmp_path: Path, **form: str) -> Path:
    response = client.post("/console/audit/export/", form)
    assert response.status_code == 200, response.content
    assert response["Content-Disposition"].startswith("attachment; filename=")
    path = tmp_path / f"export.{form.get('format', 'jsonl')}"
    path.write_bytes(response.getvalue())
    return path


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_an_auditor_downloads_an_export_that_verifies_offline(signed, tmp_path, fmt):
    path = _download(_carol(), tmp_path, format=fmt, tenant=signed.tenant_a.slug)
    report = verify_file(path, signing.signer().public_pem())
    assert report.ok, report.problems
    assert report.events == AuditLink.objects.filter(chain=chain_for(signed.tenant_a.slug)).count()
    assert set(report.manifest["chains"]) == {chain_for(signed.tenant_a.slug)}
    exported = AuditEvent.objects.get(action="audit.exported")
    assert exported.details["format"] == fmt and exported.details["count"] == report.events


def test_a_limited_auditors_export_holds_her_tenants_only(signed, tmp_path):
    dave = _dave(signed)
    path = _download(dave, tmp_path)
    report = verify_file(path, signing.signer().public_pem())
    assert report.ok and set(report.manifest["chains"]) == {chain_for(signed.tenant_a.slug)}
    before = AuditEvent.objects.filter(action="audit.exported").count()
    response = dave.post("/console/audit/export/", {"tenant": signed.tenant_b.slug})
    assert response.status_code == 404
    assert AuditEvent.objects.filter(action="audit.exported").count() == before
    hidden = AuditEvent.objects.get(action="access.denied", details__status=404)
    assert hidden.tenant == signed.tenant_b.slug


@pytest.mark.parametrize(
    "form",
    [{"format": "xml"}, {"since": "last week"}, {"until": "2026-02-30T00:00:00Z"}],
)
def test_a_bad_export_is_a_400_and_nothing_is_exported(signed, form):
    carol = _carol()
    before = AuditEvent.objects.count()
    response = carol.post("/console/audit/export/", form)
    assert response.status_code == 400
    assert not response.streaming and 'role="alert"' in response.content.decode()
    assert "Content-Disposition" not in response
    assert AuditEvent.objects.count() == before


def test_the_verification_page_shows_each_chains_latest_check(world):
    a, b = dashboard_world(world)
    carol = _carol()
    page = carol.get("/console/audit/verify/").content.decode()
    assert "Verified" in page and "First bad: seq 2: hash mismatch" in page
    assert chain_for(a.slug) in page and chain_for(b.slug) in page
    limited = _dave(world.actors).get("/console/audit/verify/").content.decode()
    assert chain_for(a.slug) in limited and chain_for(b.slug) not in limited
    assert "hash mismatch" not in limited
    assert AuditEvent.objects.filter(action="audit.checkpoint_read").count() == 2


def test_the_verification_page_shows_the_signed_checkpoints(signed):
    page = html.unescape(_carol().get("/console/audit/verify/").content.decode())
    for chain in (chain_for(signed.tenant_a.slug), chain_for(signed.tenant_b.slug), GLOBAL_CHAIN):
        held = proofs.latest(chain)
        assert held is not None and held.note in page
    assert "0 witness cosignatures" in page


def test_verify_now_checks_the_chains_and_is_audited(signed):
    response = _carol().post("/console/audit/verify/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "Verified just now" in page and "Intact" in page and "First bad" not in page
    verified = AuditEvent.objects.get(action="audit.verified")
    assert verified.details["ok"] is True and verified.details["chains"] >= 3
    _dave(signed).post("/console/audit/verify/")
    assert AuditEvent.objects.filter(action="audit.verified").latest("occurred_at").details == {
        "chains": 1,
        "ok": True,
    }


def test_verify_now_needs_its_csrf_token(signed):
    strict = Client(enforce_csrf_checks=True, REMOTE_ADDR="10.9.9.8")
    strict.force_login(make_console_user("auditor", name="carol"))
    assert strict.post("/console/audit/verify/").status_code == 403
    assert strict.post("/console/audit/export/").status_code == 403
    assert not AuditEvent.objects.filter(action__in=["audit.verified", "audit.exported"]).exists()


def test_verify_now_names_the_first_bad_event_of_a_broken_chain(committed_actors):
    chain = chain_for(committed_actors.tenant_a.slug)
    _write(committed_actors.tenant_a.slug, 10)
    integrate_all()
    assert not jobs.sign_checkpoints().refused
    flipped = AuditLink.objects.get(chain=chain, seq=4).event_id
    tamper(["UPDATE audit_event SET target = 'forged' WHERE id = %s"], [flipped])
    response = _carol().post("/console/audit/verify/")
    page = response.content.decode()
    assert response.status_code == 200 and "Broken" in page
    assert f"First bad: chain {chain}: event {flipped} (seq 4)" in page
    assert AuditEvent.objects.get(action="audit.verified").details["ok"] is False
