from django.apps import AppConfig


class AuditorConfig(AppConfig):
    name = "auditor"
    verbose_name = "Audit exports and verification"
