"""Each provider's check and classification, against a local stub answering as the
provider documents."""

from __future__ import annotations

import pytest

from kms.exceptions import InvalidSecret
from kms.providers import CheckOutcome, check_secret_shape, get_adapter
from kms.providers.base import parse_retry_after
from tests import provider_stub as docs
from tests.provider_stub import KEYS

U = CheckOutcome

CASES: list[tuple[str, int, object, CheckOutcome]] = [
    # provider, status, body, expected
    ("openai", 200, None, U.VALID),
    ("openai", 401, docs.OPENAI_INVALID, U.INVALID),
    ("openai", 403, docs.OPENAI_FORBIDDEN, U.INSUFFICIENT_PERMISSIONS),
    ("openai", 403, docs.OPENAI_REGION, U.REGION_BLOCKED),
    ("openai", 429, docs.OPENAI_QUOTA, U.QUOTA_EXHAUSTED),
    ("openai", 429, docs.OPENAI_RATE, U.RATE_LIMITED),
    (
        "openai",
        500,
        {"error": {"message": "The server had an error", "type": "server_error"}},
        U.PROVIDER_UNAVAILABLE,
    ),
    ("openai", 503, b"<html>upstream</html>", U.PROVIDER_UNAVAILABLE),
    ("openai", 401, b"not json", U.INVALID),
    ("openai", 200, b"{not json", U.PROVIDER_UNAVAILABLE),
    ("anthropic", 200, {"data": [], "has_more": False}, U.VALID),
    ("anthropic", 401, docs.ANTHROPIC_INVALID, U.INVALID),
    ("anthropic", 400, docs.ANTHROPIC_BILLING, U.QUOTA_EXHAUSTED),
    ("anthropic", 402, docs.ANTHROPIC_BILLING, U.QUOTA_EXHAUSTED),
    ("anthropic", 403, docs.ANTHROPIC_PERMISSION, U.INSUFFICIENT_PERMISSIONS),
    ("anthropic", 429, docs.ANTHROPIC_RATE, U.RATE_LIMITED),
    ("anthropic", 529, docs.ANTHROPIC_OVERLOADED, U.PROVIDER_UNAVAILABLE),
    (
        "anthropic",
        500,
        {"type": "error", "error": {"type": "api_error", "message": "Internal"}},
        U.PROVIDER_UNAVAILABLE,
    ),
    ("google", 200, {"models": []}, U.VALID),
    ("google", 400, docs.GEMINI_INVALID, U.INVALID),
    ("google", 400, docs.GEMINI_REGION, U.REGION_BLOCKED),
    (
        "google",
        400,
        {"error": {"code": 400, "message": "Invalid JSON payload", "status": "INVALID_ARGUMENT"}},
        U.PROVIDER_UNAVAILABLE,
    ),
    ("google", 403, docs.GEMINI_DENIED, U.INSUFFICIENT_PERMISSIONS),
    ("google", 429, docs.GEMINI_EXHAUSTED, U.RATE_LIMITED),
    (
        "google",
        500,
        {"error": {"code": 500, "status": "INTERNAL", "message": "Internal error"}},
        U.PROVIDER_UNAVAILABLE,
    ),
    ("azure_openai", 200, {"data": []}, U.VALID),
    ("azure_openai", 401, docs.AZURE_INVALID, U.INVALID),
    (
        "azure_openai",
        429,
        {"error": {"code": "429", "message": "Requests have exceeded the call rate limit"}},
        U.RATE_LIMITED,
    ),
    ("mistral", 200, {"object": "list", "data": []}, U.VALID),
    ("mistral", 401, docs.MISTRAL_INVALID, U.INVALID),
    ("mistral", 429, {"message": "Requests rate limit exceeded"}, U.RATE_LIMITED),
    ("groq", 200, {"object": "list", "data": []}, U.VALID),
    ("groq", 401, docs.GROQ_INVALID, U.INVALID),
    ("groq", 503, {"error": {"message": "Service Unavailable"}}, U.PROVIDER_UNAVAILABLE),
    ("cohere", 200, {"valid": True, "organization_id": "org"}, U.VALID),
    ("cohere", 200, {"valid": False}, U.INVALID),
    ("cohere", 200, {"unexpected": 1}, U.PROVIDER_UNAVAILABLE),
    ("cohere", 401, docs.COHERE_INVALID, U.INVALID),
    ("cohere", 429, {"message": "too many requests"}, U.RATE_LIMITED),
    ("openrouter", 200, docs.OPENROUTER_KEY, U.VALID),
    ("openrouter", 200, docs.OPENROUTER_UNLIMITED, U.VALID),
    ("openrouter", 200, docs.OPENROUTER_SPENT, U.QUOTA_EXHAUSTED),
    ("openrouter", 200, {"object": "list", "data": []}, U.PROVIDER_UNAVAILABLE),
    ("openrouter", 401, docs.OPENROUTER_INVALID, U.INVALID),
    ("openrouter", 402, docs.OPENROUTER_CREDITS, U.QUOTA_EXHAUSTED),
    ("openrouter", 429, docs.OPENROUTER_RATE, U.RATE_LIMITED),
    (
        "openrouter",
        500,
        {"error": {"code": 500, "message": "Internal Server Error"}},
        U.PROVIDER_UNAVAILABLE,
    ),
    ("openai_compatible", 200, {"object": "list", "data": []}, U.VALID),
    ("openai_compatible", 401, docs.OPENAI_INVALID, U.INVALID),
]


@pytest.mark.parametrize(("provider", "status", "body", "expected"), CASES)
def test_classification(provider_stub, provider, status, body, expected):
    provider_stub.answer(status, body)
    result = get_adapter(provider).check(KEYS[provider], provider_stub.url)
    assert result.outcome == expected, result
    assert result.http_status == status
    assert KEYS[provider] not in result.reason
    assert "sk-proj-****" not in result.reason


def test_a_rate_limit_carries_retry_after(provider_stub):
    provider_stub.answer(429, docs.OPENAI_RATE, headers={"retry-after": "17"})
    result = get_adapter("openai").check(KEYS["openai"], provider_stub.url)
    assert (result.outcome, result.retry_after) == (U.RATE_LIMITED, 17.0)


def test_a_timeout_is_provider_unavailable(provider_stub, settings):
    settings.PROVIDER_TIMEOUT_MS = 200
    provider_stub.answer(200, delay=1.0)
    result = get_adapter("anthropic").check(KEYS["anthropic"], provider_stub.url)
    assert result.outcome == U.PROVIDER_UNAVAILABLE
    assert result.reason == "timeout"


def test_an_unreachable_provider_is_provider_unavailable():
    from tests.bao import free_port

    result = get_adapter("openai").check(KEYS["openai"], f"http://127.0.0.1:{free_port()}")
    assert result.outcome == U.PROVIDER_UNAVAILABLE


def test_redirects_are_not_followed_with_the_key(provider_stub):
    provider_stub.answer(302, {}, headers={"location": "http://127.0.0.1:9/steal"})
    result = get_adapter("anthropic").check(KEYS["anthropic"], provider_stub.url)
    assert result.outcome == U.PROVIDER_UNAVAILABLE
    assert len(provider_stub.seen) == 1


@pytest.mark.parametrize(
    ("provider", "method", "path", "header", "query"),
    [
        ("openai", "GET", "/models", ("authorization", "Bearer {key}"), ""),
        ("anthropic", "GET", "/models", ("x-api-key", "{key}"), ""),
        ("google", "GET", "/models", ("x-goog-api-key", "{key}"), ""),
        ("azure_openai", "GET", "/openai/models", ("api-key", "{key}"), "api-version=2024-10-21"),
        ("mistral", "GET", "/models", ("authorization", "Bearer {key}"), ""),
        ("groq", "GET", "/models", ("authorization", "Bearer {key}"), ""),
        ("cohere", "POST", "/v1/check-api-key", ("authorization", "Bearer {key}"), ""),
        ("openrouter", "GET", "/key", ("authorization", "Bearer {key}"), ""),
        ("openai_compatible", "GET", "/models", ("authorization", "Bearer {key}"), ""),
    ],
)
def test_each_provider_authenticates_its_own_way_and_never_in_the_url(
    provider_stub, provider, method, path, header, query
):
    provider_stub.answer(200, {"valid": True, "data": []})
    key = KEYS[provider]
    get_adapter(provider).check(key, provider_stub.url)
    seen = provider_stub.seen[-1]
    assert (seen.method, seen.path, seen.query) == (method, path, query)
    assert seen.headers[header[0]] == header[1].format(key=key)
    assert key not in seen.path + seen.query
    if provider == "anthropic":
        assert seen.headers["anthropic-version"] == "2023-06-01"


@pytest.mark.parametrize(
    ("provider", "secret", "words"),
    [
        ("openai", KEYS["anthropic"], "Anthropic"),
        ("anthropic", KEYS["openai"], "OpenAI"),
        ("openai", KEYS["google"], "Gemini"),
        ("openai", KEYS["openrouter"], "OpenRouter"),
        ("openrouter", KEYS["openai"], "OpenAI"),
        ("openrouter", "sk-or-v1-" + "0E6F44A4" * 8, "OpenRouter"),
        ("openrouter", "sk-or-v1-" + "0e6f44a4" * 7, "OpenRouter"),
        ("mistral", KEYS["groq"], "Groq"),
        ("google", "AIzaShort", "Gemini"),
        ("cohere", "short", "Cohere"),
        ("openai", "", "empty"),
        ("openai", " " + KEYS["openai"], "whitespace"),
        ("openai", KEYS["openai"] + "\n", "whitespace"),
        ("openai", "sk-proj-ключ" + "a" * 20, "ASCII"),
        ("openai", "sk-" + "a" * 2000, "Longer"),
        ("openai", "sk-proj- abc" + "a" * 20, "spaces"),
    ],
)
def test_a_secret_of_the_wrong_shape_is_refused_before_any_network_call(
    provider_stub, provider, secret, words
):
    with pytest.raises(InvalidSecret) as refused:
        check_secret_shape(provider, secret)
    text = repr(refused.value.extra) + refused.value.message
    assert words in text
    assert secret.strip() not in text or not secret.strip()
    assert provider_stub.seen == []


@pytest.mark.parametrize("provider", sorted(KEYS))
def test_each_providers_own_key_shape_is_accepted(provider):
    check_secret_shape(provider, KEYS[provider])


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("7", 7.0),
        (" 12 ", 12.0),
        ("\u00b2", None),
        ("\u0665", None),
        ("9" * 5000, None),
        ("", None),
    ],
)
def test_a_providers_retry_after_is_read_only_as_plain_seconds_or_a_date(header, seconds):
    assert parse_retry_after(header) == seconds
