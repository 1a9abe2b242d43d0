"""The error shape, request ids, body limits and strict input (api.md, rule 3)."""

from __future__ import annotations

import re

import pytest
from django.test import override_settings

from audit.models import AuditEvent
from tenants.models import Tenant
from tests.factories import client as bearer
from tests.factories import make_principal


def _state():
    return Tenant.objects.count(), AuditEvent.objects.exclude(action="access.denied").count()


def _post(actors, body, **extra):
    return actors.as_("alice").generic(
        "POST", "/api/v1/tenants", body, content_type="application/json", **extra
    )


def _assert_error(response, status, code=None):
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert set(error) >= {"code", "message", "request_id"}
    assert error["request_id"] == response["X-Request-ID"]
    if code:
        assert error["code"] == code
    assert "Traceback" not in response.content.decode()
    return error


def test_malformed_json_is_refused_and_changes_nothing(actors):
    before = _state()
    _assert_error(_post(actors, '{"slug": "acme", '), 400, "malformed_body")
    assert _state() == before


@pytest.mark.parametrize("body", ["[]", '"acme"', "null", "42"])
def test_a_body_that_is_not_an_object_is_refused(actors, body):
    before = _state()
    _assert_error(_post(actors, body), 400, "invalid")
    assert _state() == before


def test_unknown_fields_are_refused_by_name(actors):
    before = _state()
    error = _assert_error(_post(actors, '{"slug": "acme", "name": "A", "owner": "x"}'), 400)
    assert "owner" in error["fields"]
    assert _state() == before


def test_an_oversize_body_gets_413(actors):
    before = _state()
    with override_settings(MAX_BODY_BYTES=2048):
        big = '{"slug": "acme", "name": "' + "x" * 4096 + '"}'
        _assert_error(_post(actors, big), 413, "body_too_large")
    assert _state() == before


@pytest.mark.parametrize(
    "slug",
    [
        "Acme",
        "ACME",
        "acme/evil",
        "ac.me",
        "../etc",
        "acme\n",
        " acme",
        "-acme",
        "acme-",
        "ас\u043cе",
        "acme\u200b",
        "a" * 64,
        "",
        "ac me",
        "acme_co",
        "１２３",
    ],
)
def test_bad_slugs_are_refused_and_change_nothing(actors, slug):
    import json

    before = _state()
    error = _assert_error(_post(actors, json.dumps({"slug": slug, "name": "X"})), 400, "invalid")
    assert "slug" in error["fields"]
    assert _state() == before


def test_a_duplicate_slug_gets_409_and_changes_nothing(actors):
    slug = actors.tenant_a.slug
    before = _state()
    _assert_error(_post(actors, f'{{"slug": "{slug}", "name": "Again"}}'), 409, "tenant_exists")
    assert _state() == before
    actors.tenant_a.refresh_from_db()
    assert actors.tenant_a.name == "Tenant A"


def test_a_bad_status_value_is_refused(actors):
    url = f"/api/v1/tenants/{actors.tenant_a.slug}"
    response = actors.as_("alice").patch(url, {"status": "deleted"}, format="json")
    _assert_error(response, 400, "invalid")
    actors.tenant_a.refresh_from_db()
    assert actors.tenant_a.status == "active"


def test_a_duplicate_principal_name_gets_409(actors):
    api = actors.as_("alice")
    assert api.post("/api/v1/principals", {"name": "dup-svc"}, format="json").status_code == 201
    response = api.post("/api/v1/principals", {"name": "dup-svc"}, format="json")
    _assert_error(response, 409, "principal_exists")
    assert "kwp_" not in response.content.decode()


@pytest.mark.parametrize("name", ["Chat", "chat backend", "chat/backend", "", "-x", "ｃhat"])
def test_bad_principal_names_are_refused(actors, name):
    response = actors.as_("alice").post("/api/v1/principals", {"name": name}, format="json")
    _assert_error(response, 400, "invalid")


def test_a_bad_principal_id_is_404(actors):
    response = actors.as_("alice").get("/api/v1/principals/not-a-uuid")
    _assert_error(response, 404)


def test_every_response_has_a_request_id_and_a_good_one_is_kept(actors, client):
    response = client.get("/healthz", HTTP_X_REQUEST_ID="abcdef12-trace")
    assert response["X-Request-ID"] == "abcdef12-trace"
    response = client.get("/healthz", HTTP_X_REQUEST_ID="bad id\r\nInjected: 1")
    assert response["X-Request-ID"] != "bad id\r\nInjected: 1"
    assert len(response["X-Request-ID"]) == 32
    _assert_error(client.get("/no/such/page"), 404, "not_found")
    _assert_error(actors.as_("alice").get("/api/v1/nothing-here"), 404, "not_found")


def test_wrong_method_and_media_type_get_the_error_shape(actors):
    api = actors.as_("alice")
    _assert_error(api.put("/api/v1/tenants", {}, format="json"), 405, "method_not_allowed")
    response = api.generic(
        "POST", "/api/v1/tenants", "slug=x", content_type="application/x-www-form-urlencoded"
    )
    _assert_error(response, 415, "unsupported_media_type")


def test_the_api_serves_json_only_without_a_browsable_form(actors):
    response = actors.as_("alice").get("/api/v1/tenants", HTTP_ACCEPT="text/html")
    assert response.status_code in (200, 406)
    assert "<form" not in response.content.decode()


def test_the_openapi_document_and_docs_are_served(client):
    schema = client.get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    for path in (
        "/api/v1/tenants",
        "/api/v1/tenants/{slug}",
        "/api/v1/principals",
        "/api/v1/principals/{principal_id}/rotate-secret",
    ):
        assert path in paths
    assert "bearer" in schema.json()["components"]["securitySchemes"]
    assert client.get("/api/v1/docs/").status_code == 200


def test_the_api_document_page_runs_no_inline_script(actors):
    client = bearer()
    page = client.get("/api/v1/docs/")
    policy = page["Content-Security-Policy"]
    assert "script-src 'self';" in policy and "frame-ancestors 'none'" in policy
    html = page.content.decode()
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", html, re.S)
    assert scripts and all("src=" in attrs and not body.strip() for attrs, body in scripts)
    start = client.get("/api/v1/docs/?script=")
    assert start.status_code == 200 and start["Content-Type"].startswith("application/javascript")
    assert "SwaggerUIBundle" in start.content.decode()


@pytest.mark.postgresql  # the failure is staged with a PostgreSQL trigger
def test_an_unhandled_error_gets_a_generic_500_and_no_detail(committed_actors, caplog):
    from tests import pg

    with pg.connect() as conn:
        conn.execute(
            "CREATE FUNCTION tenant_test_failure() RETURNS trigger LANGUAGE plpgsql AS $$ "
            "BEGIN RAISE EXCEPTION 'canary-detail-sk-XYZ'; END $$; "
            "CREATE TRIGGER tenant_test_failure BEFORE INSERT ON tenants_tenant "
            "FOR EACH ROW EXECUTE FUNCTION tenant_test_failure()"
        )
    try:
        api = committed_actors.as_("alice")
        api.raise_request_exception = False
        response = api.post("/api/v1/tenants", {"slug": "boom", "name": "X"}, format="json")
    finally:
        with pg.connect() as conn:
            conn.execute("DROP TRIGGER tenant_test_failure ON tenants_tenant")
            conn.execute("DROP FUNCTION tenant_test_failure()")
    error = _assert_error(response, 500, "internal_error")
    assert "canary" not in response.content.decode()
    assert error["message"] == "Internal error."
    assert "canary-detail" not in caplog.text
    assert "unhandled django.db.utils" in caplog.text
    assert not Tenant.objects.filter(slug="boom").exists()


@pytest.mark.postgresql  # the session is ended with pg_terminate_backend
def test_a_lost_database_connection_fails_one_request_cleanly_and_the_next_succeeds(
    committed_actors,
):
    from django.db import close_old_connections, connection

    from audit.models import AuditEvent
    from audit.sequencer import integrate_all
    from audit.verify import integration, verify_all
    from tests import pg

    api = committed_actors.as_("alice")
    assert api.get("/api/v1/tenants").status_code == 200
    connection.ensure_connection()
    pid = connection.connection.info.backend_pid
    with pg.connect(autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [pid])
    body = {"slug": "after-loss", "name": "After the loss"}
    broken = api.post("/api/v1/tenants", body, format="json")
    error = _assert_error(broken, 503, "database_unavailable")
    assert broken["Retry-After"] and "Traceback" not in str(error)
    # What a WSGI server does at the end of every request (Django's test client skips it
    # to keep a test's transaction): a connection that raised errors is closed.
    close_old_connections()
    created = api.post("/api/v1/tenants", body, format="json")
    assert created.status_code == 201, created.content
    integrate_all()
    assert all(result.ok for result in verify_all()) and integration().ok
    assert AuditEvent.objects.filter(action="tenant.created", tenant="after-loss").count() == 1


def test_a_log_line_about_a_finished_request_carries_its_id(rf, caplog):
    import logging

    from core.context import Origin
    from core.logging import RequestContextLogFilter

    request = rf.get("/api/v1/tenants")
    request.keyward_origin = Origin(request_id="abcdef12-trace", source_ip=None)
    about = logging.LogRecord("django.request", logging.ERROR, __file__, 1, "boom", None, None)
    about.request = request
    alone = logging.LogRecord("keyward", logging.ERROR, __file__, 1, "boom", None, None)
    for record in (about, alone):
        RequestContextLogFilter().filter(record)
    assert (about.__dict__["request_id"], alone.__dict__["request_id"]) == ("abcdef12-trace", "-")


def test_the_openapi_document_tells_the_truth_about_lists_and_errors(client):
    schema = client.get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()

    def response_schema(path, status="200"):
        content = schema["paths"][path]["get"]["responses"][status]["content"]
        ref = content["application/json"]["schema"]
        while "$ref" in ref:
            ref = schema["components"]["schemas"][ref["$ref"].rsplit("/", 1)[-1]]
        return ref

    page = response_schema("/api/v1/tenants")
    assert page["type"] == "object" and {"results", "next", "previous"} <= set(page["properties"])
    plain = response_schema("/api/v1/grants")
    assert plain["type"] == "object" and set(plain["properties"]) == {"results"}
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            assert {"400", "401", "403", "404"} <= set(operation["responses"]), (path, method)
    assert "error" in response_schema("/api/v1/tenants", "401")["properties"]
    bodies = {k: v for k, v in schema["components"]["schemas"].items() if k.endswith("Request")}
    assert bodies and all(v["additionalProperties"] is False for v in bodies.values())


def _document(client):
    return client.get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()


def test_the_openapi_document_states_the_shape_of_identifiers_and_bounds(client, settings):
    schema = _document(client)
    paths, components = schema["paths"], schema["components"]["schemas"]
    ids = [
        parameter
        for operations in paths.values()
        for operation in operations.values()
        for parameter in operation.get("parameters", [])
        if parameter["in"] == "path"
    ]
    assert ids
    for parameter in ids:
        expected = {"slug": "pattern"}.get(parameter["name"], "format")
        assert expected in parameter["schema"], parameter
        if expected == "format":
            assert parameter["schema"]["format"] == "uuid"
    assert components["GrantCreateRequest"]["properties"]["max_ttl_seconds"]["maximum"] == (
        settings.TOKEN_MAX_TTL
    )
    for component, name in (
        ("TenantCreateRequest", "slug"),
        ("PrincipalCreateRequest", "name"),
        ("KeyCreateRequest", "label"),
    ):
        pattern = components[component]["properties"][name]["pattern"]
        assert pattern.startswith("^") and pattern.endswith("$"), pattern
    operation_ids = [op["operationId"] for ops in paths.values() for op in ops.values()]
    assert len(operation_ids) == len(set(operation_ids)), "operation ids are unique"


def test_the_openapi_document_names_the_audit_filters_and_formats(client):
    schema = _document(client)
    events = schema["paths"]["/api/v1/audit/events"]["get"]
    named = {p["name"]: p["schema"] for p in events["parameters"]}
    assert set(named) == {
        "tenant",
        "action",
        "actor",
        "outcome",
        "since",
        "until",
        "cursor",
        "limit",
    }
    assert named["since"]["format"] == "date-time"
    assert named["limit"] == {"type": "integer", "minimum": 1, "maximum": 1000}
    export = schema["paths"]["/api/v1/audit/export"]["get"]
    assert {p["name"] for p in export["parameters"]} == {"format", "tenant", "since", "until"}
    assert set(export["responses"]["200"]["content"]) == {"application/x-ndjson", "text/csv"}


@pytest.mark.parametrize(
    "path", ["/api/v1/tenants/Not_A_Slug", "/api/v1/principals/x", "/api/v1/grants/x"]
)
def test_an_identifier_of_the_wrong_shape_is_404_in_the_error_shape(actors, client, path):
    _assert_error(actors.as_("alice").get(path), 404, "not_found")
    _assert_error(client.get(path), 404, "not_found")


@pytest.mark.parametrize("who", ["alice", "charlie", "principal", "anonymous"])
def test_a_method_no_handler_serves_is_405_whoever_asks(actors, client, who):
    """Whoever asks, and before anyone is looked at, as the plain views answer."""
    callers = {"anonymous": lambda: client, "principal": lambda: bearer(make_principal()[1])}
    api = callers.get(who, lambda: actors.as_(who))()
    for path, allowed in (
        ("/api/v1/tokens/revoke", "POST"),
        ("/api/v1/grants", "GET, POST"),
        ("/api/v1/audit/public-key", "GET"),
        ("/api/v1/tokens", "POST"),
    ):
        response = api.put(path, {}, content_type="application/json")
        _assert_error(response, 405, "method_not_allowed")
        assert allowed.split(", ")[0] in response["Allow"], (path, response["Allow"])


def test_the_openapi_document_links_each_creation_to_what_uses_it(client):
    schema = _document(client)
    operations = {
        op["operationId"]: (path, op)
        for path, item in schema["paths"].items()
        for op in item.values()
    }
    linked = 0
    for path, operation in operations.values():
        for status, response in operation["responses"].items():
            for name, link in response.get("links", {}).items():
                linked += 1
                _, target = operations[link["operationId"]]
                wanted = {p["name"] for p in target.get("parameters", []) if p["in"] == "path"}
                assert set(link.get("parameters", {})) == wanted, (path, name)
                for expression in [*link.get("parameters", {}).values()]:
                    assert expression.startswith(("$response.body#/", "$request.path.")), name
                    field = expression.rsplit("/", 1)[-1]
                    if expression.startswith("$response.body#/"):
                        ref = operation["responses"][status]["content"]["application/json"]
                        body = ref["schema"]
                        while "$ref" in body:
                            body = schema["components"]["schemas"][body["$ref"].rsplit("/", 1)[-1]]
                        assert field in body["properties"], (path, name, field)
    assert linked >= 15
