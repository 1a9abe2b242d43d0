"""Admin API adapters, one module per provider, for rotations that reach the provider:
`admin_adapter(provider)` (None where Keyward knows no admin API for it), and the checks
of an admin credential before it is stored."""

from __future__ import annotations

import time
from typing import Any

from core.errors import InvalidInput
from kms.exceptions import InvalidSecret
from kms.providers.admin.anthropic import AnthropicAdmin
from kms.providers.admin.azure import AzureOpenAIAdmin
from kms.providers.admin.base import AdminAdapter, AdminCredential, AdminError, Minted
from kms.providers.admin.google import GoogleAdmin
from kms.providers.admin.openai import OpenAIAdmin
from kms.providers.admin.openrouter import OpenRouterAdmin
from kms.providers.base import CheckOutcome, CheckResult

__all__ = [
    "ADMIN_ADAPTERS",
    "AdminAdapter",
    "AdminCredential",
    "AdminError",
    "Minted",
    "admin_adapter",
    "check_admin_credential",
    "check_admin_input",
]

ADMIN_ADAPTERS: dict[str, AdminAdapter] = {
    "anthropic": AnthropicAdmin(),
    "google": GoogleAdmin(),
    "openrouter": OpenRouterAdmin(),
    "azure_openai": AzureOpenAIAdmin(),
    "openai": OpenAIAdmin(),
}
# Admin credentials may be whole documents (a service account's JSON key file).
MAX_ADMIN_SECRET = 16384


def admin_adapter(provider: str) -> AdminAdapter | None:
    return ADMIN_ADAPTERS.get(provider)


def check_admin_input(provider: str, secret: str, values: dict[str, Any]) -> None:
    """Refuse, before any network call, an admin credential Keyward cannot use: a
    provider with no known admin API, a secret that is empty, too long or holds control
    characters, settings the adapter does not know or misses."""
    adapter = admin_adapter(provider)
    if adapter is None:
        known = ", ".join(sorted(ADMIN_ADAPTERS)) or "none"
        raise InvalidInput(
            fields={"kind": [f"Keyward knows no admin API for {provider} (known: {known})."]}
        )
    if not secret or secret != secret.strip():
        raise InvalidSecret(fields={"secret": ["Empty, or with leading or trailing spaces."]})
    if len(secret) > MAX_ADMIN_SECRET:
        raise InvalidSecret(fields={"secret": [f"Longer than {MAX_ADMIN_SECRET} characters."]})
    if any(not (c.isprintable() or c in "\n\r\t") for c in secret) or not secret.isascii():
        raise InvalidSecret(fields={"secret": ["Must be ASCII text without control characters."]})
    problems = adapter.check_settings(values)
    if problems:
        raise InvalidInput(fields={"upstream": problems})


def check_admin_credential(
    provider: str, secret: str, values: dict[str, Any], base_url: str = ""
) -> CheckResult | None:
    """Ask the provider's admin API whether the credential works (the adapter's probe;
    None for a provider with no admin API); classified as key checks are, so that
    onboarding refuses it the same way."""
    adapter = admin_adapter(provider)
    if adapter is None:
        return None
    started = time.monotonic()
    try:
        adapter.probe(AdminCredential(secret, values, base_url))
    except AdminError as refused:
        outcome = CheckOutcome.PROVIDER_UNAVAILABLE if refused.transient else CheckOutcome.INVALID
        return _result(outcome, refused.reason, started, refused.retry_after)
    return _result(CheckOutcome.VALID, "ok", started)


def _result(
    outcome: CheckOutcome, reason: str, started: float, retry_after: float | None = None
) -> CheckResult:
    duration = int((time.monotonic() - started) * 1000)
    return CheckResult(outcome, None, reason, retry_after, duration)
