"""The hot path as plain Django views: a principal trades its secret for a scoped token,
introspects a token, and a `release` token is exchanged for its provider key."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from api.inputs import MODEL_NAME, Body, Choice, Integer, ListOf, Text
from api.plain import Caller, Operation, bearer_post
from kms import queries
from kms.actions import tokens
from kms.keychoice import Source, source_of
from kms.models import ScopedToken
from kms.providers import ADAPTERS
from tenants.models import Scope, ServicePrincipal

STRING = {"type": "string"}
INTEGER = {"type": "integer"}
DATETIME = {"type": "string", "format": "date-time"}
SCOPES = {"type": "array", "items": {"type": "string", "enum": list(Scope.values)}}
CREDENTIAL_SOURCE = {
    "type": "string",
    "enum": [s.value for s in Source],
    "description": "Whose key: the tenant's own, or the platform's (by the tenant's key policy)",
}


def _object(required: list[str], **properties: Any) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required}


TOKEN_REQUEST = Body(
    required={
        "tenant": Text(63),
        "provider": Choice(sorted(ADAPTERS), unknown="Unknown provider."),
        "scopes": ListOf(Choice(Scope.values), min_items=1, max_items=2),
    },
    optional={
        "key": Text(100, help="A key id or label; by default the tenant's one active key."),
        "ttl_seconds": Integer(
            10, help="Capped by the grant and KEYWARD_TOKEN_MAX_TTL.", cap="TOKEN_MAX_TTL"
        ),
        "max_uses": Integer(1, 1_000_000),
        "models": ListOf(
            MODEL_NAME,
            0,
            50,
            help="The models proxied calls may name (the grant's, or fewer); by default the"
            " grant's list (empty: any).",
        ),
        "key_version": Integer(
            1,
            help="Pin a version (current, or previous within its grace); by default an "
            "exchange releases whatever version is current at that moment.",
        ),
    },
)
ISSUED = _object(
    ["token", "token_type", "expires_at", "expires_in", "scopes", "tenant", "provider"],
    token=STRING | {"description": "kwt_..., shown once"},
    token_type=STRING,
    expires_at=DATETIME,
    expires_in=INTEGER,
    scopes=SCOPES,
    tenant=STRING,
    provider=STRING,
    key_id=STRING | {"format": "uuid"},
    key_version=INTEGER | {"nullable": True},
    token_id=STRING | {"format": "uuid"},
    max_uses=INTEGER | {"nullable": True},
    models={"type": "array", "items": STRING},
    credential_source=CREDENTIAL_SOURCE,
)


@bearer_post(
    lambda caller: isinstance(caller.credential, ServicePrincipal),
    Operation(
        "tokens_issue",
        "A service principal (kwp_) trades its secret for a short-lived scoped token.",
        TOKEN_REQUEST,
        {201: ISSUED},
    ),
)
def issue_token(
    request: HttpRequest, caller: Caller, body: dict[str, Any]
) -> tuple[int, dict[str, Any]]:
    token, plaintext = tokens.do_issue_token(
        caller.credential, tokens.TokenRequest(**body), actor=caller.actor
    )
    return 201, {
        "token": plaintext,
        "token_type": "Bearer",
        "expires_at": token.expires_at,
        "expires_in": int((token.expires_at - token.created_at).total_seconds()),
        "scopes": token.scopes,
        "tenant": token.tenant.slug,
        "provider": token.provider_key.provider,
        "key_id": str(token.provider_key_id),
        "key_version": token.key_version,
        "token_id": str(token.id),
        "max_uses": token.max_uses,
        "models": token.allowed_models,
        "credential_source": source_of(token.tenant, token.provider_key).value,
    }


def _principal_or_security_admin(caller: Caller) -> bool:
    return isinstance(caller.credential, ServicePrincipal) or caller.access.is_security_admin


def _may_see(caller: Caller, token: ScopedToken | None) -> bool:
    """A principal sees its own tokens; a security admin those of the tenants they cover."""
    if token is None:
        return False
    if isinstance(caller.credential, ServicePrincipal):
        return token.principal_id == caller.credential.id
    return caller.access.is_security_admin and caller.access.covers(token.tenant)


INTROSPECTION = _object(
    ["active"],
    active={"type": "boolean"},
    token_type=STRING,
    scope=STRING,
    client_id=STRING,
    sub=STRING,
    iat=INTEGER,
    exp=INTEGER,
    token_id=STRING,
    tenant=STRING,
    provider=STRING,
    key_id=STRING,
    key_version=INTEGER | {"nullable": True},
    credential_source=CREDENTIAL_SOURCE,
    uses=INTEGER,
    max_uses=INTEGER | {"nullable": True},
)


@bearer_post(
    _principal_or_security_admin,
    Operation(
        "tokens_introspect",
        "RFC 7662: details of a token the caller may see; only {active: false} otherwise.",
        Body(required={"token": Text(200)}),
        {200: INTROSPECTION},
    ),
)
def introspect(
    request: HttpRequest, caller: Caller, body: dict[str, Any]
) -> tuple[int, dict[str, Any]]:
    token = queries.find_token(body["token"])
    return 200, queries.introspect(token, may_see=_may_see(caller, token))


RELEASED = _object(
    ["provider", "api_key", "base_url", "key_id", "key_version", "expires_at", "credential_source"],
    provider=STRING,
    api_key=STRING | {"description": "The provider key, released once per call"},
    base_url=STRING,
    key_id=STRING | {"format": "uuid"},
    key_version=INTEGER,
    expires_at=DATETIME,
    credential_source=CREDENTIAL_SOURCE,
)


@bearer_post(
    lambda caller: isinstance(caller.credential, ScopedToken),
    Operation(
        "exchange",
        "Trade a scoped token (kwt_) with the `release` scope for its key's current secret.",
        Body(),
        {200: RELEASED},
        tag="exchange",
    ),
)
def exchange(
    request: HttpRequest, caller: Caller, body: dict[str, Any]
) -> tuple[int, dict[str, Any]]:
    return 200, tokens.do_exchange(caller.credential, actor=caller.actor)
