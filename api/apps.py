from django.apps import AppConfig


class ApiConfig(AppConfig):
    name = "api"
    verbose_name = "HTTP API"

    def ready(self) -> None:
        # Importing registers the OpenAPI security scheme with drf-spectacular.
        from api import schema  # noqa: F401
