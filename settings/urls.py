from django.urls import URLPattern, URLResolver, include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from settings import metrics, ops

api_v1: list[URLPattern | URLResolver] = [
    path("", include("tenants.urls")),
    path("", include("kms.urls")),
    path("", include("audit.urls")),
    path(
        "schema/",
        SpectacularAPIView.as_view(authentication_classes=[], permission_classes=[]),
        name="schema",
    ),
    path(
        "docs/",
        SpectacularSwaggerView.as_view(
            url_name="schema", authentication_classes=[], permission_classes=[]
        ),
        name="docs",
    ),
]

urlpatterns = [
    path("healthz", ops.healthz, name="healthz"),
    path("readyz", ops.readyz, name="readyz"),
    path("metrics", metrics.metrics, name="metrics"),
    path("api/v1/", include(api_v1)),
]

handler400 = "settings.errors.json_bad_request"
handler403 = "settings.errors.json_forbidden"
handler404 = "settings.errors.json_not_found"
handler500 = "settings.errors.json_server_error"
