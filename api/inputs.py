"""Strict JSON bodies for the plain hot-path views: one declaration of each body's fields
both checks a request and describes it in the OpenAPI document, so the two cannot drift.

The rules are DRF's as the admin API applies them (unknown fields refused by name, JSON
types exact, NUL and lone surrogates refused), and the refusal has the same shape:
400 `invalid` with the messages under `error.fields`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.http import HttpRequest

from core.errors import DomainError, InvalidInput
from tenants.validators import MODEL_NAME_MAX, MODEL_NAME_PATTERN

_SURROGATE = re.compile("[\ud800-\udfff]")


class Invalid(Exception):
    """One field's value is refused; the message goes to the caller."""


class MalformedBody(DomainError):
    code = "malformed_body"
    message = "The request body is not valid JSON."


class UnsupportedMediaType(DomainError):
    status = 415
    code = "unsupported_media_type"
    message = "Send application/json."


@dataclass(frozen=True)
class Text:
    max_length: int
    help: str = ""
    pattern: str = ""  # anchored with ^ and $, in the subset Python and ECMA agree on

    def clean(self, value: Any) -> str:
        if not isinstance(value, str):
            raise Invalid("Not a valid string.")
        if "\x00" in value:
            raise Invalid("Null characters are not allowed.")
        if _SURROGATE.search(value):
            raise Invalid("Surrogate characters are not allowed.")
        if not value:
            raise Invalid("This field may not be blank.")
        if len(value) > self.max_length:
            raise Invalid(f"Ensure this field has no more than {self.max_length} characters.")
        if self.pattern and not re.fullmatch(self.pattern.removesuffix("$"), value):
            raise Invalid(f"Must match {self.pattern}.")
        return value

    def schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "string", "minLength": 1, "maxLength": self.max_length}
        return schema | ({"pattern": self.pattern} if self.pattern else {})


@dataclass(frozen=True)
class Choice:
    choices: Sequence[str]
    unknown: str = ""
    help: str = ""

    def clean(self, value: Any) -> str:
        if isinstance(value, str) and value in self.choices:
            return value
        shown = str(value)[:40] if isinstance(value, str | int | float) else type(value).__name__
        raise Invalid(self.unknown or f'"{shown}" is not a valid choice.')

    def schema(self) -> dict[str, Any]:
        return {"type": "string", "enum": list(self.choices)}


@dataclass(frozen=True)
class Integer:
    minimum: int
    maximum: int = 2**31 - 1
    help: str = ""
    # A setting that caps the value. The service refuses past it with its own code (and
    # audits the refusal); the document states it as the maximum.
    cap: str = ""

    def clean(self, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise Invalid("A valid integer is required.")
        if value < self.minimum:
            raise Invalid(f"Ensure this value is greater than or equal to {self.minimum}.")
        if value > self.maximum:
            raise Invalid(f"Ensure this value is less than or equal to {self.maximum}.")
        return value

    def schema(self) -> dict[str, Any]:
        maximum = int(getattr(settings, self.cap)) if self.cap else self.maximum
        return {"type": "integer", "minimum": self.minimum, "maximum": maximum}


@dataclass(frozen=True)
class ListOf:
    """A JSON list of `item`s, between `min_items` and `max_items` long."""

    item: Choice | Text
    min_items: int
    max_items: int
    help: str = ""

    def clean(self, value: Any) -> list[str]:
        if not isinstance(value, list):
            raise Invalid("Expected a list of items.")
        if not self.min_items <= len(value) <= self.max_items:
            raise Invalid(
                f"Ensure this field has between {self.min_items} and {self.max_items} elements."
            )
        return [self.item.clean(each) for each in value]

    def schema(self) -> dict[str, Any]:
        return {
            "type": "array",
            "items": self.item.schema(),
            "minItems": self.min_items,
            "maxItems": self.max_items,
        }


FieldType = Text | Choice | Integer | ListOf


@dataclass(frozen=True)
class Body:
    """A JSON object body: `required` and `optional` fields, nothing else."""

    required: Mapping[str, FieldType] = field(default_factory=dict)
    optional: Mapping[str, FieldType] = field(default_factory=dict)

    def clean(self, data: Any) -> dict[str, Any]:
        """The validated values; InvalidInput naming every refused field otherwise."""
        if not isinstance(data, dict):
            raise InvalidInput(fields={"non_field_errors": ["Expected a JSON object."]})
        errors: dict[str, list[str]] = {
            name: ["Unknown field."]
            for name in sorted(set(data) - set(self.required) - set(self.optional))
        }
        values: dict[str, Any] = {}
        for name, kind in {**self.required, **self.optional}.items():
            if name not in data:
                if name in self.required:
                    errors[name] = ["This field is required."]
                continue
            try:
                values[name] = kind.clean(data[name])
            except Invalid as refused:
                errors[name] = [str(refused)]
        if errors:
            raise InvalidInput(fields=errors)
        return values

    def schema(self) -> dict[str, Any]:
        """The body's JSON Schema, for the OpenAPI document."""
        properties = {}
        for name, kind in {**self.required, **self.optional}.items():
            properties[name] = kind.schema() | ({"description": kind.help} if kind.help else {})
        described: dict[str, Any] = {
            "type": "object",
            "properties": properties,
            "additionalProperties": False,
        }
        if self.required:
            described["required"] = list(self.required)
        return described


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _no_bad_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object whose keys hold no NUL and no lone surrogate: such a key could not be
    named back in an error message, stored or logged safely."""
    for key, _ in pairs:
        if "\x00" in key or _SURROGATE.search(key):
            raise ValueError("a key holds a NUL or a lone surrogate")
    return dict(pairs)


def strict_json(raw: bytes) -> Any:
    """Parse a body as strict JSON (UTF-8, no NaN or Infinity, keys without NUL or lone
    surrogates, nesting Python can parse); MalformedBody otherwise."""
    try:
        return json.loads(
            raw.decode("utf-8"), parse_constant=_no_constants, object_pairs_hook=_no_bad_keys
        )
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise MalformedBody() from None


def json_body(request: HttpRequest) -> Any:
    """The request's JSON body (an empty body reads as `{}`); 415 for another media type,
    400 `malformed_body` for anything that is not strict JSON."""
    raw = request.body
    if not raw:
        return {}
    if request.content_type != "application/json":
        raise UnsupportedMediaType()
    return strict_json(raw)


MODEL_NAME = Text(MODEL_NAME_MAX, pattern=MODEL_NAME_PATTERN)
