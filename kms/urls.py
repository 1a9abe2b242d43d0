from django.urls import path

from kms.api import token_views, views

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
    path(
        "tenants/<str:slug>/keys/<str:key_id>/tokens",
        token_views.KeyTokensView.as_view(),
        name="key-tokens",
    ),
    path("tokens", token_views.TokenIssueView.as_view(), name="token-issue"),
    path("tokens/introspect", token_views.IntrospectView.as_view(), name="token-introspect"),
    path("tokens/revoke", token_views.RevokeView.as_view(), name="token-revoke"),
    path(
        "tokens/<str:token_id>/revoke",
        token_views.AdminRevokeView.as_view(),
        name="token-admin-revoke",
    ),
    path("exchange", token_views.ExchangeView.as_view(), name="exchange"),
]
