"""What every provider adapter shares: the check request, the answer's classification into
one of seven outcomes, and the reason kept for the history (never the key).

Only `invalid` says the key is bad. Everything transient (rate limits, overload, 5xx,
timeouts, unreadable answers) is `provider_unavailable` or `rate_limited`, so no caller can
mistake a provider's bad day for a bad key.
"""

from __future__ import annotations

import base64
import email.utils
import json
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any
from urllib.parse import quote

import httpx
from django.conf import settings

from core import metrics
from core.numbers import decimal
from kms import egress
from kms.exceptions import ForbiddenBaseUrl


class CheckOutcome(StrEnum):
    VALID = "valid"
    INVALID = "invalid"
    INSUFFICIENT_PERMISSIONS = "insufficient_permissions"
    QUOTA_EXHAUSTED = "quota_exhausted"
    RATE_LIMITED = "rate_limited"
    REGION_BLOCKED = "region_blocked"
    PROVIDER_UNAVAILABLE = "provider_unavailable"


TRANSIENT = frozenset({CheckOutcome.RATE_LIMITED, CheckOutcome.PROVIDER_UNAVAILABLE})
# The key is genuine: the provider knows it, but limits what it may do.
AUTHENTIC = frozenset(
    {
        CheckOutcome.VALID,
        CheckOutcome.INSUFFICIENT_PERMISSIONS,
        CheckOutcome.QUOTA_EXHAUSTED,
        CheckOutcome.REGION_BLOCKED,
    }
)


# What each outcome means for the key, in words an admin can act on.
MEANINGS = {
    CheckOutcome.VALID: "The provider accepted the key.",
    CheckOutcome.INVALID: "The provider does not know this key: it was mistyped, revoked or "
    "deleted at the provider. Tokens cannot use it until it is rotated to a working secret.",
    CheckOutcome.INSUFFICIENT_PERMISSIONS: "The key is genuine, but the provider refused the "
    "check for lack of a permission; calls the key is allowed to make still work.",
    CheckOutcome.QUOTA_EXHAUSTED: "The key is genuine, but its account has no quota or "
    "credit left; calls fail until the account is topped up.",
    CheckOutcome.RATE_LIMITED: "The provider asked for fewer requests. This says nothing "
    "about the key, which keeps its status; the check is retried later.",
    CheckOutcome.REGION_BLOCKED: "The key is genuine, but the provider does not serve "
    "requests from this region.",
    CheckOutcome.PROVIDER_UNAVAILABLE: "The provider did not answer properly (a timeout or "
    "a server error). This says nothing about the key, which keeps its status.",
}


def meaning(outcome: str) -> str:
    """What a check's outcome means for the key ("" for an outcome not known here)."""
    try:
        return MEANINGS[CheckOutcome(outcome)]
    except ValueError:
        return ""


@dataclass(frozen=True)
class CheckResult:
    outcome: CheckOutcome
    http_status: int | None
    reason: str
    retry_after: float | None = None
    duration_ms: int = 0


@dataclass(frozen=True)
class ErrorInfo:
    """The parts of a provider's error body that classification reads."""

    code: str = ""
    type: str = ""
    status: str = ""
    reasons: tuple[str, ...] = ()
    message: str = ""

    def words(self) -> str:
        return " ".join((self.code, self.type, self.status, *self.reasons, self.message)).lower()


_KEYISH = re.compile(r"(sk-|gsk_|AIza|kw[apt]_)[A-Za-z0-9_\-*.]{3,}")


# A run this long of the key (or of one of its spellings) in a provider's text is treated
# as the key: providers echo keys partly ("Incorrect API key provided: sk-abc...wxyz").
MIN_ECHO = 8


def redact(text: str, secret: str) -> str:
    """The provider's words with every run of MIN_ECHO or more characters of the key, of
    its URL-encoded form or of its base64 forms (at every alignment) removed, and anything
    shaped like a key as well."""
    for spelling in spellings(secret):
        text = _without_runs(text, spelling)
    return _KEYISH.sub("[redacted]", text)


def spellings(secret: str) -> list[str]:
    """The ways a provider may write the key back: as is, URL-encoded, base64 (standard
    and URL-safe) at each of the three alignments, without the characters that depend on
    what precedes or follows the key."""
    if not secret:
        return []
    raw = secret.encode()
    found = {secret, quote(secret, safe="")}
    for pad, skip in ((b"", 0), (b"x", 2), (b"xx", 3)):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            encoded = encode(pad + raw).decode()
            found.add(encoded[skip : skip + 4 * (len(raw) // 3) - 4])
    return sorted(f for f in found if f)


def _without_runs(text: str, spelling: str) -> str:
    """`text` with every stretch covered by a MIN_ECHO-long piece of `spelling` (or the
    whole of a shorter one) replaced by "[redacted]"."""
    size = min(MIN_ECHO, len(spelling))
    pieces = {spelling[i : i + size] for i in range(len(spelling) - size + 1)}
    covered = [False] * len(text)
    for i in range(len(text) - size + 1):
        if text[i : i + size] in pieces:
            covered[i : i + size] = [True] * size
    out, i = [], 0
    while i < len(text):
        if covered[i]:
            while i < len(text) and covered[i]:
                i += 1
            out.append("[redacted]")
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    seconds = decimal(value)
    if seconds is not None:
        return float(seconds)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (moment - datetime.now(UTC)).total_seconds())


def error_info(body: Any) -> ErrorInfo:
    """Read OpenAI-, Anthropic-, Google- and Azure-style error bodies alike."""
    if not isinstance(body, dict):
        return ErrorInfo()
    error = body.get("error", body)
    if isinstance(error, str):
        return ErrorInfo(message=error)
    if not isinstance(error, dict):
        return ErrorInfo()
    reasons = tuple(
        str(d.get("reason"))
        for d in error.get("details") or []
        if isinstance(d, dict) and d.get("reason")
    )
    return ErrorInfo(
        code=str(error.get("code") or ""),
        type=str(error.get("type") or ""),
        status=str(error.get("status") or ""),
        reasons=reasons,
        message=str(error.get("message") or body.get("message") or "")[:300],
    )


class Adapter:
    """One provider: its key format, endpoint, authentication and error vocabulary."""

    name = ""
    title = ""
    default_base_url = ""
    key_pattern: re.Pattern[str] | None = None
    # Prefixes that identify this provider's keys beyond doubt (cross-provider check).
    distinctive: re.Pattern[str] | None = None
    base_url_required = False
    check_method = "GET"
    check_path = "/models"

    # -- requests --------------------------------------------------------------------
    def auth_headers(self, secret: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {secret}"}

    def check_params(self) -> dict[str, str]:
        return {}

    def base_url(self, configured: str) -> str:
        return (
            configured or settings.PROVIDER_BASE_URLS.get(self.name) or self.default_base_url
        ).rstrip("/")

    # What the provider's own SDK leaves out of its base URL and puts in each path
    # (Anthropic's SDK calls `/v1/messages` on `https://api.anthropic.com`).
    sdk_path_prefix = ""

    def proxy_base(self, configured: str) -> str:
        """The base URL a proxied path is appended to: the one the provider's SDK uses, so
        an SDK pointed at the proxy sends the paths it always sends."""
        return self.base_url(configured).removesuffix(self.sdk_path_prefix)

    def check(self, secret: str, base_url: str = "") -> CheckResult:
        """Ask the provider's cheapest authenticated endpoint whether `secret` works."""
        result = self._ask(secret, base_url)
        metrics.PROVIDER_CHECKS.labels(self.name, str(result.outcome)).inc()
        return result

    def _ask(self, secret: str, base_url: str) -> CheckResult:
        url = self.base_url(base_url) + self.check_path
        started = time.monotonic()
        try:  # the policy of now, not of when the key was stored
            destination = egress.pin(url)
        except ForbiddenBaseUrl:
            return _result(
                CheckOutcome.PROVIDER_UNAVAILABLE,
                None,
                "the egress policy refuses the base_url",
                started,
            )
        try:
            with httpx.Client(
                timeout=provider_timeout(), follow_redirects=False, verify=egress.tls_context()
            ) as client:
                headers = {
                    **self.auth_headers(secret),
                    "Accept": "application/json",
                    **destination.headers(),
                }
                response = client.request(
                    self.check_method,
                    destination.url,
                    headers=headers,
                    params=self.check_params(),
                    extensions=destination.extensions(),
                )
        except httpx.TimeoutException:
            return _result(CheckOutcome.PROVIDER_UNAVAILABLE, None, "timeout", started)
        except httpx.HTTPError as exc:
            return _result(
                CheckOutcome.PROVIDER_UNAVAILABLE,
                None,
                f"unreachable ({type(exc).__name__})",
                started,
            )
        try:
            body: Any = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = None
        outcome, reason = self.classify(response.status_code, body)
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        return _result(outcome, response.status_code, redact(reason, secret), started, retry_after)

    # -- answers ---------------------------------------------------------------------
    def classify(self, status: int, body: Any) -> tuple[CheckOutcome, str]:
        """Map an answer to an outcome and a reason, reading the error's type and not
        only the status."""
        if 200 <= status < 300:
            return self.classify_success(body)
        info = error_info(body)
        reason = _describe(status, info, body)
        return self.classify_error(status, info), reason

    def classify_success(self, body: Any) -> tuple[CheckOutcome, str]:
        if not isinstance(body, dict):
            return CheckOutcome.PROVIDER_UNAVAILABLE, "unreadable answer (not JSON)"
        return CheckOutcome.VALID, "ok"

    def classify_error(self, status: int, info: ErrorInfo) -> CheckOutcome:
        words = info.words()
        if status == 401:
            return CheckOutcome.INVALID
        if status == 402:
            return CheckOutcome.QUOTA_EXHAUSTED
        if status == 403:
            if any(w in words for w in ("region", "country", "territory", "location")):
                return CheckOutcome.REGION_BLOCKED
            return CheckOutcome.INSUFFICIENT_PERMISSIONS
        if status == 429:
            if "insufficient_quota" in words or "billing" in words:
                return CheckOutcome.QUOTA_EXHAUSTED
            return CheckOutcome.RATE_LIMITED
        return CheckOutcome.PROVIDER_UNAVAILABLE

    # -- key format ------------------------------------------------------------------
    def format_problem(self, secret: str) -> str | None:
        """Why `secret` cannot be this provider's key, or None. No network involved."""
        if self.key_pattern is not None and not self.key_pattern.fullmatch(secret):
            return f"does not look like {self.title} key"
        return None


def provider_timeout() -> httpx.Timeout:
    total = settings.PROVIDER_TIMEOUT_MS / 1000
    return httpx.Timeout(total, connect=min(total, 3.0))


def _result(
    outcome: CheckOutcome,
    status: int | None,
    reason: str,
    started: float,
    retry_after: float | None = None,
) -> CheckResult:
    duration = int((time.monotonic() - started) * 1000)
    return CheckResult(outcome, status, reason[:300], retry_after, duration)


def _describe(status: int, info: ErrorInfo, body: Any) -> str:
    if body is None:
        return f"HTTP {status} (unreadable body)"
    labels = dict.fromkeys(x for x in (info.type, info.status, info.code, *info.reasons) if x)
    parts = [f"HTTP {status}", *labels]
    text = " ".join(p for p in parts if p)
    return f"{text}: {info.message}" if info.message else text
