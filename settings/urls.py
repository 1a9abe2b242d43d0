from django.urls import include, path
from django.views.generic import RedirectView

from ops import metrics, views

urlpatterns = [
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
    path("metrics", metrics.metrics, name="metrics"),
    path("api/v1/", include("api.urls")),
    path("console/", include("console.urls")),
    path("", RedirectView.as_view(url="/console/", permanent=False), name="root"),
]

handler400 = "api.errors.json_bad_request"
handler403 = "api.errors.json_forbidden"
handler404 = "api.errors.json_not_found"
handler500 = "api.errors.json_server_error"
