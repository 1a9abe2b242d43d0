from __future__ import annotations

from rest_framework import serializers

from api.base import StrictSerializer
from tenants.models import ServicePrincipal, Tenant, TenantStatus
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


class TenantUpdateSerializer(StrictSerializer):
    name = _display_name(required=False)
    status = serializers.ChoiceField(choices=TenantStatus.choices, required=False)


class TenantSerializer(serializers.ModelSerializer[Tenant]):
    class Meta:
        model = Tenant
        fields = ("id", "slug", "name", "status", "created_at", "updated_at")
        read_only_fields = fields


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
