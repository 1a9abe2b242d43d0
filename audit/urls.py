from django.urls import path

from audit.api import views

urlpatterns = [
    path("audit/events", views.EventListView.as_view(), name="audit-events"),
    path("audit/hmac", views.HmacView.as_view(), name="audit-hmac"),
    path("audit/export", views.ExportView.as_view(), name="audit-export"),
    path("audit/public-key", views.PublicKeyView.as_view(), name="audit-public-key"),
]
