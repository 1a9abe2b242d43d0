"""Identifier rules. ASCII only, matched whole, so look-alike letters, slashes, dots and
trailing newlines never pass."""

from __future__ import annotations

import re

from django.core.exceptions import ValidationError

SLUG = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?", re.ASCII)
PRINCIPAL_NAME = re.compile(r"[a-z0-9](?:[a-z0-9._-]{0,61}[a-z0-9])?", re.ASCII)


def validate_slug(value: str) -> None:
    if not isinstance(value, str) or not SLUG.fullmatch(value):
        raise ValidationError(
            "Use 1-63 lowercase ASCII letters, digits and inner hyphens.", code="invalid_slug"
        )


def validate_principal_name(value: str) -> None:
    if not isinstance(value, str) or not PRINCIPAL_NAME.fullmatch(value):
        raise ValidationError(
            "Use 1-63 lowercase ASCII letters, digits, and inner '.', '_' or '-'.",
            code="invalid_name",
        )
