"""Liveness and readiness."""

from __future__ import annotations

import pytest
from django.test import override_settings

from settings.celery import app


def test_healthz_touches_nothing(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_readyz_is_200_when_database_store_and_broker_answer(client):
    response = client.get("/readyz")
    assert response.status_code == 200, response.content
    assert response.json()["checks"] == {"database": "ok", "secret_store": "ok", "broker": "ok"}


@pytest.mark.django_db
def test_readyz_names_a_broker_that_is_down(client, monkeypatch):
    monkeypatch.setattr(app.conf, "broker_url", "redis://127.0.0.1:1/0")
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["down"] == ["broker"]
    assert response["Retry-After"]


@pytest.mark.django_db
def test_readyz_names_a_secret_store_without_keys(client):
    with override_settings(MASTER_KEYS={}):
        response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["down"] == ["secret_store"]


@pytest.mark.django_db
def test_metrics_are_prometheus_text_without_names_or_secrets(client, world):
    token = world.token()
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    text = response.content.decode()
    assert 'keyward_provider_keys{status="active"} 2' in text
    assert "keyward_tokens_live 1" in text
    for value in (token, world.secret_a, world.actors.tenant_a.slug, world.principal.name):
        assert value not in text
