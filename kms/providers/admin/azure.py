"""Azure OpenAI's admin API: an Azure OpenAI resource (a Cognitive Services account) has two
keys, key1 and key2, and a rotation regenerates the one not in use through Azure Resource
Manager with a Microsoft Entra ID service principal's client secret.

Documented endpoints used:
- Microsoft identity platform, OAuth 2.0 client credentials grant:
  `POST {login}/{tenant}/oauth2/v2.0/token` (form: client_id, client_secret,
  grant_type=client_credentials, scope=https://management.azure.com/.default), answering
  `{"token_type", "expires_in", "access_token"}` or `{"error", "error_description", ...}`.
- Azure Resource Manager, Accounts - List Keys (api-version 2023-05-01):
  `POST .../accounts/{accountName}/listKeys`, answering `{"key1", "key2"}`: which slot
  holds the key in use when no slot was recorded for it (a key onboarded by hand).
- Azure Resource Manager, Accounts - Regenerate Key (api-version 2023-05-01):
  `POST /subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/
  Microsoft.CognitiveServices/accounts/{accountName}/regenerateKey` with
  `{"keyName": "Key1" | "Key2"}`, answering `{"key1", "key2"}`; errors are
  `{"error": {"code", "message"}}`, throttling a 429 with Retry-After.

Azure cannot name a key, so `minted` finds nothing; a repeated `mint` is safe all the same:
it regenerates the same slot, the one not in use, so an attempt that died after Azure made
its key leaves only a value nobody holds, replaced by the next attempt's."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import httpx

from kms.providers.admin.base import AdminAdapter, AdminCredential, AdminError, Minted, text
from kms.providers.base import error_info

API_VERSION = "2023-05-01"
ARM_SCOPE = "https://management.azure.com/.default"
SLOTS = {"key1": "Key1", "key2": "Key2"}
# ARM's answer when the resource (or its resource group) no longer exists.
GONE = re.compile(r"HTTP 404: (ResourceNotFound|ResourceGroupNotFound)\b")

_GUID = r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}"
# The shapes Azure allows; they also keep every value to one segment of the URL's path.
SHAPES = {
    "tenant_id": re.compile(rf"{_GUID}|[A-Za-z0-9][A-Za-z0-9.-]{{0,252}}"),
    "client_id": re.compile(_GUID),
    "subscription_id": re.compile(_GUID),
    "resource_group": re.compile(r"[\w.()-]{0,89}[\w()-]"),
    "account_name": re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{1,63}"),
}


class AzureOpenAIAdmin(AdminAdapter):
    """Regenerates an Azure OpenAI resource's key slots through Azure Resource Manager."""

    provider = "azure_openai"
    default_base_url = "https://management.azure.com"
    default_login_url = "https://login.microsoftonline.com"
    required_settings = {
        "tenant_id": "the Microsoft Entra ID tenant of the service principal",
        "client_id": "the service principal's application (client) id",
        "subscription_id": "the Azure subscription holding the resource",
        "resource_group": "the resource group holding the resource",
        "account_name": "the Azure OpenAI resource's (Cognitive Services account's) name",
    }
    optional_settings = {
        "login_base_url": "where Entra ID's token endpoint lives (https://login.microsoftonline.com)",
    }

    def mint(self, admin: AdminCredential, *, name: str, current_upstream_id: str = "") -> Minted:
        """Regenerate the slot not in use and return its new value."""
        slot = "key2" if current_upstream_id == "key1" else "key1"
        keys = self._regenerate(admin, slot)
        secret = text(keys.get(slot))
        if not secret:
            raise AdminError(f"the answer carries no {slot}", transient=True)
        return Minted(secret=secret, upstream_id=slot)

    def minted(self, admin: AdminCredential, *, name: str) -> list[str]:
        """Nothing: Azure keys carry no name (a repeated mint is safe, see the module)."""
        return []

    def identify(self, admin: AdminCredential, is_current: Callable[[str], bool]) -> str:
        """The slot holding the key in use, from ARM's listKeys: so that a key onboarded
        by hand is neither regenerated while in use nor left alive when its grace ends."""
        path = self._account_path(admin.settings) + "/listKeys"
        keys = self._arm(admin, path)
        return next((slot for slot in SLOTS if is_current(text(keys.get(slot)))), "")

    def probe(self, admin: AdminCredential) -> None:
        """Obtain an ARM token: `minted` asks Azure nothing, and the token proves the
        tenant, the client id and its secret. Whether the principal may regenerate keys
        only a regeneration shows, which a check must not do to keys in use."""
        self._token(admin)

    def retire(self, admin: AdminCredential, *, upstream_id: str, hint: str = "") -> None:
        """Regenerate the slot, so its old value stops working; a deleted resource has no
        key left to retire."""
        if upstream_id not in SLOTS:
            raise AdminError(f"no such key slot: {upstream_id[:40]!r}", transient=False)
        try:
            self._regenerate(admin, upstream_id)
        except AdminError as error:
            if not GONE.match(error.reason):
                raise

    def check_settings(self, values: dict[str, Any]) -> list[str]:
        problems = super().check_settings(values)
        for name, shape in SHAPES.items():
            value = values.get(name)
            if isinstance(value, str) and value and not shape.fullmatch(value):
                problems.append(f"{name}: not an Azure {name.replace('_', ' ')}")
        if "login_base_url" in values and not isinstance(values["login_base_url"], str):
            problems.append("login_base_url: not a URL")
        return problems

    def auth_headers(self, admin: AdminCredential) -> dict[str, str]:
        # The client secret goes in the token request's form only; each ARM call carries
        # the access token obtained for it.
        return {}

    # -- the two requests ---------------------------------------------------------------
    def _regenerate(self, admin: AdminCredential, slot: str) -> dict[str, Any]:
        path = self._account_path(admin.settings) + "/regenerateKey"
        return self._arm(admin, path, {"keyName": SLOTS[slot]})

    def _arm(self, admin: AdminCredential, path: str, body: Any = None) -> dict[str, Any]:
        """One ARM action on the account (POST, as regenerateKey and listKeys are); the
        keys it answers with."""
        token = self._token(admin)
        answer = self.call(
            admin,
            "POST",
            path,
            body=body,
            headers={"Authorization": f"Bearer {token}"},
            params={"api-version": API_VERSION},
            ok=(200,),
            secrets=(token,),
        )
        return answer.body if isinstance(answer.body, dict) else {}

    def _token(self, admin: AdminCredential) -> str:
        """An ARM access token for the service principal (client credentials grant)."""
        values = admin.settings
        login = replace(admin, base_url=values.get("login_base_url") or self.default_login_url)
        form = {
            "client_id": values["client_id"],
            "client_secret": admin.secret,
            "grant_type": "client_credentials",
            "scope": ARM_SCOPE,
        }
        try:
            answer = self.call(
                login, "POST", f"/{values['tenant_id']}/oauth2/v2.0/token", form=form, ok=(200,)
            )
        except AdminError as error:
            raise AdminError(
                f"Entra ID token: {error.reason}",
                transient=error.transient,
                retry_after=error.retry_after,
            ) from None
        token = text(answer.body.get("access_token")) if isinstance(answer.body, dict) else ""
        if not token:
            raise AdminError("Entra ID token: the answer carries no access_token", transient=True)
        return token

    def _account_path(self, values: dict[str, Any]) -> str:
        problems = self.check_settings(values)
        if problems:
            raise AdminError("; ".join(problems), transient=False)
        return (
            f"/subscriptions/{values['subscription_id']}"
            f"/resourceGroups/{values['resource_group']}"
            f"/providers/Microsoft.CognitiveServices/accounts/{values['account_name']}"
        )

    def _refusal(self, response: httpx.Response, body: Any, hidden: tuple[str, ...]) -> AdminError:
        # The reason leads with the error's code, which says what to fix (and whether the
        # resource is gone), in Entra ID's OAuth shape as in ARM's.
        said = ": ".join(part for part in _code_and_message(body) if part)
        return super()._refusal(response, {"error": {"message": said}} if said else None, hidden)


def _code_and_message(body: Any) -> tuple[str, str]:
    """The error code and first line of message of an Entra ID or an ARM error body."""
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        description = text(body.get("error_description")).splitlines()
        return body["error"], description[0] if description else ""
    info = error_info(body)
    return info.code, info.message
