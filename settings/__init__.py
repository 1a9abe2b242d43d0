"""Keyward's Django project package. Importing the Celery app here makes every process
that loads the settings (web, worker, commands, tests) publish to the configured broker."""

from settings.celery import app as celery_app

__all__ = ("celery_app",)
