"""The Celery application: configured from Django settings (CELERY_* names)."""

import os

from celery import Celery
from celery.signals import task_postrun, task_prerun

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings.settings")

app = Celery("keyward")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@task_prerun.connect
@task_postrun.connect
def _fresh_connections(**kwargs: object) -> None:
    """Drop database connections that broke or aged out, before and after every task."""
    from django.db import close_old_connections

    close_old_connections()
