"""Moves of a tenant between secret stores: the request and the resource."""

from __future__ import annotations

from rest_framework import serializers

from api.base import StrictSerializer
from kms.models import TenantMove
from stores.registry import store_region


class MoveStartSerializer(StrictSerializer):
    store = serializers.CharField(
        max_length=63,
        trim_whitespace=False,
        help_text="The named secret store (settings' SECRET_STORES) to move the tenant to.",
    )


class MoveSerializer(serializers.ModelSerializer[TenantMove]):
    tenant: serializers.SlugRelatedField[TenantMove] = serializers.SlugRelatedField(
        slug_field="slug", read_only=True
    )
    source_region = serializers.SerializerMethodField()
    target_region = serializers.SerializerMethodField()
    progress = serializers.SerializerMethodField()

    class Meta:
        model = TenantMove
        fields = (
            "id",
            "tenant",
            "source",
            "target",
            "source_region",
            "target_region",
            "state",
            "steps",
            "progress",
            "failure",
            "created_at",
            "created_by",
            "updated_at",
            "switched_at",
            "finished_at",
        )
        read_only_fields = fields

    def get_source_region(self, obj: TenantMove) -> str:
        return store_region(obj.source)

    def get_target_region(self, obj: TenantMove) -> str:
        return store_region(obj.target)

    def get_progress(self, obj: TenantMove) -> dict[str, int]:
        """Keys and versions verified in the target (known once the copy is verified)."""
        verified = [entry.get("verified", []) for entry in obj.keys.values()]
        return {
            "keys": sum(1 for entry in obj.keys.values() if "verified" in entry),
            "versions": sum(len(v) for v in verified),
        }
