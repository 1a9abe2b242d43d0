"""The Python client (`keyward_client`) against the production server: tokens issued
once and reused, renewed before they expire, replaced after a revocation; the official
SDKs through the proxy with it, synchronous and asyncio; a key released by exchange."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from audit.models import AuditEvent
from keyward_client import Keyward, KeywardError
from kms.actions import tokens
from kms.models import ScopedToken
from tests.kms.test_canary import assert_no_run
from tests.kms.world import SYSTEM

pytestmark = pytest.mark.slow
ASK: dict[str, Any] = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


def issued() -> int:
    return AuditEvent.objects.filter(action="token.issued").count()


def test_the_openai_sdk_goes_through_the_proxy_with_one_token(committed_world, providers, keyward):
    kw = Keyward(keyward, client_secret=committed_world.secret)
    gpt = openai.OpenAI(**kw.sdk(committed_world.actors.tenant_a.slug, "openai"), max_retries=0)
    assert gpt.chat.completions.create(**ASK).choices[0].message.content == "hello"
    streamed = gpt.chat.completions.create(**ASK, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == "hello"
    assert issued() == 1, "the token is kept and reused"
    for _, headers in providers.seen:
        assert headers["authorization"] == f"Bearer {committed_world.secret_a}"
        assert "x-api-key" not in headers
    assert "kwp_" not in repr(kw) and committed_world.secret not in repr(kw)


def test_a_token_is_renewed_before_it_expires(committed_world, keyward):
    # 11 s to live, renewed with 10 s left: one second after it was issued, a new one.
    kw = Keyward(keyward, client_secret=committed_world.secret, ttl_seconds=11)
    tenant = committed_world.actors.tenant_a.slug
    first = kw.token(tenant, "openai")
    assert kw.token(tenant, "openai") == first
    assert issued() == 1
    time.sleep(1.2)
    renewed = kw.token(tenant, "openai")
    assert renewed != first
    assert issued() == 2
    introspected = httpx.post(
        f"{keyward}/api/v1/tokens/introspect",
        json={"token": first},
        headers={"Authorization": f"Bearer {committed_world.secret}"},
    )
    assert introspected.json()["active"] is True, "renewed before it expired"


def test_a_revoked_token_is_replaced_once(committed_world, providers, keyward):
    kw = Keyward(keyward, client_secret=committed_world.secret)
    gpt = openai.OpenAI(**kw.sdk(committed_world.actors.tenant_a.slug, "openai"), max_retries=0)
    gpt.chat.completions.create(**ASK)
    tokens.do_revoke_token(ScopedToken.objects.get(), actor=SYSTEM)
    assert gpt.chat.completions.create(**ASK).choices[0].message.content == "hello"
    assert issued() == 2
    assert len(providers.seen) == 2


def test_the_asyncio_sdk_shares_one_token_between_tasks(committed_world, providers, keyward):
    kw = Keyward(keyward, client_secret=committed_world.secret)

    async def calls() -> list[str]:
        gpt = openai.AsyncOpenAI(
            **kw.async_sdk(committed_world.actors.tenant_a.slug, "openai"), max_retries=0
        )
        answers = await asyncio.gather(*(gpt.chat.completions.create(**ASK) for _ in range(5)))
        return [str(a.choices[0].message.content) for a in answers]

    assert asyncio.run(calls()) == ["hello"] * 5
    assert issued() == 1


def test_exchange_releases_the_key_and_a_refusal_names_its_code(committed_world, keyward):
    kw = Keyward(keyward, client_secret=committed_world.secret)
    released = kw.exchange(committed_world.actors.tenant_a.slug, "openai")
    assert released.api_key == committed_world.secret_a
    assert released.key_id == str(committed_world.key_a.id)
    assert_no_run(committed_world.secret_a, repr(released), "the released key's repr")
    with pytest.raises(KeywardError) as refused:
        kw.exchange(committed_world.actors.tenant_b.slug, "openai")
    assert (refused.value.status, refused.value.code) == (403, "no_grant")
    assert refused.value.request_id


def test_the_readme_example_runs_as_written(committed_world, providers, keyward):
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("Python client shipped with Keyward") :]
    start = section.index("```python\n") + len("```python\n")
    example = section[start : section.index("\n```", start)]
    assert len(example.strip().splitlines()) <= 6
    example = example.replace("http://127.0.0.1:8000", keyward)
    example = example.replace("http://127.0.0.1:8001", keyward)
    example = example.replace('"acme"', repr(committed_world.actors.tenant_a.slug))
    exec(compile(example, "README.md", "exec"), {"secret": committed_world.secret})  # noqa: S102
    assert [path for path, _ in providers.seen] == ["/v1/chat/completions"]
