"""The proxy under its production server, with stub providers that answer as OpenAI and
Anthropic document."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.proxy.providers import Providers
from tests.proxy.server import serve_proxy


@pytest.fixture
def providers() -> Iterator[Providers]:
    stub = Providers()
    yield stub
    stub.close()


@pytest.fixture
def keyward(committed_world: Any, providers: Providers, tmp_path: Path) -> Iterator[str]:
    """The server's address: the proxy, and the rest of the API through Django's ASGI."""
    base_urls = {"openai": providers.url + "/v1", "anthropic": providers.url + "/v1"}
    with serve_proxy(base_urls, tmp_path / "keyward.log") as url:
        yield url


@pytest.fixture
def proxy(keyward: str) -> str:
    return keyward + "/api/v1/proxy"
