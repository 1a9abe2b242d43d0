from django.urls import path

from audit.api import views

urlpatterns = [
    path("audit/events", views.EventListView.as_view(), name="audit-events"),
    path("audit/hmac", views.HmacView.as_view(), name="audit-hmac"),
]
