"""Log lines: one access line per request (method, route template, status, duration),
the request id and the authenticated actor on every line of a request, JSON with
KEYWARD_LOG_FORMAT=json; never a credential, body or header."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from celery.app import trace as celery_trace

from core.context import Origin, bound_origin, bound_origin_or_none, note_actor, noted_actor
from core.logging import ExceptionTextFilter, JsonFormatter, RequestContextLogFilter
from kms import tasks
from tests.proxy.test_proxy import COMPLETION, call
from tests.test_settings import run_configured

Lines = Callable[[], list[dict[str, Any]]]


@pytest.fixture
def json_lines() -> Iterator[Lines]:
    """What the service's JSON handler writes (its filters and formatter), parsed."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(RequestContextLogFilter())
    handler.addFilter(ExceptionTextFilter())
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    access = logging.getLogger("keyward.access")
    level = access.level
    access.setLevel(logging.INFO)
    try:
        yield lambda: [json.loads(line) for line in out.getvalue().splitlines()]
    finally:
        access.setLevel(level)
        root.removeHandler(handler)


def _access(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line for line in lines if line["logger"] == "keyward.access"]


def test_a_request_writes_one_access_line_naming_its_route_status_and_actor(world, json_lines):
    response = world.issue()
    assert response.status_code == 201, response.content
    [line] = _access(json_lines())
    assert line["method"] == "POST"
    assert line["route"] == "/api/v1/tokens"
    assert line["status"] == 201
    assert isinstance(line["duration_ms"], float) and line["duration_ms"] > 0
    assert line["request_id"] == response["X-Request-ID"]
    assert line["actor"] == f"principal:{world.principal.id}"
    assert line["level"] == "INFO" and line["time"].endswith("+00:00")


def test_the_route_is_the_pattern_never_the_path_with_its_identifiers(world, actors, json_lines):
    slug = actors.tenant_a.slug
    response = actors.as_("alice").get(f"/api/v1/tenants/{slug}/keys/{world.key_a.id}")
    assert response.status_code == 200, response.content
    [line] = _access(json_lines())
    assert str(world.key_a.id) not in line["route"] and slug not in line["route"]
    assert line["route"].startswith("/api/v1/tenants/<") and line["status"] == 200


def test_a_refused_credential_names_no_actor_and_appears_in_no_line(world, json_lines):
    wrong = world.secret[:-6] + "AAAAAA"
    response = world.api(wrong).post("/api/v1/tokens", {}, format="json")
    assert response.status_code == 401
    lines = json_lines()
    [line] = _access(lines)
    assert (line["status"], line["actor"]) == (401, None)
    written = json.dumps(lines)
    assert world.secret not in written and wrong not in written
    assert world.secret[4:20] not in written  # not even the secret part of the credential


def test_a_proxied_call_writes_its_access_line_with_the_token_as_actor(
    world, provider_stub, settings, json_lines
):
    settings.PROVIDER_BASE_URLS = {"openai": provider_stub.url + "/v1"}
    settings.PROXY_DB_POOL_SIZE = 0
    token = world.token(scopes=["proxy"])
    provider_stub.answer(200, COMPLETION)
    response = call("POST", "/api/v1/proxy/openai/chat/completions?user=x", token, json={})
    assert response.status_code == 200, response.text
    [line] = [line for line in _access(json_lines()) if line["route"].startswith("/api/v1/proxy")]
    assert line["route"] == "/api/v1/proxy/<provider>/<path>"
    assert (line["method"], line["status"]) == ("POST", 200)
    assert line["actor"].startswith("token:")
    assert line["request_id"] == response.headers["x-request-id"]
    assert world.secret_a not in json.dumps(json_lines()) and token not in json.dumps(json_lines())


def test_json_format_is_chosen_by_configuration(tmp_path):
    probe = (
        "import django, logging; django.setup(); "
        "logging.getLogger('keyward.test').warning('hello %s', 'there')"
    )
    json_run = run_configured(
        tmp_path, probe, KEYWARD_LOG_FORMAT="json", KEYWARD_QUIET_EMBEDDED="1"
    )
    line = json.loads(json_run.stderr.strip().splitlines()[-1])
    assert (line["message"], line["logger"], line["level"]) == (
        "hello there",
        "keyward.test",
        "WARNING",
    )
    assert (line["request_id"], line["actor"]) == (None, None)
    text_run = run_configured(
        tmp_path, probe, KEYWARD_LOG_FORMAT="text", KEYWARD_QUIET_EMBEDDED="1"
    )
    last = text_run.stderr.strip().splitlines()[-1]
    assert last.endswith("WARNING keyward.test [- -] hello there"), last


def test_celerys_own_task_lines_withhold_the_exceptions_message(json_lines):
    """Celery logs a failed task as `... raised unexpected: %(exc)s` and a retry as
    `... retry: %(exc)s` (the exception already made text): a provider's or a store's
    message could quote a key."""
    canary = "sk-proj-CANARY" + "c" * 20
    trace = logging.getLogger("celery.app.trace")
    failed: dict[str, object] = {"id": "1", "name": "keyward.kms.check_key", "args": "()"}
    failed.update(description="raised unexpected", exc=ValueError(canary), hostname="w")
    trace.error(celery_trace.LOG_FAILURE, failed)
    retried = {
        "id": "2",
        "name": "keyward.kms.check_key",
        "exc": f"Retry in 5s: ValueError('{canary}')",
    }
    trace.info(celery_trace.LOG_RETRY, retried)
    logging.getLogger("keyward.test").warning("gave up: %s", RuntimeError(canary))
    lines = json_lines()
    assert len(lines) == 3
    assert canary not in json.dumps(lines)
    assert "ValueError (message withheld)" in lines[0]["message"]
    assert "RuntimeError (message withheld)" in lines[2]["message"]
    assert lines[1]["message"].endswith("retry: Retry in 5s: ValueError (message withheld)")


@pytest.mark.django_db
def test_an_eager_task_gives_its_callers_request_id_and_actor_back():
    with bound_origin(Origin(request_id="req-outer-0001")):
        note_actor("user", "7")
        tasks.purge_expired_tokens.apply()
        assert bound_origin_or_none() == Origin(request_id="req-outer-0001")
        assert noted_actor() == "user:7"
    assert bound_origin_or_none() is None and noted_actor() is None
