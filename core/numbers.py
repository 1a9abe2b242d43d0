"""Reading decimal numbers out of untrusted text. `str.isdigit()` is true of superscripts
and of other scripts' digits, which `int()` then refuses or reads, and `int()` of more
than 4300 digits raises: every count, size or length a caller sends goes through here."""

from __future__ import annotations

MAX_DIGITS = 19  # below 10**19: more than any size, count or offset this service handles


def decimal(text: str, *, canonical: bool = False) -> int | None:
    """The value of `text` when it is an ASCII decimal of at most 19 digits (with no
    leading zero when `canonical`), else None."""
    if not 0 < len(text) <= MAX_DIGITS or not text.isascii() or not text.isdigit():
        return None
    if canonical and text[0] == "0" and text != "0":
        return None
    return int(text)
