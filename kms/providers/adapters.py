"""Every provider's quirks, and only here: key formats, endpoints, headers, error words."""

from __future__ import annotations

import re
from typing import Any

from kms.providers.base import Adapter, CheckOutcome, ErrorInfo


class OpenAI(Adapter):
    name, title = "openai", "an OpenAI"
    default_base_url = "https://api.openai.com/v1"
    # Anthropic's and OpenRouter's keys also begin with sk-.
    key_pattern: re.Pattern[str] | None = re.compile(r"sk-(?!ant-|or-)[A-Za-z0-9_\-]{16,400}")
    distinctive: re.Pattern[str] | None = re.compile(r"sk-(?!ant-|or-).*")

    def classify_error(self, status: int, info: ErrorInfo) -> CheckOutcome:
        if status == 403 and "unsupported_country" in info.words():
            return CheckOutcome.REGION_BLOCKED
        # "insufficient_quota" arrives as a 429 but is not a rate limit.
        if status == 429 and "insufficient_quota" in (info.code + info.type):
            return CheckOutcome.QUOTA_EXHAUSTED
        return super().classify_error(status, info)


class Anthropic(Adapter):
    name, title = "anthropic", "an Anthropic"
    default_base_url = "https://api.anthropic.com/v1"
    sdk_path_prefix = "/v1"
    key_pattern = re.compile(r"sk-ant-[A-Za-z0-9_\-]{16,400}")
    distinctive = re.compile(r"sk-ant-.*")
    API_VERSION = "2023-06-01"

    def auth_headers(self, secret: str) -> dict[str, str]:
        return {"x-api-key": secret, "anthropic-version": self.API_VERSION}

    def classify_error(self, status: int, info: ErrorInfo) -> CheckOutcome:
        by_type = {
            "authentication_error": CheckOutcome.INVALID,
            "permission_error": CheckOutcome.INSUFFICIENT_PERMISSIONS,
            "billing_error": CheckOutcome.QUOTA_EXHAUSTED,
            "rate_limit_error": CheckOutcome.RATE_LIMITED,
            "overloaded_error": CheckOutcome.PROVIDER_UNAVAILABLE,
            "api_error": CheckOutcome.PROVIDER_UNAVAILABLE,
        }
        if info.type in by_type:
            if info.type == "permission_error" and "region" in info.words():
                return CheckOutcome.REGION_BLOCKED
            return by_type[info.type]
        return super().classify_error(status, info)


class Google(Adapter):
    """Gemini: the key goes in `x-goog-api-key`, never in the URL; a bad key is a 400."""

    name, title = "google", "a Google AI (Gemini)"
    sdk_path_prefix = "/v1beta"
    default_base_url = "https://generativelanguage.googleapis.com/v1beta"
    key_pattern = re.compile(r"AIza[A-Za-z0-9_\-]{35}")
    distinctive = re.compile(r"AIza.*")

    def auth_headers(self, secret: str) -> dict[str, str]:
        return {"x-goog-api-key": secret}

    def classify_error(self, status: int, info: ErrorInfo) -> CheckOutcome:
        words = info.words()
        if "api_key_invalid" in words or "api_key_expired" in words:
            return CheckOutcome.INVALID
        if status == 400 and info.status == "FAILED_PRECONDITION" and "location" in words:
            return CheckOutcome.REGION_BLOCKED
        if status == 400:
            return CheckOutcome.PROVIDER_UNAVAILABLE
        return super().classify_error(status, info)


class AzureOpenAI(Adapter):
    name, title = "azure_openai", "an Azure OpenAI"
    key_pattern = re.compile(r"[A-Za-z0-9]{32,128}")
    base_url_required = True
    check_path = "/openai/models"
    API_VERSION = "2024-10-21"

    def auth_headers(self, secret: str) -> dict[str, str]:
        return {"api-key": secret}

    def check_params(self) -> dict[str, str]:
        return {"api-version": self.API_VERSION}


class Mistral(Adapter):
    name, title = "mistral", "a Mistral"
    default_base_url = "https://api.mistral.ai/v1"
    key_pattern = re.compile(r"[A-Za-z0-9]{32}")


class Groq(Adapter):
    name, title = "groq", "a Groq"
    default_base_url = "https://api.groq.com/openai/v1"
    key_pattern = re.compile(r"gsk_[A-Za-z0-9]{20,200}")
    distinctive = re.compile(r"gsk_.*")


class Cohere(Adapter):
    """Cohere has a dedicated check: POST /v1/check-api-key answers {"valid": bool}."""

    name, title = "cohere", "a Cohere"
    default_base_url = "https://api.cohere.com"
    key_pattern = re.compile(r"[A-Za-z0-9]{40}")
    check_method = "POST"
    check_path = "/v1/check-api-key"

    def classify_success(self, body: Any) -> tuple[CheckOutcome, str]:
        if not isinstance(body, dict) or not isinstance(body.get("valid"), bool):
            return CheckOutcome.PROVIDER_UNAVAILABLE, "unreadable answer from check-api-key"
        return (
            (CheckOutcome.VALID, "ok")
            if body["valid"]
            else (CheckOutcome.INVALID, "check-api-key: valid=false")
        )


class OpenRouter(Adapter):
    """OpenRouter speaks OpenAI's API; `GET /key` describes the calling key (its credit
    limit and usage), and a key whose limit is spent is genuine but cannot be used."""

    name, title = "openrouter", "an OpenRouter"
    default_base_url = "https://openrouter.ai/api/v1"
    key_pattern = re.compile(r"sk-or-v1-[0-9a-f]{64}")
    distinctive = re.compile(r"sk-or-.*")
    check_path = "/key"

    def classify_success(self, body: Any) -> tuple[CheckOutcome, str]:
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, dict):
            return CheckOutcome.PROVIDER_UNAVAILABLE, "unreadable answer from /key"
        remaining = data.get("limit_remaining")
        # null means no limit; a bool is an int to Python but not a number here.
        if (
            isinstance(remaining, int | float)
            and not isinstance(remaining, bool)
            and remaining <= 0
        ):
            return CheckOutcome.QUOTA_EXHAUSTED, "the key's credit limit is spent"
        return CheckOutcome.VALID, "ok"


class OpenAICompatible(OpenAI):
    """Any OpenAI-style endpoint (gateways, self-hosted servers): base_url required, and no
    key format is assumed."""

    name, title = "openai_compatible", "an OpenAI-compatible"
    default_base_url = ""
    key_pattern = None
    distinctive = None
    base_url_required = True


ADAPTERS: dict[str, Adapter] = {
    a.name: a
    for a in (
        OpenAI(),
        Anthropic(),
        Google(),
        AzureOpenAI(),
        Mistral(),
        Groq(),
        Cohere(),
        OpenRouter(),
        OpenAICompatible(),
    )
}
