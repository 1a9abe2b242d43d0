from __future__ import annotations

import re
from typing import Any

from django.core.validators import RegexValidator
from rest_framework import serializers

from api.base import StrictSerializer
from kms.actions.keys import MAX_GRACE_SECONDS
from kms.models import KeyVersion, ProviderKey, Validation, ValidationResult
from kms.providers import ADAPTERS

LABEL = RegexValidator(
    re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9 ._:/-]{0,98}[A-Za-z0-9])?\Z", re.ASCII),
    "Use 1-100 ASCII letters, digits, spaces and . _ : / -, "
    "starting and ending with a letter or digit.",
    "invalid_label",
)


class SecretField(serializers.CharField):
    """Write-only, never trimmed, never echoed in an error."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(
            write_only=True,
            trim_whitespace=False,
            allow_blank=True,
            max_length=None,
            style={"input_type": "password"},
            **kwargs,
        )


class KeyCreateSerializer(StrictSerializer):
    provider = serializers.ChoiceField(
        choices=sorted(ADAPTERS), error_messages={"invalid_choice": "Unknown provider."}
    )
    label = serializers.CharField(  # type: ignore[assignment]
        max_length=100, trim_whitespace=False, validators=[LABEL]
    )
    secret = SecretField()
    rotation_period_days = serializers.IntegerField(min_value=1, max_value=3650, default=90)
    base_url = serializers.CharField(
        max_length=2048, required=False, allow_blank=True, trim_whitespace=False
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
            "revoked_at",
            "versions",
        )
        read_only_fields = fields


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
