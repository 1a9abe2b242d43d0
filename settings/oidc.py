"""Single sign-on to the console over OpenID Connect, read from KEYWARD_OIDC_* (README:
Configuration). Off while no KEYWARD_OIDC_* variable is set; a half-configured client, a
malformed URL or a role map naming an unknown role stops start-up."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured

from settings.env import Env, http_endpoint
from tenants.sso import ROLE_ORDER, SsoPolicy

ENDPOINTS = {
    "OIDC_OP_AUTHORIZATION_ENDPOINT": "KEYWARD_OIDC_AUTHORIZATION_ENDPOINT",
    "OIDC_OP_TOKEN_ENDPOINT": "KEYWARD_OIDC_TOKEN_ENDPOINT",
    "OIDC_OP_USER_ENDPOINT": "KEYWARD_OIDC_USERINFO_ENDPOINT",
    "OIDC_OP_JWKS_ENDPOINT": "KEYWARD_OIDC_JWKS_ENDPOINT",
}
REQUIRED = ("KEYWARD_OIDC_ISSUER", "KEYWARD_OIDC_CLIENT_ID", *ENDPOINTS.values())
# mozilla-django-oidc's settings when single sign-on is off: nothing it could call.
OFF: dict[str, Any] = {
    "OIDC_POLICY": None,
    "OIDC_RP_CLIENT_ID": "",
    "OIDC_RP_CLIENT_SECRET": "",
    **dict.fromkeys(ENDPOINTS, ""),
}


def url(name: str, value: str, *, production: bool = False) -> str:
    """An endpoint of the provider; in production only over https, since the client
    secret and the tokens travel to it."""
    checked = http_endpoint(name, value, with_path=True)
    if production and not checked.startswith("https://"):
        raise ImproperlyConfigured(f"{name}: expected an https:// URL in production")
    return checked


def role_map(raw: str) -> dict[str, str]:
    """`value=role,value=role`: which values of the role claim give which Keyward role."""
    roles = set(ROLE_ORDER)
    mapping: dict[str, str] = {}
    for item in (part.strip() for part in raw.split(",")):
        value, sep, role = (s.strip() for s in item.rpartition("="))
        if not sep or not value or role not in roles:
            raise ImproperlyConfigured(
                "KEYWARD_OIDC_ROLE_MAP: expected value=role pairs, comma-separated, with roles "
                f"among {', '.join(sorted(roles))}; got {item!r}"
            )
        if mapping.get(value, role) != role:
            raise ImproperlyConfigured(f"KEYWARD_OIDC_ROLE_MAP: {value!r} maps to two roles")
        mapping[value] = role
    return mapping


def _claim(env: Env, name: str, default: str) -> str:
    value = env.text(name, default)
    if not value or not value.isprintable() or any(c.isspace() for c in value):
        raise ImproperlyConfigured(f"{name}: a claim name, without spaces")
    return value


def _policy(env: Env) -> SsoPolicy:
    label = env.text("KEYWARD_OIDC_BUTTON_LABEL", "Sign in with single sign-on")
    if not label.isprintable() or len(label) > 80:
        raise ImproperlyConfigured("KEYWARD_OIDC_BUTTON_LABEL: at most 80 printable characters")
    return SsoPolicy(
        role_map=role_map(env.text("KEYWARD_OIDC_ROLE_MAP")),
        role_claim=_claim(env, "KEYWARD_OIDC_ROLE_CLAIM", "groups"),
        tenant_claim=_claim(env, "KEYWARD_OIDC_TENANT_CLAIM", "keyward_tenants"),
        all_tenants_value=env.text("KEYWARD_OIDC_ALL_TENANTS_VALUE", "*"),
        username_claim=_claim(env, "KEYWARD_OIDC_USERNAME_CLAIM", "sub"),
        label=label,
    )


def oidc_settings(env: Env, *, production: bool = False) -> dict[str, Any]:
    """The Django settings of single sign-on (mozilla-django-oidc's and OIDC_POLICY, the
    claims policy), or OFF when no KEYWARD_OIDC_* variable is set."""
    names = [n for n in env.source if n.startswith("KEYWARD_OIDC_")]
    if not names:
        return dict(OFF)
    missing = [n for n in REQUIRED if not env.text(n)]
    secret = env.secret("KEYWARD_OIDC_CLIENT_SECRET")
    if not secret:
        missing.append("KEYWARD_OIDC_CLIENT_SECRET")
    if missing:
        raise ImproperlyConfigured(
            f"{', '.join(missing)}: required for single sign-on (set by {', '.join(sorted(names))})"
        )
    if "KEYWARD_OIDC_ROLE_MAP" not in env.source:
        raise ImproperlyConfigured("KEYWARD_OIDC_ROLE_MAP: required for single sign-on")
    endpoints = {
        setting: url(name, env.text(name), production=production)
        for setting, name in ENDPOINTS.items()
    }
    return {
        "OIDC_POLICY": _policy(env),
        "OIDC_ISSUER": url(
            "KEYWARD_OIDC_ISSUER", env.text("KEYWARD_OIDC_ISSUER"), production=production
        ),
        "OIDC_RP_CLIENT_ID": env.text("KEYWARD_OIDC_CLIENT_ID"),
        "OIDC_RP_CLIENT_SECRET": secret,
        "OIDC_RP_SCOPES": env.text("KEYWARD_OIDC_SCOPES", "openid email profile"),
        **endpoints,
    }
