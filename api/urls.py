"""Routes of /api/v1/."""

from django.urls import URLPattern, URLResolver, include, path, register_converter
from drf_spectacular.views import SpectacularAPIView

from api.schema import DocsView
from api.views import audit, audit_proofs, grants, hot, keys, moves, tenants, tokens
from tenants.validators import SLUG_PATTERN

Routes = list[URLPattern | URLResolver]


class SlugConverter:
    """A tenant slug as tenants.validators defines it (the OpenAPI document states the
    same pattern through SPECTACULAR_SETTINGS["PATH_CONVERTER_OVERRIDES"])."""

    regex = SLUG_PATTERN.removeprefix("^").removesuffix("\\Z")

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


register_converter(SlugConverter, "tenant_slug")

principal_routes: Routes = [
    path("", tenants.PrincipalDetailView.as_view(), name="principal-detail"),
    path(
        "/rotate-secret",
        tenants.PrincipalRotateSecretView.as_view(),
        name="principal-rotate-secret",
    ),
]
key_routes: Routes = [
    path("", keys.KeyDetailView.as_view(), name="key-detail"),
    path("/rotate", keys.KeyRotateView.as_view(), name="key-rotate"),
    path("/validate", keys.KeyValidateView.as_view(), name="key-validate"),
    path("/validations", keys.KeyValidationsView.as_view(), name="key-validations"),
    path("/tokens", tokens.KeyTokensView.as_view(), name="key-tokens"),
    path("/rotations", keys.RotationListView.as_view(), name="key-rotations"),
    path("/rotations/<uuid:rotation_id>", keys.RotationDetailView.as_view(), name="key-rotation"),
    path(
        "/rotations/<uuid:rotation_id>/cancel",
        keys.RotationCancelView.as_view(),
        name="key-rotation-cancel",
    ),
]
token_routes: Routes = [
    path("", hot.issue_token, name="token-issue"),
    path("/introspect", hot.introspect, name="token-introspect"),
    path("/revoke", tokens.RevokeView.as_view(), name="token-revoke"),
    path("/<uuid:token_id>/revoke", tokens.AdminRevokeView.as_view(), name="token-admin-revoke"),
]
audit_routes: Routes = [
    path("/events", audit.EventListView.as_view(), name="audit-events"),
    path("/hmac", audit.HmacView.as_view(), name="audit-hmac"),
    path("/export", audit.ExportView.as_view(), name="audit-export"),
    path("/public-key", audit.PublicKeyView.as_view(), name="audit-public-key"),
    path("/checkpoint", audit_proofs.CheckpointView.as_view(), name="audit-checkpoint"),
    path("/verify", audit_proofs.VerifyView.as_view(), name="audit-verify"),
    path("/consistency", audit_proofs.ConsistencyView.as_view(), name="audit-consistency"),
    path(
        "/events/<uuid:event_id>/proof",
        audit_proofs.EventProofView.as_view(),
        name="audit-event-proof",
    ),
]
docs: dict[str, list[object]] = {"authentication_classes": [], "permission_classes": []}

urlpatterns: Routes = [
    path("tenants", tenants.TenantListView.as_view(), name="tenant-list"),
    path("tenants/<tenant_slug:slug>", tenants.TenantDetailView.as_view(), name="tenant-detail"),
    path("tenants/<tenant_slug:slug>/keys", keys.KeyListView.as_view(), name="key-list"),
    path("tenants/<tenant_slug:slug>/keys/<uuid:key_id>", include(key_routes)),
    path("tenants/<tenant_slug:slug>/moves", moves.MoveListView.as_view(), name="move-list"),
    path(
        "tenants/<tenant_slug:slug>/moves/<uuid:move_id>",
        moves.MoveDetailView.as_view(),
        name="move-detail",
    ),
    path(
        "tenants/<tenant_slug:slug>/moves/<uuid:move_id>/cancel",
        moves.MoveCancelView.as_view(),
        name="move-cancel",
    ),
    path("principals", tenants.PrincipalListView.as_view(), name="principal-list"),
    path("principals/<uuid:principal_id>", include(principal_routes)),
    path("grants", grants.GrantListView.as_view(), name="grant-list"),
    path("grants/<uuid:grant_id>", grants.GrantDetailView.as_view(), name="grant-detail"),
    path("tokens", include(token_routes)),
    path("exchange", hot.exchange, name="exchange"),
    path("audit", include(audit_routes)),
    path("schema/", SpectacularAPIView.as_view(**docs), name="schema"),
    path("docs/", DocsView.as_view(url_name="schema", **docs), name="docs"),
]
