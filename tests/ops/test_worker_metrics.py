"""A Celery worker with KEYWARD_WORKER_METRICS_PORT serves the counters of its own processes,
as on Kubernetes, where a worker shares no metrics directory with a web server."""

from __future__ import annotations

import httpx
import pytest

from kms import tasks
from kms.actions import keys
from settings.celery import app
from tests.bao import free_port
from tests.celery_worker import Worker, wait_for
from tests.factories import make_tenant
from tests.kms.helpers import openai_key
from tests.kms.world import SYSTEM
from tests.ops.test_metrics import value

pytestmark = [pytest.mark.slow, pytest.mark.postgresql]  # a worker process shares the database


@pytest.mark.parametrize("store_config", ["local"], indirect=True)
def test_a_worker_serves_the_outcomes_of_the_checks_it_ran(
    committed_db, provider_stub, store_config, default_store, tmp_path
):
    port = free_port()
    own = {"KEYWARD_WORKER_METRICS_PORT": str(port), "KEYWARD_METRICS_DIR": str(tmp_path / "m")}
    worker = Worker(store_config, provider_stub.url, tmp_path / "worker.log", extra_env=own)
    try:
        key = keys.do_onboard_key(
            make_tenant(),
            keys.KeyInput("openai", "prod", openai_key()),
            validate=False,
            actor=SYSTEM,
        )
        provider_stub.answer(200)
        # A connection of its own: the app's shared pools may have been closed by a test of
        # broker outages that ran before this one in the same process.
        with app.connection_for_write() as connection, connection.Producer() as producer:
            tasks.check_key.apply_async((str(key.id),), queue=worker.queue, producer=producer)

        def checked() -> bool:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            return (
                value(text, "keyward_provider_checks_total", provider="openai", result="valid") == 1
            )

        wait_for(checked, what="the worker's count of the check")
    finally:
        worker.stop()
