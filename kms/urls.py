from django.urls import path

from kms.api import views

urlpatterns = [
    path("tenants/<str:slug>/keys", views.KeyListView.as_view(), name="key-list"),
    path("tenants/<str:slug>/keys/<str:key_id>", views.KeyDetailView.as_view(), name="key-detail"),
    path(
        "tenants/<str:slug>/keys/<str:key_id>/rotate",
        views.KeyRotateView.as_view(),
        name="key-rotate",
    ),
    path(
        "tenants/<str:slug>/keys/<str:key_id>/validate",
        views.KeyValidateView.as_view(),
        name="key-validate",
    ),
    path(
        "tenants/<str:slug>/keys/<str:key_id>/validations",
        views.KeyValidationsView.as_view(),
        name="key-validations",
    ),
]
