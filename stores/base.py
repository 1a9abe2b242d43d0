"""The secret-store interface every backend implements.

A secret lives at a path (one per provider key) and has numbered versions (one per key
version). Backends raise StoreUnavailable for anything that means "cannot answer now", so
callers fail closed, and never fall back to another store.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from core import asql


@dataclass(frozen=True)
class VersionInfo:
    version: int
    destroyed: bool


class SecretStore(ABC):
    """put / get / versions / destroy / purge / health over versioned secrets."""

    backend: str = ""

    def __init__(self, name: str) -> None:
        self.name = name

    @abstractmethod
    def put(self, path: str, secret: str, *, expected_version: int) -> int:
        """Write a new version; `expected_version` is the latest existing version (0 for a
        new path), checked-and-set so that a concurrent writer makes this fail. Returns the
        new version number."""

    @abstractmethod
    def get(self, path: str, version: int) -> str:
        """The secret of one version; SecretMissing if absent or destroyed."""

    async def aget(self, path: str, version: int) -> str:
        """`get` for code on an event loop; a store without a native one reads in a
        pool thread, whose database connection is looked after as a request's is."""
        return await asql.in_thread(self.get)(path, version)

    async def aclose(self) -> None:  # noqa: B027 - a store reading in a thread holds nothing
        """Close what `aget` holds open on the running event loop (at a server's shutdown)."""

    @abstractmethod
    def versions(self, path: str) -> list[VersionInfo]:
        """Every version the store knows at `path`, oldest first."""

    @abstractmethod
    def destroy(self, path: str, versions: list[int]) -> None:
        """Irrecoverably destroy these versions; destroying twice is not an error."""

    @abstractmethod
    def purge(self, path: str) -> None:
        """Remove everything at `path`: every version and what the store knows of them
        (a tenant moved to another store leaves nothing behind); purging twice is not an
        error."""

    @abstractmethod
    def health(self) -> bool:
        """True when the store can serve requests now."""
