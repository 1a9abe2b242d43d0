"""Provider adapters: `get_adapter(name)` and the checks shared by all of them."""

from __future__ import annotations

from kms.exceptions import InvalidSecret
from kms.providers.adapters import ADAPTERS
from kms.providers.base import (
    AUTHENTIC,
    TRANSIENT,
    Adapter,
    CheckOutcome,
    CheckResult,
    meaning,
)

__all__ = [
    "ADAPTERS",
    "AUTHENTIC",
    "GRANT_PROVIDERS",
    "MAX_SECRET",
    "TRANSIENT",
    "Adapter",
    "CheckOutcome",
    "CheckResult",
    "check_secret_shape",
    "get_adapter",
    "meaning",
]

MAX_SECRET = 1024
# What a grant may name: one provider, or "*" for any.
GRANT_PROVIDERS = (*sorted(ADAPTERS), "*")


def get_adapter(name: str) -> Adapter:
    return ADAPTERS[name]


def check_secret_shape(provider: str, secret: str) -> None:
    """Refuse, before any network call, a secret that cannot be `provider`'s key. The
    messages never repeat the secret."""
    if not secret:
        raise InvalidSecret("The secret is empty.", fields={"secret": ["Must not be empty."]})
    if len(secret) > MAX_SECRET:
        raise InvalidSecret(fields={"secret": [f"Longer than {MAX_SECRET} characters."]})
    if secret != secret.strip():
        raise InvalidSecret(fields={"secret": ["Has leading or trailing whitespace."]})
    if not secret.isascii() or not secret.isprintable() or any(c.isspace() for c in secret):
        raise InvalidSecret(fields={"secret": ["Must be printable ASCII without spaces."]})
    adapter = get_adapter(provider)
    if adapter.key_pattern is None:  # no key format assumed (OpenAI-compatible gateways)
        return
    for other in ADAPTERS.values():
        if (
            other.name != provider
            and other.distinctive is not None
            and other.distinctive.fullmatch(secret)
        ) and (adapter.distinctive is None or not adapter.distinctive.fullmatch(secret)):
            raise InvalidSecret(
                fields={"secret": [f"Looks like {other.title} key, not {adapter.title} key."]}
            )
    problem = adapter.format_problem(secret)
    if problem:
        raise InvalidSecret(fields={"secret": [f"The secret {problem}."]})
