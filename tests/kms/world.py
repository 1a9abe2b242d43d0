"""A small world for token tests: two tenants with an OpenAI key each, a principal granted
tenant A / openai / release+proxy, and a second principal with no grants."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from audit.actors import Actor
from kms.actions import keys, retirement, tokens
from kms.models import ProviderKey, ScopedToken
from tenants.actions import do_create_grant, do_delete_grant
from tenants.models import Grant, ServicePrincipal
from tests.factories import Actors, client, make_principal
from tests.kms.helpers import openai_key

SYSTEM = Actor.system("tests")


@dataclass
class World:
    actors: Actors
    principal: ServicePrincipal
    secret: str
    stranger: ServicePrincipal
    stranger_secret: str
    key_a: ProviderKey
    key_b: ProviderKey
    secret_a: str
    grant: Grant

    def api(self, secret: str | None = None) -> Any:
        return client(secret or self.secret)

    def issue(self, secret: str | None = None, **ask: Any) -> Any:
        body = {
            "tenant": self.actors.tenant_a.slug,
            "provider": "openai",
            "scopes": ["release"],
            **ask,
        }
        return self.api(secret).post("/api/v1/tokens", body, format="json")

    def revoke(self, what: str) -> None:
        """Revoke the one token there is, key A, or the grant, through our own actions."""
        if what == "token":
            tokens.do_revoke_token(ScopedToken.objects.get(), actor=SYSTEM)
        elif what == "key":
            retirement.do_revoke_key(self.key_a, actor=SYSTEM)
        else:
            do_delete_grant(self.grant, actor=SYSTEM)

    def token(self, **ask: Any) -> str:
        response = self.issue(**ask)
        assert response.status_code == 201, response.content
        return str(response.json()["token"])


def onboard_key(
    tenant: Any, secret: str, label: str = "prod", provider: str = "openai"
) -> ProviderKey:
    return keys.do_onboard_key(
        tenant, keys.KeyInput(provider, label, secret), validate=False, actor=SYSTEM
    )


def make_world(actors: Actors) -> World:
    principal, secret = make_principal()
    stranger, stranger_secret = make_principal()
    secret_a = openai_key()
    key_a = onboard_key(actors.tenant_a, secret_a)
    key_b = onboard_key(actors.tenant_b, openai_key())
    grant = do_create_grant(
        principal, actors.tenant_a, "openai", ["release", "proxy"], 900, actor=SYSTEM
    )
    return World(
        actors, principal, secret, stranger, stranger_secret, key_a, key_b, secret_a, grant
    )
