"""A provider stub that answers each request by its method and path, as an admin API
would, with failures queued ahead of the documented answers; and what admin adapter
tests share."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from typing import Any, TypeVar
from urllib.parse import quote

import pytest

from kms.providers.admin import AdminError
from tests.provider_stub import ProviderStub, Reply, Seen

S = TypeVar("S", bound=ProviderStub)


class RoutedStub(ProviderStub):
    """`route(seen)` answers each request; `fail(...)` puts refusals ahead of it."""

    def __init__(self) -> None:
        self.failures: list[tuple[str, str, Reply]] = []
        super().__init__()

    @property
    def reply(self) -> Reply:
        seen = self.seen[-1]
        for i, (path, method, failure) in enumerate(self.failures):
            if seen.path.endswith(path) and method in ("", seen.method):
                del self.failures[i]
                return failure
        return self.route(seen)

    @reply.setter
    def reply(self, value: Reply) -> None:
        return  # answers come from route()

    def route(self, seen: Seen) -> Reply:
        raise NotImplementedError

    def fail(
        self,
        status: int,
        body: Any,
        *,
        path: str = "",
        method: str = "",
        headers: dict[str, str] | None = None,
        times: int = 1,
        delay: float = 0.0,
    ) -> None:
        """Answer the next `times` requests whose path ends with `path` (made with
        `method`, when given) this way."""
        self.failures += [(path, method, Reply(status, body, headers or {}, delay))] * times

    def requests(self, method: str = "") -> list[Seen]:
        return [s for s in self.seen if not method or s.method == method]


def body_of(seen: Seen) -> Any:
    return json.loads(seen.body) if seen.body else None


def served(stub: S) -> Iterator[S]:
    """A fixture's body: the stub while the test runs, closed after."""
    try:
        yield stub
    finally:
        stub.close()


def refusal(call: Callable[[], object]) -> AdminError:
    """The AdminError that `call` raises."""
    with pytest.raises(AdminError) as refused:
        call()
    return refused.value


def echoed(secret: str, spelling: str) -> str:
    """How a provider may write a secret back: raw, URL-encoded or in base64."""
    if spelling == "url":
        return quote(secret, safe="")
    if spelling == "base64":
        return base64.b64encode(secret.encode()).decode()
    return secret


def problems_match(found: list[str], expected: list[str]) -> bool:
    """Whether check_settings found one problem per expected prefix, in order."""
    return len(found) == len(expected) and all(
        f.startswith(p) for f, p in zip(found, expected, strict=True)
    )
