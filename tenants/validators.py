"""Identifier rules. ASCII only, matched whole, so look-alike letters, slashes, dots and
trailing newlines never pass. Each rule is a pattern (anchored with `\\Z`, which the
OpenAPI document spells `$`) and a validator built on it."""

from __future__ import annotations

import re

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
