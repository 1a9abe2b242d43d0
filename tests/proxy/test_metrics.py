"""Proxied calls under the production server (granian, another process) are counted, and
every process's /metrics sums what every process on the host counted."""

from __future__ import annotations

import httpx
import pytest

from api.proxy import ROUTE as PROXY_ROUTE
from tests.kms.test_canary import assert_absent
from tests.ops.test_metrics import scrape, value

ASK = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.slow
def test_proxied_calls_are_counted_across_processes(committed_world, providers, keyward, proxy):
    token = committed_world.token(scopes=["proxy"])
    calls, requests = "keyward_proxy_calls_total", "keyward_http_requests_total"
    answered = {"route": PROXY_ROUTE, "method": "POST", "status": "200"}
    refused = {"route": PROXY_ROUTE, "method": "GET", "status": "401"}
    before = scrape()
    for _ in range(2):
        response = httpx.post(
            f"{proxy}/openai/chat/completions",
            json=ASK,
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        assert response.status_code == 200, response.text
    bad = httpx.get(f"{proxy}/openai/models", headers={"Authorization": "Bearer kwt_x"})
    assert bad.status_code == 401
    after = scrape()  # this process, reading the server's samples
    ok = {"provider": "openai", "status_class": "2xx"}
    assert value(after, calls, **ok) >= value(before, calls, **ok) + 2
    assert value(after, requests, **answered) >= value(before, requests, **answered) + 2
    assert value(after, requests, **refused) >= value(before, requests, **refused) + 1
    served = httpx.get(f"{keyward}/metrics", timeout=10).text  # the server, reading ours
    assert value(served, "keyward_tokens_issued_total", outcome="issued") >= 1
    assert value(served, calls, **ok) >= 2
    for text in (after, served):
        assert_absent(token, text, "/metrics")
        assert_absent(committed_world.secret_a, text, "/metrics")
        assert committed_world.actors.tenant_a.slug not in text
