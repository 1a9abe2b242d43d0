"""Per-principal rate limits whose counters every replica shares (Redis or the database)."""

from __future__ import annotations

import pytest
import redis

from kms.models import RateCounter, ScopedToken
from tests.factories import client

pytestmark = pytest.mark.django_db


@pytest.fixture(params=["redis", "database"])
def limiter(request, settings):
    settings.RATE_LIMIT = (3, 60)
    if request.param == "redis":
        settings.REDIS_URL = "redis://127.0.0.1:6379/15"
    else:
        settings.REDIS_URL = ""
    return request.param


def test_the_fourth_request_in_a_window_gets_429_with_retry_after(world, limiter):
    api = client(world.secret)
    body = {"tenant": world.actors.tenant_a.slug, "provider": "openai", "scopes": ["release"]}
    statuses = [api.post("/api/v1/tokens", body, format="json").status_code for _ in range(4)]
    assert statuses == [201, 201, 201, 429]
    refused = api.post("/api/v1/tokens", body, format="json")
    assert refused.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert (
        client(world.stranger_secret).post("/api/v1/tokens", body, format="json").status_code == 403
    ), "another principal has its own budget"
    bucket = f"keyward:rate:{world.principal.id}:60:"
    if limiter == "redis":
        shared = redis.Redis.from_url("redis://127.0.0.1:6379/15")
        found = list(shared.scan_iter(match=bucket + "*"))
        assert found and int(shared.get(found[0]) or 0) == 5
        assert 0 < shared.ttl(found[0]) <= 61
    else:
        assert RateCounter.objects.get(bucket__startswith=bucket).count == 5


def test_scoped_tokens_count_against_their_principal(world, limiter):
    token = world.token()
    api = client(token)
    statuses = [api.post("/api/v1/exchange").status_code for _ in range(3)]
    assert statuses == [200, 200, 429]


@pytest.fixture
def redis_down(settings):
    from kms import ratelimit

    settings.RATE_LIMIT = (1, 60)
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    ratelimit._outage.since = 0.0
    yield
    ratelimit._outage.since = 0.0


def test_an_unreachable_redis_counts_in_the_database_and_logs_once(world, redis_down, caplog):
    statuses = [world.issue().status_code for _ in range(3)]
    assert statuses == [201, 429, 429], "the limit holds while Redis is down"
    assert RateCounter.objects.filter(bucket__contains=str(world.principal.id)).get().count == 3
    outage_lines = [r for r in caplog.records if "Redis unreachable" in r.getMessage()]
    assert len(outage_lines) == 1


def test_an_unreachable_redis_can_refuse_instead(world, redis_down, settings):
    settings.RATE_LIMIT_FALLBACK = "refuse"
    response = world.issue()
    assert response.status_code == 503, response.content
    assert response.json()["error"]["code"] == "rate_limiter_unavailable"
    assert response["Retry-After"]
    assert not ScopedToken.objects.exists()


def test_redis_is_tried_again_and_its_return_is_logged(world, redis_down, settings, caplog):
    from kms import ratelimit

    assert world.issue().status_code == 201  # counted in the database
    settings.RATE_LIMIT = (100, 60)
    settings.REDIS_URL = "redis://127.0.0.1:6379/15"
    ratelimit._outage.since -= ratelimit._RETRY_REDIS_AFTER  # the retry interval has passed
    assert world.issue().status_code == 201
    assert ratelimit._outage.since == 0.0
    assert any("reachable again" in r.getMessage() for r in caplog.records)


def test_zero_turns_the_limit_off(world, settings):
    settings.RATE_LIMIT = (0, 60)
    assert all(world.issue().status_code == 201 for _ in range(5))
    assert not RateCounter.objects.exists()


def test_the_token_purge_also_removes_spent_database_counters(world, settings):
    from datetime import timedelta

    from django.utils import timezone

    from kms import jobs

    settings.REDIS_URL = ""
    settings.RATE_LIMIT = (100, 60)
    assert world.issue().status_code == 201
    live = RateCounter.objects.get()
    spent = RateCounter.objects.create(
        bucket="keyward:rate:old:60:1", count=5, expires_at=timezone.now() - timedelta(seconds=1)
    )
    jobs.purge_expired_tokens()
    assert list(RateCounter.objects.values_list("bucket", flat=True)) == [live.bucket]
    assert not RateCounter.objects.filter(pk=spent.pk).exists()
