"""The plain views of the hot path (token issue, introspection, exchange) keep every rule the
DRF views keep: the error shape, strict bodies, one refusal event, no cookies, and an
OpenAPI description."""

from __future__ import annotations

import json

import pytest

from audit.models import AuditEvent
from kms.models import ScopedToken
from tests.factories import client

pytestmark = pytest.mark.django_db

TOKENS = "/api/v1/tokens"
INTROSPECT = "/api/v1/tokens/introspect"
EXCHANGE = "/api/v1/exchange"


def _raw(api, path, body, content_type="application/json", method="POST"):
    return api.generic(method, path, body, content_type=content_type)


def _error(response, status, code):
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert error["code"] == code
    assert error["request_id"] == response["X-Request-ID"]
    assert response["Cache-Control"] == "no-store"
    assert "Traceback" not in response.content.decode()
    return error


def _good(world, **changes):
    body = {"tenant": world.actors.tenant_a.slug, "provider": "openai", "scopes": ["release"]}
    return json.dumps({**body, **changes})


HOSTILE = {
    "a NUL byte": lambda w: _good(w, tenant="acme\u0000"),
    "a lone surrogate": lambda w: _good(w, tenant="\ud800"),
    "a number for a string": lambda w: _good(w, tenant=42),
    "a string for a number": lambda w: _good(w, ttl_seconds="300"),
    "a boolean for a number": lambda w: _good(w, ttl_seconds=True),
    "a float for a number": lambda w: _good(w, ttl_seconds=300.5),
    "an object for a list": lambda w: _good(w, scopes={"release": True}),
    "null for a required field": lambda w: _good(w, provider=None),
    "an over-long key reference": lambda w: _good(w, key="k" * 101),
    "a version past 32 bits": lambda w: _good(w, key_version=2**31),
    "a blank key reference": lambda w: _good(w, key=""),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_fields_get_400_and_issue_nothing(world, case):
    error = _error(_raw(world.api(), TOKENS, HOSTILE[case](world)), 400, "invalid")
    assert error["fields"]
    assert not ScopedToken.objects.exists()
    assert not AuditEvent.objects.filter(action="token.issued").exists()


MALFORMED = {
    "truncated JSON": b'{"tenant": ',
    "NaN": b'{"ttl_seconds": NaN}',
    "Infinity": b'{"ttl_seconds": Infinity}',
    "invalid UTF-8": b'{"tenant": "\xff\xfe"}',
    "deep nesting": b"[" * 20_000 + b"]" * 20_000,
    "a lone surrogate as a key": b'{"\\ud800": 1}',
    "a NUL in a key": b'{"a\\u0000": 1}',
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
@pytest.mark.parametrize("path", [TOKENS, EXCHANGE, INTROSPECT])
def test_a_body_that_is_not_strict_json_gets_400(world, case, path):
    api = world.api(world.token() if path == EXCHANGE else None)
    _error(_raw(api, path, MALFORMED[case]), 400, "malformed_body")
    assert not AuditEvent.objects.filter(action="credential.released").exists()


@pytest.mark.parametrize("body", ["[]", '"x"', "null", "42"])
def test_a_body_that_is_not_an_object_gets_400(world, body):
    error = _error(_raw(world.api(), TOKENS, body), 400, "invalid")
    assert error["fields"] == {"non_field_errors": ["Expected a JSON object."]}


def test_missing_and_unknown_fields_are_named(world):
    error = _error(_raw(world.api(), TOKENS, '{"audience": "x"}'), 400, "invalid")
    assert set(error["fields"]) == {"audience", "tenant", "provider", "scopes"}
    assert error["fields"]["audience"] == ["Unknown field."]


def test_a_body_past_djangos_own_limit_gets_413_not_500(world, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024  # below KEYWARD_MAX_BODY_BYTES
    response = _raw(world.api(), TOKENS, _good(world, key="k" * 2000))
    _error(response, 413, "body_too_large")
    assert not ScopedToken.objects.exists()


def test_another_media_type_gets_415_and_another_method_405(world):
    form = _raw(world.api(), TOKENS, "tenant=x", "application/x-www-form-urlencoded")
    _error(form, 415, "unsupported_media_type")
    wrong = world.api().get(TOKENS)
    _error(wrong, 405, "method_not_allowed")
    assert wrong["Allow"] == "POST"
    assert not ScopedToken.objects.exists()


def test_an_exchange_refuses_any_field_but_takes_an_empty_object(world):
    token = world.token()
    error = _error(_raw(client(token), EXCHANGE, '{"key_version": 1}'), 400, "invalid")
    assert error["fields"] == {"key_version": ["Unknown field."]}
    assert not AuditEvent.objects.filter(action="credential.released").exists()
    assert _raw(client(token), EXCHANGE, "{}").status_code == 200


def test_no_credentials_gets_401_with_a_challenge_and_one_event(world):
    before = AuditEvent.objects.count()
    response = client().post(TOKENS, _good(world), content_type="application/json")
    _error(response, 401, "unauthenticated")
    assert response["WWW-Authenticate"] == 'Bearer realm="keyward"'
    events = list(AuditEvent.objects.order_by("occurred_at")[before:])
    assert [(e.action, e.actor_type, e.details["path"]) for e in events] == [
        ("auth.failed", "anonymous", TOKENS)
    ]


def test_a_bad_secret_is_the_same_401_and_the_cause_stays_in_the_log(world):
    forged = world.secret[:-10] + ("A" if world.secret[-10] != "A" else "B") + world.secret[-9:]
    response = client(forged).post(TOKENS, _good(world), content_type="application/json")
    assert response.status_code == 401
    event = AuditEvent.objects.get(action="auth.failed")
    assert event.details["reason"] in ("malformed", "mismatch")
    assert forged not in repr(event.details)


def test_nothing_sets_a_cookie_or_asks_for_a_csrf_token(world):
    response = world.issue()
    assert response.status_code == 201
    assert not response.cookies
    assert "Set-Cookie" not in response


def test_the_openapi_document_describes_the_plain_views(client):
    schema = client.get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    issue = schema["paths"][TOKENS]["post"]
    body = issue["requestBody"]["content"]["application/json"]["schema"]
    assert set(body["required"]) == {"tenant", "provider", "scopes"}
    assert {"key", "ttl_seconds", "max_uses", "key_version"} <= set(body["properties"])
    assert body["additionalProperties"] is False
    assert (
        "token" in issue["responses"]["201"]["content"]["application/json"]["schema"]["properties"]
    )
    assert issue["security"] == [{"bearer": []}]
    for path in (INTROSPECT, EXCHANGE):
        assert {"200", "401", "403"} <= set(schema["paths"][path]["post"]["responses"])
    assert "api_key" in json.dumps(schema["paths"][EXCHANGE])


def test_responses_state_their_length(world):
    for response in (world.issue(), world.api().get(TOKENS), client().get("/healthz")):
        assert int(response["Content-Length"]) == len(response.content)
