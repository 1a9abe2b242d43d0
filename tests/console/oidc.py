"""A real OpenID provider for the console's single sign-on tests, in a process of its own.

`oidc_provider` (session-scoped, needs `live_server`) is an `OidcProvider`: django-oauth-
toolkit serving at `.url`, issuer `.issuer`, with an RS256 key generated for the session
and Keyward registered as a confidential client whose redirect URI is the live server's
/console/oidc/callback/. `.user(name, password, groups=[...], tenants=[...])` adds or
replaces a user and the claims the provider gives it (`groups`, and `keyward_tenants`; the
file is read at every request, so a change shows at the next sign-in).
`oidc_console` (per test) points Keyward's settings at the provider (`.keyward_settings()`:
groups keyward-admins and keyward-auditors map to the two roles, `*` is every tenant) and
returns it. `sign_in_via_oidc(base_url, username, password)` walks the whole flow over HTTP
and returns the cookie-carrying session and the last answer.
"""

from __future__ import annotations

import json
import os
import secrets
import select
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tenants.sso import SsoPolicy
from tests.bao import stop_process
from tests.celery_worker import wait_for

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "provider password 1"
ROLE_MAP = {"keyward-admins": "security_admin", "keyward-auditors": "auditor"}


def _private_pem() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@dataclass
class OidcProvider:
    url: str
    directory: Path
    client_id: str
    client_secret: str

    @property
    def issuer(self) -> str:
        return f"{self.url}/o"

    def user(
        self,
        username: str,
        password: str = PASSWORD,
        *,
        groups: list[str] | None = None,
        tenants: list[str] | None = None,
        **claims: Any,
    ) -> None:
        """Add or replace a user and the claims the provider gives it."""
        path = self.directory / "users.json"
        users = json.loads(path.read_text())
        given = {"email": f"{username}@example.test", **claims}
        if groups is not None:
            given["groups"] = groups
        if tenants is not None:
            given["keyward_tenants"] = tenants
        users[username] = {"password": password, "claims": given}
        scratch = path.with_suffix(".tmp")
        scratch.write_text(json.dumps(users))
        scratch.replace(path)

    def keyward_settings(self) -> dict[str, Any]:
        return {
            "OIDC_POLICY": SsoPolicy(role_map=ROLE_MAP, all_tenants_value="*"),
            "OIDC_ISSUER": self.issuer,
            "OIDC_RP_CLIENT_ID": self.client_id,
            "OIDC_RP_CLIENT_SECRET": self.client_secret,
            "OIDC_RP_SCOPES": "openid email profile",
            "OIDC_OP_AUTHORIZATION_ENDPOINT": f"{self.issuer}/authorize/",
            "OIDC_OP_TOKEN_ENDPOINT": f"{self.issuer}/token/",
            "OIDC_OP_USER_ENDPOINT": f"{self.issuer}/userinfo/",
            "OIDC_OP_JWKS_ENDPOINT": f"{self.issuer}/.well-known/jwks.json",
        }


def _port(process: subprocess.Popen[str], timeout: float = 60) -> int:
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    line = process.stdout.readline() if ready else ""
    if not line.strip().isdigit():
        process.kill()
        raise RuntimeError("the test OpenID provider did not start")
    return int(line)


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.ConnectionError:
        return False


@pytest.fixture(scope="session")
def oidc_provider(
    live_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OidcProvider]:
    directory = tmp_path_factory.mktemp("oidc-provider")
    (directory / "signing-key.pem").write_bytes(_private_pem())
    (directory / "other-key.pem").write_bytes(_private_pem())
    (directory / "users.json").write_text("{}")
    client_id, client_secret = secrets.token_hex(8), "cs-" + secrets.token_urlsafe(24)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEYWARD_", "DJANGO_"))}
    env.update({"OIDC_PROVIDER_DIR": str(directory), "PYTHONUNBUFFERED": "1"})
    env["DJANGO_SETTINGS_MODULE"] = "tests.oidc_provider.settings"
    redirect = f"{live_server.url}/console/oidc/callback/"
    with (directory / "provider.log").open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.oidc_provider", client_id, client_secret, redirect],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
    try:
        url = f"http://127.0.0.1:{_port(process)}"
        jwks = f"{url}/o/.well-known/jwks.json"
        wait_for(lambda: _answers(jwks), what="the test OpenID provider")
        yield OidcProvider(url, directory, client_id, client_secret)
    finally:
        stop_process(process)


@pytest.fixture
def oidc_console(oidc_provider: OidcProvider, settings: Any) -> OidcProvider:
    for name, value in oidc_provider.keyward_settings().items():
        setattr(settings, name, value)
    return oidc_provider


def sign_in_via_oidc(
    base_url: str,
    username: str,
    password: str = PASSWORD,
    *,
    follow: bool = True,
    next: str = "",
) -> tuple[requests.Session, requests.Response]:
    """Start at the console, sign in at the provider, and follow the redirects back (or,
    without `follow`, stop at the provider's first answer to the password)."""
    session = requests.Session()
    start = f"{base_url}/console/oidc/authenticate/"
    form = session.get(start, params={"next": next} if next else None, timeout=30)
    assert form.status_code == 200 and "/login/" in form.url, form.url
    provider = "{0.scheme}://{0.netloc}".format(urlsplit(form.url))
    answer = session.post(
        f"{provider}/login/",
        data={
            "csrfmiddlewaretoken": session.cookies.get("provider_csrf"),
            "username": username,
            "password": password,
            "next": parse_qs(urlsplit(form.url).query)["next"][0],
        },
        timeout=30,
        allow_redirects=follow,
    )
    return session, answer
