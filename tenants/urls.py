from django.urls import path

from tenants.api import grant_views, views

urlpatterns = [
    path("tenants", views.TenantListView.as_view(), name="tenant-list"),
    path("tenants/<str:slug>", views.TenantDetailView.as_view(), name="tenant-detail"),
    path("principals", views.PrincipalListView.as_view(), name="principal-list"),
    path(
        "principals/<str:principal_id>",
        views.PrincipalDetailView.as_view(),
        name="principal-detail",
    ),
    path(
        "principals/<str:principal_id>/rotate-secret",
        views.PrincipalRotateSecretView.as_view(),
        name="principal-rotate-secret",
    ),
    path("grants", grant_views.GrantListView.as_view(), name="grant-list"),
    path("grants/<str:grant_id>", grant_views.GrantDetailView.as_view(), name="grant-detail"),
]
