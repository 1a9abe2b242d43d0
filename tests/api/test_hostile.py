"""Hostile input anywhere gets a 4xx in the error shape, never a 5xx (security rule 19)."""

from __future__ import annotations

from typing import Any

import pytest

from tenants.models import Grant, ServicePrincipal, Tenant
from tests.factories import client as bearer

pytestmark = pytest.mark.django_db


def _refused(response, status=400):
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body["error"]) >= {"code", "message", "request_id"}
    assert "Traceback" not in response.content.decode()
    return body["error"]


@pytest.mark.parametrize(
    "path", ["/api/v1/tenants/%00/keys", "/api/v1/tenants/%00", "/api/v1/grants/%00"]
)
def test_a_nul_in_the_path_is_refused(actors, path):
    assert bearer().get(path).status_code in (400, 401, 404)
    response = actors.as_("alice").get(path)
    assert response.status_code in (400, 404), response.content
    _refused(response, response.status_code)


QUERIES = {
    "an impossible date": "since=2024-13-01T00:00:00Z",
    "an impossible until": "until=2024-02-30T00:00:00Z",
    "an empty until": "until=",
    "a time without its zone": "since=2024-01-01T00:00:00",
    "a time without seconds": "since=2024-01-01T00:00Z",
    "a malformed cursor": "cursor=cD0yMDI0",
    "a cursor that is not base64": "cursor=%%%",
    "a NUL in tenant": "tenant=a%00b",
    "a NUL in actor": "actor=%00",
    "a NUL in action": "action=key.%00",
    "a lone surrogate": "action=%ED%A0%80",
    "a limit that is not a number": "limit=ten",
    "a limit of zero": "limit=0",
    "a limit past the page maximum": "limit=1001",
    "a negative limit": "limit=-1",
    "a limit in other digits": "limit=%D9%A1",
    "an unknown outcome": "outcome=maybe",
    "an empty limit": "limit=",
    "an empty outcome": "outcome=",
}
EXPORT_PARAMETERS = ("since", "until", "tenant", "format")


@pytest.mark.parametrize(
    ("path", "case"),
    [("/api/v1/audit/events", case) for case in sorted(QUERIES)]
    + [
        ("/api/v1/audit/export", case)
        for case, query in sorted(QUERIES.items())
        if query.split("=")[0] in EXPORT_PARAMETERS
    ]
    + [("/api/v1/audit/export", "format=xml")],
)
def test_bad_audit_queries_are_refused(actors, path, case):
    response = actors.as_("carol").get(f"{path}?{QUERIES.get(case, case)}")
    assert response.status_code == 400, response.content
    _refused(response)


BODIES = {
    "deep nesting": '{"slug": ' + "[" * 1000 + "]" * 1000 + "}",
    "a lone surrogate as a key": '{"\\ud800": 1, "slug": "x", "name": "y"}',
    "a lone surrogate as a value": '{"slug": "x", "name": "\\ud800"}',
    "a NUL in a value": '{"slug": "x", "name": "a\\u0000b"}',
    "NaN": '{"slug": "x", "name": NaN}',
}


@pytest.mark.parametrize("case", sorted(BODIES))
def test_hostile_bodies_on_the_admin_api_are_refused(actors, case):
    before = Tenant.objects.count()
    response = actors.as_("alice").generic(
        "POST", "/api/v1/tenants", BODIES[case], content_type="application/json"
    )
    _refused(response)
    assert Tenant.objects.count() == before


WRONG_TYPES: dict[str, tuple[str, dict[str, Any]]] = {
    "a number for a string": ("/api/v1/tenants", {"slug": "typed", "name": 0}),
    "a boolean for a string": ("/api/v1/principals", {"name": True}),
    "a string for an integer": (
        "/api/v1/grants",
        {"tenant": "*", "provider": "*", "scopes": ["release"], "max_ttl_seconds": "60"},
    ),
    "a float for an integer": (
        "/api/v1/grants",
        {"tenant": "*", "provider": "*", "scopes": ["release"], "max_ttl_seconds": 60.0},
    ),
}


@pytest.mark.parametrize("case", sorted(WRONG_TYPES))
def test_json_types_are_exact_on_the_admin_api(actors, case):
    path, body = WRONG_TYPES[case]
    if path.endswith("grants"):
        principal = actors.as_("alice").post(
            "/api/v1/principals", {"name": "typed-svc"}, format="json"
        )
        body = {**body, "principal": principal.json()["id"]}
    before = (Tenant.objects.count(), ServicePrincipal.objects.count(), Grant.objects.count())
    response = actors.as_("alice").post(path, body, format="json")
    error = _refused(response)
    assert set(error["fields"]) & {"name", "max_ttl_seconds"}
    assert (
        Tenant.objects.count(),
        ServicePrincipal.objects.count(),
        Grant.objects.count(),
    ) == before


@pytest.mark.parametrize(
    "name", ["Acme\u001b[31m", "Acme\u0085Corp", "Acme\nCorp", "\u001c" + "x" * 200]
)
def test_a_tenant_name_holds_no_control_characters(actors, name):
    response = actors.as_("alice").post(
        "/api/v1/tenants", {"slug": "named", "name": name}, format="json"
    )
    assert "name" in _refused(response)["fields"]
    assert not Tenant.objects.filter(slug="named").exists()


def test_a_key_never_checked_matches_its_documented_schema(actors, client):
    schema = client.get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    field = schema["components"]["schemas"]["Key"]["properties"]["last_validation"]
    allowed = set()
    for option in field.get("oneOf", [field]):
        ref = option.get("$ref", "")
        target = schema["components"]["schemas"][ref.rsplit("/", 1)[-1]] if ref else option
        allowed |= set(target.get("enum", []))
    assert {"", "ok", "invalid", "error"} <= allowed


# -- a corpus of hostile inputs against every operation of the served document ----------

CORPUS_BODIES: list[bytes] = [
    *(body.encode() for body in BODIES.values()),
    b"\xff\xfe{}",  # not UTF-8
    b'{"a": 1',  # cut off
    b"[]",
    b'"a string"',
    b"1e999",
    b'{"ttl_seconds": 1e400, "max_ttl_seconds": 99999999999999999999999999}',
    b'{"token": 0, "secret": [], "name": {}, "slug": null, "scopes": "release"}',
    b'{"tenant": "\\u0000", "provider": "\\ud800", "label": "\\u202e", "base_url": "http://[::1"}',
    b'{"status": "suspended\\u0000", "principal": "not-a-uuid", "max_uses": -1}',
    b'{"grace_period_seconds": 1.5, "rotation_period_days": true, "key": "../../x"}',
    b"{" + b'"k": 1, ' * 5000 + b'"z": 1}',
    '{"name": "\U0001f4a3" }'.encode(),
]
CORPUS_PATH_VALUES = [
    "%00",
    "%ED%A0%80",
    "..%2F..%2Fetc%2Fpasswd",
    "x" * 300,
    "%F0%9F%92%A3",
    "%25%30%30",
    "'%20OR%201=1--",
    "00000000-0000-0000-0000-000000000000",
    "%C0%AE",
]
CORPUS_QUERIES = [
    "since=2024-13-01T00:00:00Z&until=yesterday",
    "cursor=cD0yMDI0&limit=%00",
    "tenant=%00&actor=%ED%A0%80&action=%FF",
    "validate=maybe",
    "format=..%2F",
    "x=" + "y" * 5000,
]


def _operations(document: dict) -> list[tuple[str, str]]:
    return [
        (method.upper(), path)
        for path, operations in document["paths"].items()
        for method in operations
    ]


def _fill(path: str, values: dict[str, str], hostile: str | None = None) -> str:
    for name, value in values.items():
        path = path.replace("{" + name + "}", hostile if hostile is not None else value)
    return path


@pytest.mark.parametrize("who", ["alice", "carol", "principal", "token", "anonymous"])
def test_every_operation_refuses_a_corpus_of_hostile_inputs_without_a_server_error(
    world, client, who
):
    token = world.token(scopes=["release", "proxy"])
    callers = {
        "principal": lambda: bearer(world.secret),
        "token": lambda: bearer(token),
        "anonymous": lambda: bearer(None),
    }
    api = callers.get(who, lambda: world.actors.as_(who))()
    document = client.get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    token_id = (
        world.api()
        .post("/api/v1/tokens/introspect", {"token": token}, format="json")
        .json()["token_id"]
    )
    values = {
        "slug": world.actors.tenant_a.slug,
        "key_id": str(world.key_a.id),
        "principal_id": str(world.principal.id),
        "grant_id": str(world.grant.id),
        "token_id": token_id,
    }
    failures: list[str] = []
    sent = 0

    def send(method: str, path: str, body: bytes = b"") -> None:
        nonlocal sent
        sent += 1
        response = api.generic(method, path, body, content_type="application/json")
        status = response.status_code
        text = response.content.decode("utf-8", "replace")
        problem = ""
        if status >= 500:
            problem = "a server error"
        elif status >= 400:
            error = (
                response.json().get("error", {})
                if response.get("Content-Type", "").startswith("application/json")
                else {}
            )
            if not {"code", "message", "request_id"} <= set(error):
                problem = "not the error shape"
        if "Traceback" in text or 'File "' in text:
            problem = "a traceback"
        if problem:
            failures.append(f"{method} {path[:120]} {body[:60]!r}: {status} {problem}")

    for method, template in _operations(document):
        for hostile in CORPUS_PATH_VALUES:
            if "{" in template:
                send(method, _fill(template, values, hostile))
        if method == "DELETE":
            continue  # with real ids it would delete what the rest needs
        path = _fill(template, values)
        for query in CORPUS_QUERIES:
            send(method, f"{path}?{query}")
        if method in ("POST", "PATCH", "PUT"):
            for body in CORPUS_BODIES:
                send(method, path, body)
    assert sent > 300
    assert failures == [], "\n".join(failures[:40])
