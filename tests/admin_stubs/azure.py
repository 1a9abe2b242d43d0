"""Microsoft Entra ID's token endpoint and Azure Resource Manager's regenerateKey for one
Azure OpenAI resource, on one local server, answering as Microsoft documents."""

from __future__ import annotations

import json
import secrets
from typing import Any
from urllib.parse import parse_qs

from tests.provider_stub import ProviderStub, Reply, Seen

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
CLIENT_ID = "00001111-aaaa-2222-bbbb-3333cccc4444"
SUBSCRIPTION = "00000000-1111-2222-3333-444444444444"
GROUP = "rg-keyward"
ACCOUNT = "keyward-openai"
ARM_SCOPE = "https://management.azure.com/.default"
ACCOUNT_PATH = (
    f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{GROUP}"
    f"/providers/Microsoft.CognitiveServices/accounts/{ACCOUNT}"
)
TOKEN_PATH = f"/{TENANT}/oauth2/v2.0/token"
TRACE = "0000aaaa-11bb-cccc-dd22-eeeeee333333"


def entra_error(error: str, code: int, description: str) -> dict[str, Any]:
    """Entra ID's OAuth error body, as its error-code reference shows it."""
    return {
        "error": error,
        "error_description": f"AADSTS{code}: {description}\r\nTrace ID: {TRACE}\r\n"
        f"Correlation ID: {TRACE}\r\nTimestamp: 2026-12-07 03:40:00Z",
        "error_codes": [code],
        "timestamp": "2026-12-07 03:40:00Z",
        "trace_id": TRACE,
        "correlation_id": TRACE,
        "error_uri": f"https://login.microsoftonline.com/error?code={code}",
    }


def arm_error(code: str, message: str) -> dict[str, Any]:
    """Azure Resource Manager's error body."""
    return {"error": {"code": code, "message": message}}


BAD_SECRET = entra_error(
    "invalid_client",
    7000215,
    "Invalid client secret provided. Ensure the secret being sent in the request is the "
    f"client secret value, not the client secret ID, for a secret added to app '{CLIENT_ID}'.",
)
NO_TENANT = entra_error("invalid_request", 90002, f"Tenant '{TENANT}' not found.")
ENTRA_THROTTLED = entra_error(
    "temporarily_unavailable", 90055, "TenantThrottlingError - There are too many requests."
)
ENTRA_DOWN = entra_error(
    "temporarily_unavailable", 90033, "MsodsServiceUnavailable - The directory isn't available."
)
BAD_TOKEN = arm_error("InvalidAuthenticationToken", "The access token is invalid.")
FORBIDDEN = arm_error(
    "AuthorizationFailed",
    f"The client '{CLIENT_ID}' with object id '{CLIENT_ID}' does not have authorization to "
    "perform action 'Microsoft.CognitiveServices/accounts/regenerateKey/action' over scope "
    f"'{ACCOUNT_PATH}' or the scope is invalid.",
)
NOT_FOUND = arm_error(
    "ResourceNotFound",
    f"The Resource 'Microsoft.CognitiveServices/accounts/{ACCOUNT}' under resource group "
    f"'{GROUP}' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix",
)
GROUP_NOT_FOUND = arm_error(
    "ResourceGroupNotFound", f"Resource group '{GROUP}' could not be found."
)
BAD_REQUEST = arm_error(
    "BadRequest", "The request content was invalid and could not be deserialized."
)
THROTTLED = arm_error(
    "SubscriptionRequestsThrottled",
    f"Number of 'write' requests for subscription '{SUBSCRIPTION}' actor '{CLIENT_ID}' "
    "exceeded. Please try again after '7' seconds after additional 'write' requests.",
)
ARM_DOWN = arm_error("InternalServerError", "Encountered internal server error.")


class AzureStub(ProviderStub):
    """The resource's two keys, the tokens issued for the client secret, and faults queued
    for the token endpoint ("token") or ARM ("arm")."""

    def __init__(self, client_secret: str = "Qx8Q~" + "s" * 35) -> None:
        self.client_secret = client_secret
        self.keys = {"key1": secrets.token_hex(16), "key2": secrets.token_hex(16)}
        self.tokens: list[str] = []
        self.faults: dict[str, list[Reply]] = {"token": [], "arm": []}
        super().__init__()

    # ProviderStub's handler reads `reply` after recording the request: here it is the
    # answer to that request.
    @property
    def reply(self) -> Reply:
        seen = self.seen[-1]
        kind = "token" if seen.path.endswith("/oauth2/v2.0/token") else "arm"
        if self.faults[kind]:
            return self.faults[kind].pop(0)
        return self._token(seen) if kind == "token" else self._regenerate(seen)

    @reply.setter
    def reply(self, value: Reply) -> None:
        return

    def fail(
        self,
        kind: str,
        status: int,
        body: Any,
        headers: dict[str, str] | None = None,
        delay: float = 0.0,
    ) -> None:
        """Answer the next request to `kind` so."""
        self.faults[kind].append(Reply(status, body, headers or {}, delay))

    def _token(self, seen: Seen) -> Reply:
        form = {name: values[0] for name, values in parse_qs(seen.body.decode()).items()}
        if seen.path != TOKEN_PATH:
            return Reply(400, NO_TENANT)
        if (form.get("client_id"), form.get("client_secret")) != (CLIENT_ID, self.client_secret):
            return Reply(401, BAD_SECRET)
        if (form.get("grant_type"), form.get("scope")) != ("client_credentials", ARM_SCOPE):
            return Reply(400, entra_error("invalid_scope", 1002012, "The scope is not valid."))
        self.tokens.append("eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9." + secrets.token_urlsafe(48))
        return Reply(
            200,
            {
                "token_type": "Bearer",
                "expires_in": 3599,
                "ext_expires_in": 3599,
                "access_token": self.tokens[-1],
            },
        )

    def _regenerate(self, seen: Seen) -> Reply:
        if seen.headers.get("authorization") not in [f"Bearer {t}" for t in self.tokens]:
            return Reply(401, BAD_TOKEN)
        if seen.path == ACCOUNT_PATH + "/listKeys":
            return Reply(200, dict(self.keys))
        if seen.path != ACCOUNT_PATH + "/regenerateKey":
            return Reply(404, NOT_FOUND)
        slot = {"Key1": "key1", "Key2": "key2"}.get(json.loads(seen.body or b"{}").get("keyName"))
        if slot is None:
            return Reply(400, BAD_REQUEST)
        self.keys[slot] = secrets.token_hex(16)
        return Reply(200, dict(self.keys))
