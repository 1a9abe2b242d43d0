from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import RegexValidator
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from api.base import StrictSerializer
from kms.actions.keys import MAX_GRACE_SECONDS
from kms.actions.rotations import REQUEST_TOKEN
from kms.exceptions import ForbiddenBaseUrl
from kms.models import KeyKind, KeyVersion, ProviderKey, Rotation, Validation, ValidationResult
from kms.providers import ADAPTERS, MAX_SECRET
from kms.validators import (
    BASE_URL_MESSAGE,
    BASE_URL_PATTERN,
    LABEL,
    ROTATION_PERIOD_DAYS,
    SETTING_NAME_PATTERN,
    SETTING_VALUE_PATTERN,
)
from stores.registry import store_region


class BaseUrlShape(RegexValidator):
    """The documented shape of a base_url (a RegexValidator, so the OpenAPI document
    states the pattern), refused with the API's own `forbidden_base_url`."""

    def __call__(self, value: Any) -> None:
        try:
            super().__call__(value)
        except DjangoValidationError:
            raise ForbiddenBaseUrl(str(self.message)) from None


BASE_URL = BaseUrlShape(BASE_URL_PATTERN, BASE_URL_MESSAGE)


@extend_schema_field(
    {
        "type": "string",
        "writeOnly": True,
        "format": "password",
        "minLength": 1,
        "maxLength": MAX_SECRET,
        "pattern": "^[!-~]+$",
        "description": "The provider's key: printable ASCII without spaces, in the"
        " provider's own key format (checked per provider).",
    }
)
class SecretField(serializers.CharField):
    """Write-only, never trimmed, never echoed in an error. The rules the document states
    are checked with the provider's own (kms.providers.check_secret_shape), so that every
    refusal of a secret has the same code and never repeats it."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(
            write_only=True,
            trim_whitespace=False,
            max_length=None,
            error_messages={"blank": "Must not be empty."},
            style={"input_type": "password"},
            **kwargs,
        )


@extend_schema_field(
    {
        "type": "object",
        "additionalProperties": {"type": "string", "pattern": "^[ -~]{1,500}$"},
        "maxProperties": 16,
    }
)
class UpstreamSettingsField(serializers.DictField):
    """An admin credential's settings: a few names in lower case with printable ASCII
    values (ids, names, URLs)."""

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        values: dict[str, Any] = super().to_internal_value(data)
        wrong = [
            name
            for name, value in values.items()
            if not SETTING_NAME_PATTERN.match(name) or not SETTING_VALUE_PATTERN.match(value)
        ]
        if wrong or len(values) > 16:
            raise serializers.ValidationError(
                "At most 16 settings, named in lower case with printable ASCII values."
            )
        return values


class KeyCreateSerializer(StrictSerializer):
    provider = serializers.ChoiceField(
        choices=sorted(ADAPTERS), error_messages={"invalid_choice": "Unknown provider."}
    )
    label = serializers.CharField(  # type: ignore[assignment]
        max_length=100, trim_whitespace=False, validators=[LABEL]
    )
    secret = SecretField()
    rotation_period_days = serializers.IntegerField(
        min_value=ROTATION_PERIOD_DAYS[0], max_value=ROTATION_PERIOD_DAYS[1], default=90
    )
    # The shape is documented; whether the egress policy allows the address is decided
    # when the URL is used (core.egress), and refused with `forbidden_base_url`.
    base_url = serializers.CharField(
        max_length=2048,
        required=False,
        allow_blank=True,
        trim_whitespace=False,
        validators=[BASE_URL],
    )
    kind = serializers.ChoiceField(
        choices=KeyKind.choices,
        default=KeyKind.API_KEY,
        help_text="`admin`: an admin credential that rotations use to create and retire keys "
        "at the provider; never released by exchange or proxied.",
    )
    upstream = UpstreamSettingsField(
        child=serializers.CharField(max_length=500),
        required=False,
        help_text="An admin credential's settings (a project, a resource...), per provider.",
    )
    admin_credential = serializers.UUIDField(
        required=False,
        help_text="The admin credential (of this tenant and provider) that rotates this key "
        "at its provider.",
    )
    store = serializers.CharField(
        max_length=63,
        required=False,
        help_text="The configured secret store to hold the key. A pinned tenant's keys go to "
        "its store (naming another: 409 residency_refused); others default to the default "
        "store.",
    )


class KeyUpdateSerializer(StrictSerializer):
    admin_credential = serializers.UUIDField(
        allow_null=True,
        required=False,
        help_text="The admin credential (of this tenant and provider) that rotates this key "
        "at its provider; null for none.",
    )


class KeyRotateSerializer(StrictSerializer):
    secret = SecretField()
    grace_period_seconds = serializers.IntegerField(
        min_value=0, max_value=MAX_GRACE_SECONDS, default=3600
    )


class VersionSerializer(serializers.ModelSerializer[KeyVersion]):
    class Meta:
        model = KeyVersion
        fields = (
            "version",
            "stage",
            "hint",
            "created_at",
            "promoted_at",
            "retire_after",
            "destroyed_at",
        )
        read_only_fields = fields


class KeySerializer(serializers.ModelSerializer[ProviderKey]):
    tenant: serializers.SlugRelatedField[ProviderKey] = serializers.SlugRelatedField(
        slug_field="slug", read_only=True
    )
    versions = VersionSerializer(many=True, read_only=True)
    last_validation = serializers.ChoiceField(
        choices=Validation.choices,
        allow_blank=True,
        read_only=True,
        help_text="Empty until the key's first check with its provider.",
    )
    region = serializers.SerializerMethodField()

    class Meta:
        model = ProviderKey
        fields = (
            "id",
            "tenant",
            "provider",
            "label",
            "status",
            "hint",
            "fingerprint",
            "current_version",
            "created_at",
            "created_by",
            "last_validated_at",
            "last_validation",
            "last_validation_result",
            "last_validation_reason",
            "rotation_period_days",
            "rotation_due_at",
            "base_url",
            "store",
            "region",
            "revoked_at",
            "versions",
            "kind",
            "upstream",
            "admin_credential",
        )
        read_only_fields = fields

    def get_region(self, obj: ProviderKey) -> str:
        """The region of the store holding the key."""
        return store_region(obj.store)


class ValidationSerializer(serializers.ModelSerializer[ValidationResult]):
    class Meta:
        model = ValidationResult
        fields = (
            "version",
            "checked_at",
            "result",
            "http_status",
            "reason",
            "duration_ms",
            "trigger",
        )
        read_only_fields = fields


class RotationStartSerializer(StrictSerializer):
    secret = SecretField(
        required=False,
        help_text="The new secret; leave it out to have the key's admin credential create "
        "the new key at the provider.",
    )
    grace_period_seconds = serializers.IntegerField(
        min_value=0, max_value=MAX_GRACE_SECONDS, default=3600
    )
    client_request_token = serializers.RegexField(
        REQUEST_TOKEN,
        required=False,
        help_text="Makes the request idempotent: the same token with the same secret "
        "answers with the rotation it started (1-64 letters, digits and . _ : -).",
    )


class RotationSerializer(serializers.ModelSerializer[Rotation]):
    key = serializers.UUIDField(source="key_id", read_only=True)

    class Meta:
        model = Rotation
        fields = (
            "id",
            "key",
            "state",
            "mode",
            "steps",
            "pending_version",
            "previous_version",
            "grace_period_seconds",
            "validate",
            "client_request_token",
            "failure",
            "created_at",
            "created_by",
            "updated_at",
            "finished_at",
        )
        read_only_fields = fields
