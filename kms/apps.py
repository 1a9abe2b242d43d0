from django.apps import AppConfig


class KmsConfig(AppConfig):
    name = "kms"
    verbose_name = "Key management"
