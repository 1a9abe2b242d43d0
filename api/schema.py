"""OpenAPI: Keyward's bearer credentials, and the plain views DRF's generator does not see."""

from collections.abc import Iterable, Iterator
from typing import Any

from django.urls import URLPattern, URLResolver, get_resolver
from drf_spectacular.extensions import (
    OpenApiAuthenticationExtension,
    OpenApiSerializerExtension,
)
from drf_spectacular.utils import inline_serializer
from drf_spectacular.views import SpectacularSwaggerSplitView
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response


class BearerScheme(OpenApiAuthenticationExtension):  # type: ignore[no-untyped-call]
    target_class = "api.authentication.BearerAuthentication"
    name = "bearer"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "kwa_ admin token, kwp_ principal secret or kwt_ scoped token",
        }


class StrictBodies(OpenApiSerializerExtension):  # type: ignore[no-untyped-call]
    """Request bodies of `StrictSerializer`s refuse unknown fields: the schema says so."""

    target_class = "api.base.StrictSerializer"
    match_subclasses = True

    def map_serializer(self, auto_schema: Any, direction: Any) -> Any:
        schema = auto_schema._map_serializer(self.target, direction, bypass_extensions=True)
        if direction == "request":
            schema["additionalProperties"] = False
        return schema


ERROR = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "request_id": {"type": "string"},
                "fields": {"type": "object"},
            },
            "required": ["code", "message", "request_id"],
        }
    },
}
REFUSALS = {
    "400": "Invalid input",
    "401": "No or bad credentials",
    "403": "Not allowed",
    "404": "Not found",
    "409": "State conflict",
    "413": "Body too large",
    "415": "Unsupported media type",
    "429": "Rate limited",
    "503": "A dependency is down",
}


def _plain_views(patterns: Iterable[URLPattern | URLResolver], prefix: str) -> Iterator[Any]:
    """(path, view) of every plain view under `patterns` that carries an OpenAPI
    description."""
    for pattern in patterns:
        route = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            yield from _plain_views(pattern.url_patterns, route)
        elif hasattr(pattern.callback, "openapi"):
            yield route, pattern.callback.openapi


def _operation(operation: Any) -> dict[str, Any]:
    responses: dict[str, Any] = {
        str(status): {
            "description": "Success",
            "content": {"application/json": {"schema": dict(schema)}},
        }
        for status, schema in operation.responses.items()
    }
    for status, description in REFUSALS.items():
        responses[status] = _refusal(description)
    return {
        "operationId": operation.operation_id,
        "summary": operation.summary,
        "tags": [operation.tag],
        "security": [{"bearer": []}],
        "requestBody": {
            "required": bool(operation.body.required),
            "content": {"application/json": {"schema": operation.body.schema()}},
        },
        "responses": responses,
    }


def listing(serializer: type[serializers.Serializer[Any]], *, paginated: bool) -> Any:
    """The response shape of a list endpoint: `{"results": [...]}`, with the `next` and
    `previous` cursor URLs when it is paginated."""
    fields: dict[str, serializers.Field[Any, Any, Any, Any]] = {"results": serializer(many=True)}
    if paginated:
        fields["next"] = serializers.CharField(allow_null=True)
        fields["previous"] = serializers.CharField(allow_null=True)
    name = serializer.__name__.removesuffix("Serializer") + ("Page" if paginated else "List")
    return inline_serializer(name=name, fields=fields)


def add_error_responses(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """drf-spectacular post-processing hook: every operation documents the error shape for
    the refusals any endpoint can give (its own successes are described where it is)."""
    for operations in result.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            for status, description in REFUSALS.items():
                responses.setdefault(status, _refusal(description))
    return result


def _refusal(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ERROR}}}


def add_plain_views(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """drf-spectacular post-processing hook: describe the plain views of the hot path,
    which DRF's generator does not see, from the declarations they validate with."""
    for route, operation in _plain_views(get_resolver().url_patterns, "/"):
        result.setdefault("paths", {})[route] = {"post": _operation(operation)}
    result["paths"] = dict(sorted(result["paths"].items()))
    return result


# What each creation answers, and the operations that can use it next (OpenAPI links):
# (operation id, status) -> {link name: (target operation id, parameters, request body)}.
_BODY = "$response.body#/"
_KEY = {"slug": "$request.path.slug", "key_id": _BODY + "id"}
LINKS: dict[tuple[str, str], dict[str, tuple[str, dict[str, str], dict[str, str] | None]]] = {
    ("tenants_create", "201"): {
        "GetTenant": ("tenants_retrieve", {"slug": _BODY + "slug"}, None),
        "UpdateTenant": ("tenants_partial_update", {"slug": _BODY + "slug"}, None),
        "ListKeys": ("tenants_keys_list", {"slug": _BODY + "slug"}, None),
        "CreateKey": ("tenants_keys_create", {"slug": _BODY + "slug"}, None),
    },
    ("tenants_keys_create", "201"): {
        "GetKey": ("tenants_keys_retrieve", _KEY, None),
        "RotateKey": ("tenants_keys_rotate_create", _KEY, None),
        "ValidateKey": ("tenants_keys_validate_create", _KEY, None),
        "ListValidations": ("tenants_keys_validations_list", _KEY, None),
        "ListKeyTokens": ("tenants_keys_tokens_list", _KEY, None),
        "RevokeKey": ("tenants_keys_destroy", _KEY, None),
    },
    ("principals_create", "201"): {
        "GetPrincipal": ("principals_retrieve", {"principal_id": _BODY + "id"}, None),
        "RotateSecret": ("principals_rotate_secret_create", {"principal_id": _BODY + "id"}, None),
        "DeletePrincipal": ("principals_destroy", {"principal_id": _BODY + "id"}, None),
    },
    ("grants_create", "201"): {
        "GetGrant": ("grants_retrieve", {"grant_id": _BODY + "id"}, None),
        "DeleteGrant": ("grants_destroy", {"grant_id": _BODY + "id"}, None),
    },
    ("tokens_issue", "201"): {
        "Introspect": ("tokens_introspect", {}, {"token": _BODY + "token"}),
        "Revoke": ("tokens_revoke", {}, {"token": _BODY + "token"}),
        "AdminRevoke": ("tokens_admin_revoke", {"token_id": _BODY + "token_id"}, None),
        "GetTokenKey": (
            "tenants_keys_retrieve",
            {"slug": _BODY + "tenant", "key_id": _BODY + "key_id"},
            None,
        ),
    },
}


def add_links(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """drf-spectacular post-processing hook: OpenAPI links from each creation to the
    operations that take what it returns, so a client (or a stateful test) can follow
    them."""
    operations = {
        operation["operationId"]: operation
        for path_item in result.get("paths", {}).values()
        for operation in path_item.values()
    }
    for (operation_id, status), links in LINKS.items():
        response = operations[operation_id]["responses"][status]
        response["links"] = {
            name: {
                "operationId": target,
                **({"parameters": parameters} if parameters else {}),
                **({"requestBody": body} if body else {}),
            }
            for name, (target, parameters, body) in links.items()
        }
    return result


# Swagger UI's own page: scripts only from this origin (its start-up script is a separate
# response, see SpectacularSwaggerSplitView); its template and its React components set
# inline styles, which is all 'unsafe-inline' allows here. The schema is fetched from this
# origin, and no form posts anywhere.
DOCS_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "frame-ancestors 'none'",
        "form-action 'none'",
        "base-uri 'none'",
        "object-src 'none'",
    ]
)


class DocsView(SpectacularSwaggerSplitView):
    """The browsable API document under a Content-Security-Policy without inline scripts."""

    def finalize_response(
        self, request: Request, response: Response, *args: Any, **kwargs: Any
    ) -> Response:
        final = super().finalize_response(request, response, *args, **kwargs)
        final.headers.setdefault("Content-Security-Policy", DOCS_POLICY)
        return final
