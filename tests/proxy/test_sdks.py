"""The official `openai` and `anthropic` SDKs, unchanged, pointed at the proxy with a
`kwt_` token as their API key: a plain and a streaming call each, against stubs that
answer as the providers document and record what they received."""

from __future__ import annotations

import json
import time
from typing import Any

import anthropic
import httpx
import openai
import pytest

from audit.models import AuditEvent
from tenants.actions import do_create_grant
from tests.kms.test_canary import assert_no_run, redis_dump
from tests.kms.world import SYSTEM, onboard_key

pytestmark = pytest.mark.slow

ANTHROPIC_KEY = "sk-ant-api03-" + "A1b2C3d4" * 11 + "-Q1w2E3AA"


def _no_caller_credential(headers: dict[str, str], token: str) -> None:
    assert token not in json.dumps(headers), "the caller's token never reaches the provider"
    assert "cookie" not in headers


def test_the_openai_sdk_calls_through_the_proxy_plain_and_streamed(
    committed_world, providers, proxy
):
    token = committed_world.token(scopes=["proxy"])
    client = openai.OpenAI(base_url=f"{proxy}/openai", api_key=token, max_retries=0)
    ask: dict[str, Any] = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    plain = client.chat.completions.create(**ask)
    assert plain.choices[0].message.content == "hello"
    streamed = client.chat.completions.create(
        **ask, stream=True, stream_options={"include_usage": True}
    )
    text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
    assert text == "hello"
    assert [path for path, _ in providers.seen] == ["/v1/chat/completions"] * 2
    for _, headers in providers.seen:
        assert headers["authorization"] == f"Bearer {committed_world.secret_a}"
        _no_caller_credential(headers, token)


def test_the_anthropic_sdk_calls_through_the_proxy_plain_and_streamed(
    committed_world, providers, proxy
):
    tenant = committed_world.actors.tenant_a
    onboard_key(tenant, ANTHROPIC_KEY, label="claude", provider="anthropic")
    do_create_grant(committed_world.principal, tenant, "anthropic", ["proxy"], 900, actor=SYSTEM)
    token = committed_world.token(provider="anthropic", scopes=["proxy"])
    client = anthropic.Anthropic(base_url=f"{proxy}/anthropic", api_key=token, max_retries=0)
    ask: dict[str, Any] = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 16,
        "messages": [{"role": "user", "content": "hi"}],
    }
    plain = client.messages.create(**ask)
    assert plain.content[0].text == "hello"
    with client.messages.stream(**ask) as stream:
        assert "".join(stream.text_stream) == "hello"
    assert [path for path, _ in providers.seen] == ["/v1/messages"] * 2
    events = AuditEvent.objects.filter(action="proxy.request").order_by("occurred_at")
    deadline = time.monotonic() + 10
    while events.count() < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    usages = [event.details["usage"] for event in events]
    assert usages == [{"input_tokens": 5, "output_tokens": 1}] * 2, usages
    for _, headers in providers.seen:
        assert headers["x-api-key"] == ANTHROPIC_KEY
        assert headers["anthropic-version"]  # the SDK's own, passed through
        assert "authorization" not in headers
        _no_caller_credential(headers, token)


def test_the_key_reaches_no_log_line_answer_or_event_of_the_live_server(
    committed_world, providers, proxy, tmp_path
):
    token = committed_world.token(scopes=["proxy"], max_uses=3)
    client = openai.OpenAI(base_url=f"{proxy}/openai", api_key=token, max_retries=0)
    ask: dict[str, Any] = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    answers = [client.chat.completions.with_raw_response.create(**ask).text]
    streamed = client.chat.completions.with_raw_response.create(**ask, stream=True)
    answers.append(streamed.http_response.read().decode())
    for path in ("/openai/models?key=1", "/openai/chat/completions", "/anthropic/v1/messages"):
        refused = httpx.post(proxy + path, headers={"Authorization": f"Bearer {token}"}, json=ask)
        answers.append(refused.text + repr(dict(refused.headers)))
    secret = committed_world.secret_a
    assert_no_run(secret, "\n".join(answers), "an answer")
    assert_no_run(secret, (tmp_path / "keyward.log").read_text(), "the server's log")
    assert_no_run(secret, repr(list(AuditEvent.objects.values())), "the audit log")
    assert_no_run(secret, redis_dump(), "Redis")
