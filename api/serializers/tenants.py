from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from api.base import StrictSerializer
from stores.registry import DEFAULT_STORE, store_region
from tenants.models import KeyPolicy, ServicePrincipal, Tenant, TenantStatus
from tenants.validators import NO_CONTROL_CHARACTERS, principal_name_validator, slug_validator


def _display_name(required: bool = True) -> serializers.CharField:
    """A display name: up to 200 characters as sent (no trimming that would make the
    length check lie), none of them a control character."""
    return serializers.CharField(
        max_length=200,
        required=required,
        trim_whitespace=False,
        validators=[NO_CONTROL_CHARACTERS],
    )


class TenantCreateSerializer(StrictSerializer):
    slug = serializers.CharField(max_length=63, trim_whitespace=False, validators=[slug_validator])
    name = _display_name()
    platform = serializers.BooleanField(
        default=False,
        help_text="The one tenant holding the deployment's own keys (platform keys).",
    )


class TenantUpdateSerializer(StrictSerializer):
    name = _display_name(required=False)
    status = serializers.ChoiceField(choices=TenantStatus.choices, required=False)
    key_policy = serializers.ChoiceField(choices=KeyPolicy.choices, required=False)
    platform_fallback = serializers.BooleanField(
        required=False,
        help_text="Under byok_preferred, use the platform key when the tenant's own key is "
        "invalid or revoked (otherwise such a request is refused).",
    )
    store = serializers.CharField(
        max_length=63,
        allow_null=True,
        required=False,
        help_text="The configured secret store the tenant's keys are written to from now on; "
        "null unpins it. Refused (409 tenant_has_keys) while it has live keys in another "
        "store: those are moved with POST /api/v1/tenants/{slug}/moves.",
    )


class TenantSerializer(serializers.ModelSerializer[Tenant]):
    """A tenant. The platform tenant has no key policy and no region of its own (each of
    its keys is placed in the store of the region it serves): those fields are null."""

    platform = serializers.BooleanField(source="is_platform", read_only=True)
    key_policy = serializers.SerializerMethodField()
    platform_fallback = serializers.SerializerMethodField()
    store = serializers.SerializerMethodField()
    region = serializers.SerializerMethodField()

    class Meta:
        model = Tenant
        fields = (
            "id",
            "slug",
            "name",
            "status",
            "platform",
            "key_policy",
            "platform_fallback",
            "store",
            "region",
            "created_at",
            "updated_at",
        )
        read_only_fields = fields

    @extend_schema_field(serializers.ChoiceField(choices=KeyPolicy.choices, allow_null=True))
    def get_key_policy(self, obj: Tenant) -> str | None:
        """Whose keys its tokens use; null for the platform tenant."""
        return None if obj.is_platform else obj.key_policy

    def get_platform_fallback(self, obj: Tenant) -> bool | None:
        """Under byok_preferred, the platform key when its own stopped working; null for
        the platform tenant."""
        return None if obj.is_platform else obj.platform_fallback

    def get_store(self, obj: Tenant) -> str | None:
        """The store the tenant is pinned to; null when unpinned (the default store)."""
        return obj.store or None

    def get_region(self, obj: Tenant) -> str | None:
        """The region of the store its keys are written to; null for the platform tenant,
        whose keys are placed per key."""
        return None if obj.is_platform else store_region(obj.store or DEFAULT_STORE)


class PrincipalCreateSerializer(StrictSerializer):
    name = serializers.CharField(
        max_length=63,
        trim_whitespace=False,
        validators=[principal_name_validator],
    )


class PrincipalSerializer(serializers.ModelSerializer[ServicePrincipal]):
    class Meta:
        model = ServicePrincipal
        fields: tuple[str, ...] = (
            "id",
            "name",
            "created_at",
            "created_by",
            "secret_rotated_at",
            "last_used_at",
        )
        read_only_fields = fields


class PrincipalWithSecretSerializer(PrincipalSerializer):
    client_secret = serializers.SerializerMethodField()

    class Meta(PrincipalSerializer.Meta):
        fields = (*PrincipalSerializer.Meta.fields, "client_secret")
        read_only_fields: tuple[str, ...] = fields

    def get_client_secret(self, obj: ServicePrincipal) -> str:
        return str(self.context["client_secret"])
