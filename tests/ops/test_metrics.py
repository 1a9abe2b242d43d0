"""/metrics: the counters and histograms of every process, the Celery queue depth and the
database gauges, in one exposition; labels that never carry a path, a name or a secret.
Test workers share the metrics directory, so a counter is asserted to have grown by at
least what a test did."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from django.conf import settings
from django.test import Client
from kombu import Connection
from prometheus_client.parser import text_string_to_metric_families

from kms.actions import keys
from kms.models import ScopedToken
from notify import webhooks
from settings.celery import app
from tests import provider_stub as docs
from tests.kms.test_canary import assert_absent
from tests.kms.world import SYSTEM

ROOT = Path(__file__).resolve().parent.parent.parent
KEYS_ROUTE = "/api/v1/tenants/<tenant_slug:slug>/keys"


def scrape(client: Client | None = None) -> str:
    response = (client or Client()).get("/metrics")
    assert response.status_code == 200, response.content
    return response.content.decode()


def value(text: str, name: str, **labels: str) -> float:
    """The sample `name` with exactly `labels`, or 0 when there is none."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


@pytest.mark.django_db
def test_requests_are_counted_by_route_template_never_by_path(actors):
    api, slug = actors.as_("alice"), actors.tenant_a.slug
    labels = {"route": KEYS_ROUTE, "method": "GET", "status": "200"}
    before = scrape()
    stray = "/nothing-" + secrets.token_hex(8)
    assert api.get(f"/api/v1/tenants/{slug}/keys").status_code == 200
    assert api.get(stray).status_code == 404
    assert api.generic("BREW", f"/api/v1/tenants/{slug}/keys").status_code == 405
    after = scrape()
    total = "keyward_http_requests_total"
    assert value(after, total, **labels) >= value(before, total, **labels) + 1
    unmatched = {"route": "unmatched", "method": "GET", "status": "404"}
    assert value(after, total, **unmatched) >= value(before, total, **unmatched) + 1
    assert value(after, total, route=KEYS_ROUTE, method="other", status="405") >= 1
    for leaked in (slug, stray, "BREW"):
        assert leaked not in after


@pytest.mark.django_db
def test_request_latency_is_a_histogram_with_its_buckets(actors):
    actors.as_("alice").get(f"/api/v1/tenants/{actors.tenant_a.slug}/keys")
    text = scrape()
    name = "keyward_http_request_duration_seconds"
    labels = {"route": KEYS_ROUTE, "method": "GET"}
    for bound in ("0.005", "0.1", "1.0", "120.0", "+Inf"):
        assert f'{name}_bucket{{le="{bound}",method="GET",route="{KEYS_ROUTE}"}}' in text
    assert value(text, f"{name}_count", **labels) >= 1
    assert value(text, f"{name}_sum", **labels) > 0
    assert value(text, f"{name}_bucket", le="+Inf", **labels) == value(
        text, f"{name}_count", **labels
    )


@pytest.mark.django_db
def test_token_issues_refusals_and_exchanges_are_counted(world):
    issued, exchanged = "keyward_tokens_issued_total", "keyward_exchanges_total"
    before = scrape()
    token = world.token()
    refused = world.issue(tenant="no-such-tenant")
    code = refused.json()["error"]["code"]
    assert world.api(token).post("/api/v1/exchange").status_code == 200
    proxy_only = world.token(scopes=["proxy"])
    assert world.api(proxy_only).post("/api/v1/exchange").status_code == 403
    after = scrape()
    assert value(after, issued, outcome="issued") >= value(before, issued, outcome="issued") + 2
    assert value(after, issued, outcome=code) >= value(before, issued, outcome=code) + 1
    assert value(after, exchanged, outcome="released") >= (
        value(before, exchanged, outcome="released") + 1
    )
    assert value(after, exchanged, outcome="insufficient_scope") >= (
        value(before, exchanged, outcome="insufficient_scope") + 1
    )


@pytest.mark.django_db
def test_provider_checks_are_counted_by_provider_and_outcome(world, provider_stub):
    name = "keyward_provider_checks_total"
    before = scrape()
    provider_stub.answer(200)
    keys.do_validate_key(world.key_a, actor=SYSTEM)
    provider_stub.answer(401, docs.OPENAI_INVALID)
    keys.do_validate_key(world.key_a, actor=SYSTEM)
    provider_stub.answer(503, {"error": {"message": "down"}})
    keys.do_validate_key(world.key_a, actor=SYSTEM)
    after = scrape()
    for result in ("valid", "invalid", "provider_unavailable"):
        grown = value(after, name, provider="openai", result=result)
        assert grown >= value(before, name, provider="openai", result=result) + 1, result


@pytest.mark.django_db
def test_webhook_failures_are_counted_until_the_delivery_gives_up(world, settings):
    settings.WEBHOOKS = [{"url": "http://[::1", "secret": "z" * 20}]  # not a valid URL
    settings.WEBHOOK_MAX_ATTEMPTS = 2
    name = "keyward_webhook_delivery_failures_total"
    before = scrape()
    (delivery,) = webhooks.queue("key.invalid", {"key_id": str(world.key_a.id)})
    webhooks.deliver(delivery.pk)
    webhooks.deliver(delivery.pk)
    after = scrape()
    for outcome in ("retrying", "failed"):
        assert value(after, name, outcome=outcome) >= value(before, name, outcome=outcome) + 1


@pytest.mark.django_db
def test_the_counts_of_another_process_are_summed_in(world):
    """A second Python process, started like any Keyward process, counts issued tokens into
    the same directory; this process's /metrics includes them."""
    name = "keyward_tokens_issued_total"
    before = value(scrape(), name, outcome="issued")
    script = "from core import metrics; metrics.TOKENS_ISSUED.labels('issued').inc(1000)"
    env = {**os.environ, "KEYWARD_DATA_DIR": str(settings.DATA_DIR)}
    subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", script],
        cwd=ROOT, env=env, check=True, timeout=60, capture_output=True,
    )  # fmt: skip
    assert value(scrape(), name, outcome="issued") >= before + 1000


@pytest.mark.django_db
def test_the_queue_depth_is_the_length_of_the_redis_queue(settings):
    if not app.conf.broker_url.startswith("redis://"):
        pytest.skip("the tests' broker is not Redis")
    queue = "metrics-" + secrets.token_hex(4)
    settings.CELERY_BROKER_URL = app.conf.broker_url
    settings.CELERY_TASK_DEFAULT_QUEUE = queue
    try:
        for _ in range(3):
            app.send_task("keyward.kms.purge_expired_tokens", queue=queue)
        app.send_task("keyward.kms.purge_expired_tokens", queue=queue, priority=9)
        assert redis.Redis.from_url(app.conf.broker_url).llen(queue) >= 3
        assert value(scrape(), "keyward_celery_queue_depth", queue=queue) == 4
    finally:
        client = redis.Redis.from_url(app.conf.broker_url)
        client.delete(queue, *(f"{queue}\x06\x16{p}" for p in (3, 6, 9)))


@pytest.mark.django_db
def test_the_queue_depth_counts_the_files_of_the_embedded_broker(settings, tmp_path):
    queue = "metrics-" + secrets.token_hex(4)
    options = {
        "data_folder_in": str(tmp_path),
        "data_folder_out": str(tmp_path),
        "control_folder": str(tmp_path / "control"),
    }
    settings.CELERY_BROKER_URL = "filesystem://"
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = options
    settings.CELERY_TASK_DEFAULT_QUEUE = queue
    with Connection("filesystem://", transport_options=options) as connection:
        waiting = connection.SimpleQueue(queue)
        for n in range(2):
            waiting.put({"n": n})
        waiting.close()
    assert value(scrape(), "keyward_celery_queue_depth", queue=queue) == 2


@pytest.mark.django_db
def test_a_broker_that_does_not_answer_leaves_the_queue_depth_out(settings):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"
    text = scrape()
    assert "keyward_celery_queue_depth" not in text
    assert "keyward_tokens_live" in text


@pytest.mark.django_db
def test_no_label_carries_a_secret_a_token_or_a_name(world, provider_stub):
    token = world.token()
    provider_stub.answer(200)
    keys.do_validate_key(world.key_a, actor=SYSTEM)
    world.api(token).post("/api/v1/exchange")
    world.api(token).get(f"/api/v1/tokens/{token}")  # a token in a path that matches nothing
    issued = ScopedToken.objects.get()
    text = scrape()
    assert_absent(world.secret_a, text, "/metrics")
    assert_absent(token, text, "/metrics")
    named = (
        issued.key_id,
        str(issued.id),
        str(world.key_a.id),
        world.actors.tenant_a.slug,
        world.actors.tenant_a.name,
        world.principal.name,
    )
    for value_ in named:
        assert value_ not in text
