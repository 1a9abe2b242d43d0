"""The Celery application: configured from Django settings (CELERY_* names)."""

import os
from typing import Any

from celery import Celery, Task
from celery.signals import (
    beat_init,
    before_task_publish,
    task_postrun,
    task_prerun,
    worker_init,
    worker_process_init,
    worker_process_shutdown,
)
from django.conf import settings

from core.context import (
    Origin,
    bound_origin_or_none,
    enter_origin,
    leave_origin,
    new_request_id,
    well_formed_request_id,
)
from ops import tracing

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings.settings")

app = Celery("keyward")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@task_prerun.connect
@task_postrun.connect
def _fresh_connections(**kwargs: object) -> None:
    """Drop database connections that broke or aged out, before and after every task (never
    one inside a transaction, as when a task runs eagerly within a caller's)."""
    from django.db import connections

    for connection in connections.all(initialized_only=True):
        if not connection.in_atomic_block:
            connection.close_if_unusable_or_obsolete()


REQUEST_ID_HEADER = "keyward_request_id"


@before_task_publish.connect
def _carry_request_id(headers: dict[str, Any] | None = None, **kwargs: object) -> None:
    """A task enqueued while a request runs carries that request's id (an id, never
    anything the request held), so its log lines and audit events name the request."""
    origin = bound_origin_or_none()
    if origin is not None and headers is not None:
        headers.setdefault(REQUEST_ID_HEADER, origin.request_id)


@task_prerun.connect
def _bind_request_id(task: Task[Any, Any] | None = None, **kwargs: object) -> None:
    if task is None:
        return
    # An eager task runs inside its caller's request: it keeps that request's id.
    outer = bound_origin_or_none()
    carried = task.request.get(REQUEST_ID_HEADER)
    if not well_formed_request_id(carried):  # from the broker: checked as a header is
        carried = outer.request_id if outer else new_request_id()
    task.request.keyward_entered = enter_origin(Origin(request_id=str(carried)))  # type: ignore[attr-defined]


@task_postrun.connect
def _unbind_request_id(task: Task[Any, Any] | None = None, **kwargs: object) -> None:
    entered = getattr(task.request, "keyward_entered", None) if task is not None else None
    if entered is not None:
        leave_origin(entered)  # the caller's origin and actor, for an eager task


@worker_process_init.connect
@beat_init.connect
def _start_tracing(**kwargs: Any) -> None:
    """Tracing in each pool process of a worker (started after the fork, so that no
    exporter thread or connection is shared), and in beat."""
    tracing.setup()


@worker_init.connect
def _start_tracing_in_worker(sender: Any = None, **kwargs: Any) -> None:
    """Tracing in a worker whose pool runs tasks in this process (solo, threads)."""
    if "prefork" not in str(getattr(sender, "pool_cls", "prefork")):
        tracing.setup()


@worker_process_shutdown.connect
def _forget_process_metrics(pid: int | None = None, **kwargs: object) -> None:
    """A pool process that exits leaves its counters to /metrics, and no gauge behind."""
    from core import metrics  # after the settings, which set the metrics directory

    metrics.process_exited(pid or os.getpid())


@worker_init.connect
def _serve_worker_metrics(**kwargs: object) -> None:
    """With KEYWARD_WORKER_METRICS_PORT, the worker's main process serves the counters of its
    pool processes at http://<host>:<port>/metrics."""
    if settings.WORKER_METRICS_PORT:
        from core import metrics  # after the settings, which set the metrics directory

        metrics.serve(settings.WORKER_METRICS_PORT)
