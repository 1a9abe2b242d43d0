"""Routes of /api/v1/."""

from django.urls import URLPattern, URLResolver, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from api.views import audit, grants, keys, tenants, tokens

urlpatterns: list[URLPattern | URLResolver] = [
    path("tenants", tenants.TenantListView.as_view(), name="tenant-list"),
    path("tenants/<str:slug>", tenants.TenantDetailView.as_view(), name="tenant-detail"),
    path("principals", tenants.PrincipalListView.as_view(), name="principal-list"),
    path(
        "principals/<str:principal_id>",
        tenants.PrincipalDetailView.as_view(),
        name="principal-detail",
    ),
    path(
        "principals/<str:principal_id>/rotate-secret",
        tenants.PrincipalRotateSecretView.as_view(),
        name="principal-rotate-secret",
    ),
    path("grants", grants.GrantListView.as_view(), name="grant-list"),
    path("grants/<str:grant_id>", grants.GrantDetailView.as_view(), name="grant-detail"),
    path("tenants/<str:slug>/keys", keys.KeyListView.as_view(), name="key-list"),
    path("tenants/<str:slug>/keys/<str:key_id>", keys.KeyDetailView.as_view(), name="key-detail"),
    path(
        "tenants/<str:slug>/keys/<str:key_id>/rotate",
        keys.KeyRotateView.as_view(),
        name="key-rotate",
    ),
    path(
        "tenants/<str:slug>/keys/<str:key_id>/validate",
        keys.KeyValidateView.as_view(),
        name="key-validate",
    ),
    path(
        "tenants/<str:slug>/keys/<str:key_id>/validations",
        keys.KeyValidationsView.as_view(),
        name="key-validations",
    ),
    path(
        "tenants/<str:slug>/keys/<str:key_id>/tokens",
        tokens.KeyTokensView.as_view(),
        name="key-tokens",
    ),
    path("tokens", tokens.TokenIssueView.as_view(), name="token-issue"),
    path("tokens/introspect", tokens.IntrospectView.as_view(), name="token-introspect"),
    path("tokens/revoke", tokens.RevokeView.as_view(), name="token-revoke"),
    path(
        "tokens/<str:token_id>/revoke",
        tokens.AdminRevokeView.as_view(),
        name="token-admin-revoke",
    ),
    path("exchange", tokens.ExchangeView.as_view(), name="exchange"),
    path("audit/events", audit.EventListView.as_view(), name="audit-events"),
    path("audit/hmac", audit.HmacView.as_view(), name="audit-hmac"),
    path("audit/export", audit.ExportView.as_view(), name="audit-export"),
    path("audit/public-key", audit.PublicKeyView.as_view(), name="audit-public-key"),
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
