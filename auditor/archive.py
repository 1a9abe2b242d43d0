"""Where the latest signed checkpoint of each chain is kept outside the database, so that a
truncated, rolled-back or rewritten database contradicts it: in Vault's KV store (the
default store when it is Vault), or in a directory (`KEYWARD_AUDIT_CHECKPOINT_DIR`; the
embedded default keeps one under its data directory). Every replacement is a
compare-and-set on what the signer read, so two signers can never fork the record."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote, unquote

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

from audit import note
from core.errors import Conflict
from stores.base import SecretStore
from stores.exceptions import SecretMissing, StoreConflict
from stores.registry import DEFAULT_STORE, get_store

PREFIX = "_keyward/audit-checkpoints"


class ArchiveConflict(Conflict):
    code = "checkpoint_conflict"
    message = "Another signer replaced the checkpoint meanwhile; nothing was changed."


class ArchiveDamaged(note.NoteError):
    """The archive cannot show a chain's latest checkpoint: it was removed from under it."""


@dataclass(frozen=True)
class Held:
    """A chain's latest checkpoint as held, and the version a replacement must name."""

    note: str
    version: str


class Archive(Protocol):
    def latest(self, chain: str) -> Held | None: ...

    def replace(self, chain: str, note: str, previous: Held | None) -> None: ...

    def chains(self) -> list[str]: ...

    def describe(self) -> str: ...


class StoreArchive:
    """Checkpoints as versioned entries of a secret store (Vault KV v2: check-and-set on
    the version read), with an index of the chains it holds."""

    def __init__(self, store: SecretStore) -> None:
        self.store = store

    def describe(self) -> str:
        return f"secret store {self.store.name!r} at {PREFIX}/"

    def _read(self, path: str) -> tuple[str, int] | None:
        """The newest version, never an older one: falling back to the version before a
        destroyed one would be a rollback that nobody sees."""
        versions = self.store.versions(path)
        if not versions:
            return None
        newest = max(versions, key=lambda v: v.version)
        try:
            if newest.destroyed:
                raise SecretMissing()
            return self.store.get(path, newest.version), newest.version
        except SecretMissing:
            raise ArchiveDamaged(
                f"version {newest.version} of {path} in {self.describe()} is deleted or destroyed"
            ) from None

    def latest(self, chain: str) -> Held | None:
        found = self._read(f"{PREFIX}/chain/{chain}")
        return Held(found[0], str(found[1])) if found else None

    def replace(self, chain: str, note: str, previous: Held | None) -> None:
        if previous is None:
            self._index(chain)
        try:
            self.store.put(
                f"{PREFIX}/chain/{chain}",
                note,
                expected_version=int(previous.version) if previous else 0,
            )
        except StoreConflict:
            raise ArchiveConflict() from None

    def chains(self) -> list[str]:
        found = self._read(f"{PREFIX}/index")
        return sorted(json.loads(found[0])) if found else []

    def _index(self, chain: str) -> None:
        """Name the chain in the index before its first checkpoint is written, so a chain
        can never be held without being listed."""
        for _ in range(5):
            found = self._read(f"{PREFIX}/index")
            names = set(json.loads(found[0])) if found else set()
            if chain in names:
                return
            with contextlib.suppress(StoreConflict):
                self.store.put(
                    f"{PREFIX}/index",
                    json.dumps(sorted(names | {chain})),
                    expected_version=found[1] if found else 0,
                )
                return
        raise ArchiveConflict()


class DirectoryArchive:
    """One file per chain, replaced atomically (written beside, fsynced, renamed) under an
    exclusive lock, after checking that it still holds what the signer read."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def describe(self) -> str:
        return f"directory {self.root}"

    def _path(self, chain: str) -> Path:
        return self.root / (quote(chain, safe="") + ".checkpoint")

    def latest(self, chain: str) -> Held | None:
        try:
            note = self._path(chain).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        return Held(note, hashlib.sha256(note.encode()).hexdigest())

    def replace(self, chain: str, note: str, previous: Held | None) -> None:
        with self._locked():
            current = self.latest(chain)
            if (current and current.version) != (previous and previous.version):
                raise ArchiveConflict()
            path = self._path(chain)
            scratch = path.with_suffix(".tmp")
            with open(scratch, "w", encoding="utf-8") as out:
                out.write(note)
                out.flush()
                os.fsync(out.fileno())
            os.replace(scratch, path)
            directory = os.open(self.root, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)

    def chains(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(
            unquote(p.name.removesuffix(".checkpoint")) for p in self.root.glob("*.checkpoint")
        )

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(self.root / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


@lru_cache(maxsize=1)
def _archive(directory: str, backend: str) -> Archive:
    if directory:
        return DirectoryArchive(Path(directory))
    if backend == "vault":
        return StoreArchive(get_store(DEFAULT_STORE))
    return DirectoryArchive(settings.DATA_DIR / "audit-checkpoints")


def archive() -> Archive:
    """The configured archive of signed checkpoints."""
    return _archive(settings.AUDIT_CHECKPOINT_DIR, settings.SECRET_STORES["default"]["backend"])


def reset() -> None:
    _archive.cache_clear()


@receiver(setting_changed)
def _reset(setting: str, **kwargs: Any) -> None:
    if setting in ("SECRET_STORES", "AUDIT_CHECKPOINT_DIR"):
        reset()
