"""Identifier rules. ASCII only, matched whole, so look-alike letters, slashes, dots and
trailing newlines never pass. Each rule is a pattern (anchored with `\\Z`, which the
OpenAPI document spells `$`) and a validator built on it."""

from __future__ import annotations

import re

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator

SLUG_PATTERN = r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z"
PRINCIPAL_NAME_PATTERN = r"^[a-z0-9](?:[a-z0-9._-]{0,61}[a-z0-9])?\Z"
SLUG = re.compile(SLUG_PATTERN, re.ASCII)
PRINCIPAL_NAME = re.compile(PRINCIPAL_NAME_PATTERN, re.ASCII)
SLUG_RULE = "Use 1-63 lowercase ASCII letters, digits and inner hyphens."
PRINCIPAL_NAME_RULE = "Use 1-63 lowercase ASCII letters, digits, and inner '.', '_' or '-'."

# For serializers: a RegexValidator is what the OpenAPI generator documents as a pattern.
# Display names: documented as a pattern (the OpenAPI generator spells \x as \u00, \Z as $).
NO_CONTROL_CHARACTERS = RegexValidator(
    r"^[^\x00-\x1f\x7f-\x9f]*\Z", "Control characters are not allowed.", "invalid"
)
slug_validator = RegexValidator(SLUG, SLUG_RULE, "invalid_slug")
principal_name_validator = RegexValidator(PRINCIPAL_NAME, PRINCIPAL_NAME_RULE, "invalid_name")


def validate_slug(value: str) -> None:
    if not isinstance(value, str) or not SLUG.match(value):
        raise ValidationError(SLUG_RULE, code="invalid_slug")


def validate_principal_name(value: str) -> None:
    if not isinstance(value, str) or not PRINCIPAL_NAME.match(value):
        raise ValidationError(PRINCIPAL_NAME_RULE, code="invalid_name")


# What a grant may say, checked alike by the API (POST /api/v1/grants) and the console.
GRANT_TENANT_PATTERN = "^(?:\\*|" + SLUG_PATTERN.removeprefix("^").removesuffix("\\Z") + ")\\Z"
grant_tenant_validator = RegexValidator(
    GRANT_TENANT_PATTERN, "A tenant slug, or * for every tenant.", "invalid"
)
# A model name as providers spell them ("gpt-4o-mini", "models/gemini-2.5-pro",
# "claude-sonnet-4-5-20250929"): printable ASCII without spaces.
MODEL_NAME_PATTERN = "^[!-~]+$"
MODEL_NAME_MAX = 200
MODELS_PER_GRANT = 50
model_name_validator = RegexValidator(
    MODEL_NAME_PATTERN.replace("$", "\\Z"), "Printable ASCII without spaces.", "invalid"
)
GRANT_TTL_MIN = 10
GRANT_TTL_TOO_LONG = "At most {max_value} (KEYWARD_TOKEN_MAX_TTL)."


def grant_ttl_max() -> int:
    """The longest TTL a new grant may carry: KEYWARD_TOKEN_MAX_TTL as configured now."""
    return int(settings.TOKEN_MAX_TTL)


def validate_grant_ttl(value: int) -> None:
    """A grant's longest token life, in seconds, within the bounds configured now."""
    if value < GRANT_TTL_MIN:
        raise ValidationError(f"At least {GRANT_TTL_MIN} seconds.", code="min_value")
    if value > grant_ttl_max():
        raise ValidationError(GRANT_TTL_TOO_LONG.format(max_value=grant_ttl_max()), "max_value")
