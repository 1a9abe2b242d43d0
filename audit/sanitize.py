"""Neutralising user-supplied text before it enters an event.

CR/LF, ANSI escape sequences, bidi overrides and other control or format characters are
replaced by visible `\\uXXXX` escapes, so no field can forge a line or reorder text in an
export or a terminal.
"""

from __future__ import annotations

import unicodedata
from typing import Any

_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
MAX_TEXT = 1024


def clean_text(value: str, limit: int = MAX_TEXT) -> str:
    """Escape every control, format or separator character; cut overlong text."""
    if value.isascii() and value.isprintable():
        return value[:limit]
    out = []
    for char in value:
        if unicodedata.category(char) in _UNSAFE_CATEGORIES:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return "".join(out)[:limit]


def clean_value(value: Any) -> Any:
    """Recursively clean strings and keys of a JSON-like value; other scalars pass through."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, bool) or value is None or isinstance(value, int):
        return value
    if isinstance(value, dict):
        return {clean_text(str(k), 128): clean_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean_value(item) for item in value]
    # Floats and anything else are stored as text so that hashing stays exact.
    return clean_text(str(value))
