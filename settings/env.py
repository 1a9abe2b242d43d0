"""Strict readers for configuration from the environment.

Every reader names the variable in its error, so a malformed value stops start-up with a
message an operator can act on. Secrets may also come from a file named by `NAME_FILE`.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import secrets
import sys
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured

TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off", ""})
# S3's rule for bucket names, which S3-compatible services follow too; botocore's for regions.
BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
REGION_NAME = re.compile(r"[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?")


class Env:
    """Reads typed values from a mapping (os.environ by default)."""

    def __init__(self, source: Mapping[str, str] | None = None) -> None:
        self.source = os.environ if source is None else source

    def raw(self, name: str) -> str | None:
        return self.source.get(name)

    def text(self, name: str, default: str = "") -> str:
        value = self.source.get(name)
        return default if value is None else value.strip()

    def secret(self, name: str) -> str | None:
        """A secret from `NAME` or from the file named by `NAME_FILE`, never both."""
        direct = self.source.get(name)
        path = self.source.get(f"{name}_FILE")
        if direct is not None and path is not None:
            raise ImproperlyConfigured(f"{name}: set either {name} or {name}_FILE, not both")
        if path is None:
            return direct.strip() if direct is not None else None
        try:
            return Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ImproperlyConfigured(
                f"{name}_FILE: cannot read {path!r} ({exc.strerror})"
            ) from None

    def flag(self, name: str, default: bool = False) -> bool:
        value = self.source.get(name)
        if value is None:
            return default
        word = value.strip().lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
        raise ImproperlyConfigured(f"{name}: expected true or false, got {value!r}")

    def number(
        self, name: str, default: int, *, minimum: int = 0, maximum: int | None = None
    ) -> int:
        value = self.source.get(name)
        if value is None or not value.strip():
            return default
        try:
            number = int(value.strip(), 10)
        except ValueError:
            raise ImproperlyConfigured(f"{name}: expected an integer, got {value!r}") from None
        if number < minimum or (maximum is not None and number > maximum):
            upper = "" if maximum is None else f" and at most {maximum}"
            raise ImproperlyConfigured(f"{name}: must be at least {minimum}{upper}, got {number}")
        return number

    def csv(self, name: str, default: list[str] | None = None) -> list[str]:
        value = self.source.get(name)
        if value is None:
            return list(default or [])
        return [item.strip() for item in value.split(",") if item.strip()]

    def choice(self, name: str, choices: tuple[str, ...], default: str) -> str:
        value = self.text(name, default)
        if value not in choices:
            raise ImproperlyConfigured(
                f"{name}: expected one of {', '.join(choices)}, got {value!r}"
            )
        return value


def parse_ring(name: str, value: str, *, min_bytes: int, decode: bool) -> dict[int, bytes]:
    """Parse a key ring `id:value,id:value`; ids are positive integers, the highest is current.

    With `decode`, each value is base64 (a master key); otherwise its UTF-8 bytes are used
    (a pepper) and must be at least `min_bytes` long.
    """
    ring: dict[int, bytes] = {}
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        ident, sep, material = item.partition(":")
        if not sep or not ident.isascii() or not ident.isdigit() or int(ident) < 1:
            raise ImproperlyConfigured(f'{name}: expected "id:value,..." with ids 1, 2, ...')
        key_id = int(ident)
        if key_id in ring:
            raise ImproperlyConfigured(f"{name}: id {key_id} appears twice")
        ring[key_id] = _ring_material(name, key_id, material.strip(), min_bytes, decode)
    if not ring:
        raise ImproperlyConfigured(f"{name}: no keys given")
    return ring


def _ring_material(name: str, key_id: int, material: str, min_bytes: int, decode: bool) -> bytes:
    if decode:
        try:
            data = base64.b64decode(material, validate=True)
        except (binascii.Error, ValueError):
            raise ImproperlyConfigured(f"{name}: key {key_id} is not valid base64") from None
        if len(data) != min_bytes:
            raise ImproperlyConfigured(f"{name}: key {key_id} must decode to {min_bytes} bytes")
        return data
    data = material.encode()
    if len(data) < min_bytes:
        raise ImproperlyConfigured(f"{name}: key {key_id} must be at least {min_bytes} characters")
    return data


def s3_location(name: str, value: str) -> tuple[str, str]:
    """The bucket and key prefix of `s3://bucket/prefix` (the prefix empty or ending in /).
    Errors never quote the value: a URL can carry credentials."""
    parts = urlsplit(value)
    prefix = parts.path.strip("/")
    if parts.scheme != "s3" or parts.query or parts.fragment or "//" in prefix:
        raise ImproperlyConfigured(f"{name}: expected s3://bucket or s3://bucket/prefix")
    if not BUCKET_NAME.fullmatch(parts.netloc):
        raise ImproperlyConfigured(
            f"{name}: not a bucket name (3-63 lower-case letters, digits, dots and hyphens)"
        )
    return parts.netloc, f"{prefix}/" if prefix else ""


def http_endpoint(name: str, value: str, *, with_path: bool = False) -> str:
    """An `http(s)://host[:port]` address with nothing after it (with `with_path`, a path
    and query may follow), or the empty string; never credentials or a fragment."""
    if not value:
        return ""
    expected = f"{name}: expected " + ("an https:// URL" if with_path else "https://host[:port]")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 (reading it checks it: a ValueError unless a number)
    except ValueError:
        raise ImproperlyConfigured(expected) from None
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.username is not None
        or (not with_path and (parts.path not in ("", "/") or parts.query))
        or parts.fragment
    ):
        raise ImproperlyConfigured(expected)
    return value if with_path else value.rstrip("/")


def generated_secret(directory: Path, filename: str, factory: str = "token") -> str:
    """Read, or create with mode 0600, a secret kept in the embedded data directory."""
    path = directory / filename
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    value = {
        "token": lambda: secrets.token_urlsafe(48),
        "ring": lambda: "1:" + secrets.token_urlsafe(48),
        "ring-key32": lambda: "1:" + base64.b64encode(secrets.token_bytes(32)).decode(),
    }[factory]()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process of the same box created it first
        return path.read_text(encoding="utf-8").strip()
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(value + "\n")
    return value


def warn(message: str) -> None:
    sys.stderr.write(f"keyward: WARNING: {message}\n")
