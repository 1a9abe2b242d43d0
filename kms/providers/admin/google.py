"""Google Cloud API keys (what Gemini calls an API key) through the API Keys API v2, with
a service account key file as the admin credential.

Endpoints, as Google documents them:
- `POST {token_uri}` (OAuth 2.0 for Server to Server Applications): a JWT signed RS256
  with the service account's private key, exchanged for an access token under
  `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`; once per adapter call.
- `POST /v2/projects/{project}/locations/global/keys` (projects.locations.keys.create): a
  key restricted to the Generative Language API, answered with a long-running Operation.
- `GET /v2/operations/{id}` (operations.get): polled until `done`, a bounded number of times.
- `GET /v2/{key name}/keyString` (projects.locations.keys.getKeyString): the new secret.
- `GET /v2/projects/{project}/locations/global/keys` (projects.locations.keys.list, paged by
  `pageToken`): keys whose `displayName` is the rotation's name, deleted ones left out.
- `DELETE /v2/{key name}` (projects.locations.keys.delete): an Operation; 404 is gone.

The upstream id is the key's resource name, `projects/{n}/locations/global/keys/{uid}`.
Refusals are redacted of the access token, the private key and its id; the service
account's email stays in them, so that a refused permission can be read."""

from __future__ import annotations

import base64
import json
import re
import time
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from kms.providers.admin.base import AdminAdapter, AdminCredential, AdminError, Answer, Minted, text
from kms.providers.base import redact

SCOPE = "https://www.googleapis.com/auth/cloud-platform"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
GEMINI_API = "generativelanguage.googleapis.com"
ASSERTION_SECONDS = 3600  # the longest lifetime Google accepts for the assertion

_PROJECT = re.compile(r"[a-z0-9][a-z0-9.:-]{0,62}")
_KEY_NAME = re.compile(r"projects/[a-z0-9][a-z0-9.:-]*/locations/global/keys/[A-Za-z0-9][\w-]*")
_OPERATION = re.compile(r"operations/[A-Za-z0-9][\w.:-]*")
# google.rpc.Code values worth trying again: DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED,
# ABORTED, INTERNAL, UNAVAILABLE.
_TRANSIENT_CODES = frozenset({4, 8, 10, 13, 14})


@dataclass(frozen=True)
class ServiceAccount:
    """The parts of a service account key file that obtain an access token."""

    client_email: str
    private_key: str
    private_key_id: str
    token_uri: str


@dataclass(frozen=True)
class Session:
    """An access token for one adapter call, and every secret to keep out of reasons."""

    api: AdminCredential
    hidden: tuple[str, ...]


@dataclass(frozen=True)
class TokenRequest(AdminCredential):
    """The token exchange: its secret is the signed assertion, sent in the form body only."""


class GoogleAdmin(AdminAdapter):
    """Google Cloud API keys, minted restricted to the Generative Language API."""

    provider = "google"
    default_base_url = "https://apikeys.googleapis.com/v2"
    required_settings = {"project_id": "the Google Cloud project (id or number) owning the keys"}
    poll_interval = 1.0
    poll_attempts = 30
    max_pages = 100

    def auth_headers(self, admin: AdminCredential) -> dict[str, str]:
        # The token endpoint authenticates the assertion in the form, nothing else.
        return {} if isinstance(admin, TokenRequest) else super().auth_headers(admin)

    def check_settings(self, values: dict[str, Any]) -> list[str]:
        problems = super().check_settings(values)
        project = values.get("project_id")
        if isinstance(project, str) and project and not _PROJECT.fullmatch(project):
            problems.append("project_id: not a Google Cloud project id or number")
        return problems

    # -- what a rotation calls -------------------------------------------------------
    def mint(self, admin: AdminCredential, *, name: str, current_upstream_id: str = "") -> Minted:
        """Create a key named `name` for the Gemini API and read its key string."""
        session = self.session(admin)
        body = {"displayName": name, "restrictions": {"apiTargets": [{"service": GEMINI_API}]}}
        created = self._api(session, "POST", f"/{_parent(admin)}/keys", body=body)
        key = self._finished(session, created.body)
        key_name = _checked(_KEY_NAME, key.get("name"), "the created key's name")
        # Some answers already carry the key string: it is kept out of any refusal too.
        early = (text(key.get("keyString")),)
        answer = self._api(session, "GET", f"/{key_name}/keyString", also=early)
        secret = text(answer.body.get("keyString")) if isinstance(answer.body, dict) else ""
        if not secret:
            raise AdminError("the provider's answer carried no key string", transient=True)
        return Minted(secret=secret, upstream_id=key_name)

    def minted(self, admin: AdminCredential, *, name: str) -> list[str]:
        """The resource names of the project's keys whose display name is `name`."""
        session = self.session(admin)
        return [
            _checked(_KEY_NAME, key.get("name"), "a listed key's name")
            for key in self._keys(session, _parent(admin))
            if key.get("displayName") == name
        ]

    def retire(self, admin: AdminCredential, *, upstream_id: str, hint: str = "") -> None:
        """Delete the key `upstream_id` (a resource name); one already gone is fine."""
        key_name = _checked(_KEY_NAME, upstream_id, "the key's upstream id")
        session = self.session(admin)
        answer = self._api(session, "DELETE", f"/{key_name}", ok=(200, 404))
        if answer.status != 404:
            self._finished(session, answer.body)

    # -- the access token -----------------------------------------------------------
    def session(self, admin: AdminCredential) -> Session:
        """An access token for the service account, obtained at its token URI."""
        account = service_account(admin.secret)
        assertion = signed_assertion(account, now=int(time.time()))
        answer = self.call(
            TokenRequest(secret=assertion, base_url=account.token_uri),
            "POST",
            "",
            form={"grant_type": JWT_BEARER, "assertion": assertion},
            ok=(200,),
            secrets=(account.private_key, account.private_key_id),
        )
        body = answer.body if isinstance(answer.body, dict) else {}
        token = text(body.get("access_token"))
        if not token:
            raise AdminError("the token endpoint's answer carried no access token", transient=True)
        api = AdminCredential(secret=token, settings=admin.settings, base_url=admin.base_url)
        # The key file's identity (client_email) helps read a refusal; its key does not.
        return Session(api=api, hidden=(token, account.private_key, account.private_key_id))

    # -- the API --------------------------------------------------------------------
    def _api(
        self, session: Session, method: str, path: str, also: tuple[str, ...] = (), **options: Any
    ) -> Answer:
        hidden = (*session.hidden, *filter(None, also))
        return self.call(session.api, method, path, secrets=hidden, **options)

    def _keys(self, session: Session, parent: str) -> list[dict[str, Any]]:
        """Every usable key of the project, page after page."""
        keys: list[dict[str, Any]] = []
        params: dict[str, str] = {}
        for _ in range(self.max_pages):
            page = self._api(session, "GET", f"/{parent}/keys", params=params).body
            page = page if isinstance(page, dict) else {}
            keys += [k for k in page.get("keys") or [] if isinstance(k, dict)]
            token = text(page.get("nextPageToken"))
            if not token:
                return keys
            params = {"pageToken": token}
        raise AdminError("the key listing did not end", transient=True)

    def _finished(self, session: Session, operation: Any) -> dict[str, Any]:
        """The operation's response once it is done, polled at most `poll_attempts` times."""
        for attempt in range(self.poll_attempts + 1):
            if not isinstance(operation, dict):
                raise AdminError("the provider's operation was unreadable", transient=True)
            if operation.get("done"):
                return _outcome(operation, session.hidden)
            if attempt == self.poll_attempts:
                break
            time.sleep(self.poll_interval)
            name = _checked(_OPERATION, operation.get("name"), "the operation's name")
            operation = self._api(session, "GET", f"/{name}", ok=(200,)).body
        raise AdminError("the provider's operation has not finished yet", transient=True)


def service_account(secret: str) -> ServiceAccount:
    """The service account key file's fields; a permanent error naming what is missing."""
    try:
        data = json.loads(secret)
    except ValueError:
        data = None
    if not isinstance(data, dict) or data.get("type") != "service_account":
        raise AdminError("the admin credential is not a service account key file", transient=False)
    fields = ("client_email", "private_key", "private_key_id", "token_uri")
    missing = [f for f in fields if not text(data.get(f))]
    if missing:
        raise AdminError(f"the service account key lacks {', '.join(missing)}", transient=False)
    return ServiceAccount(**{f: data[f] for f in fields})


def signed_assertion(account: ServiceAccount, *, now: int) -> str:
    """The JWT Google's token endpoint exchanges for an access token, signed RS256."""
    header = {"alg": "RS256", "typ": "JWT", "kid": account.private_key_id}
    claims = {
        "iss": account.client_email,
        "scope": SCOPE,
        "aud": account.token_uri,
        "iat": now,
        "exp": now + ASSERTION_SECONDS,
    }
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = _private_key(account).sign(
        signing_input.encode(), padding.PKCS1v15(), hashes.SHA256()
    )
    return f"{signing_input}.{_b64(signature)}"


def _private_key(account: ServiceAccount) -> rsa.RSAPrivateKey:
    try:
        key = serialization.load_pem_private_key(account.private_key.encode(), password=None)
    except (ValueError, TypeError):
        key = None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise AdminError("the service account's private_key is not an RSA key", transient=False)
    return key


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _parent(admin: AdminCredential) -> str:
    project = admin.settings.get("project_id")
    if not isinstance(project, str) or not _PROJECT.fullmatch(project):
        raise AdminError("project_id is not a Google Cloud project id or number", transient=False)
    return f"projects/{project}/locations/global"


def _checked(shape: re.Pattern[str], value: Any, what: str) -> str:
    """`value` if it has the expected shape: a name put in a URL path never climbs out."""
    if isinstance(value, str) and shape.fullmatch(value):
        return value
    raise AdminError(f"{what} is not of the documented shape", transient=False)


def _outcome(operation: dict[str, Any], hidden: tuple[str, ...]) -> dict[str, Any]:
    """A done operation's response, or its error as an AdminError (redacted)."""
    error = operation.get("error")
    if isinstance(error, dict):
        message = text(error.get("message"))
        for secret in hidden:
            message = redact(message, secret)
        code = error.get("code")
        raise AdminError(f"operation failed: {message}", transient=code in _TRANSIENT_CODES)
    response = operation.get("response")
    return response if isinstance(response, dict) else {}
