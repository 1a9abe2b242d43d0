"""Provider-key endpoints under /api/v1/tenants/{slug}/keys."""

from __future__ import annotations

from uuid import UUID

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response

from api.base import KeywardView, SecurityAdmin, StaffReader
from api.schema import listing
from api.serializers.keys import (
    KeyCreateSerializer,
    KeyRotateSerializer,
    KeySerializer,
    KeyUpdateSerializer,
    RotationSerializer,
    RotationStartSerializer,
    ValidationSerializer,
)
from core.errors import InvalidInput
from kms import queries
from kms.actions import keys, retirement, rotations
from kms.exceptions import KeyNotFound, RotationNotFound
from kms.models import ProviderKey, Rotation

VALIDATE = OpenApiParameter(
    "validate", OpenApiTypes.BOOL, description="false skips the provider check"
)


def _validate_flag(request: Request) -> bool:
    raw = request.query_params.get("validate", "true").lower()
    if raw not in ("true", "false", "1", "0"):
        raise InvalidInput(
            "validate must be true or false.", fields={"validate": ["Must be true or false."]}
        )
    return raw in ("true", "1")


class KeyView(KeywardView):
    def key(self, key_id: UUID) -> ProviderKey:
        """A key of the URL's tenant."""
        return self.visible(queries.keys(), KeyNotFound, pk=key_id)

    def keyed(self, key: ProviderKey, code: int = status.HTTP_200_OK) -> Response:
        fresh = queries.keys_with_versions().get(pk=key.pk)
        return Response(KeySerializer(fresh).data, status=code)


class KeyListView(KeyView):
    """A tenant's provider keys: list them; onboard one (checked with the provider first)."""

    permissions_by_method = {"GET": (StaffReader,), "POST": (SecurityAdmin,)}

    @extend_schema(
        operation_id="tenants_keys_list", responses=listing(KeySerializer, paginated=False)
    )
    def get(self, request: Request, slug: str) -> Response:
        rows = queries.keys_with_versions().filter(tenant=self.tenant)
        return Response({"results": KeySerializer(rows, many=True).data})

    @extend_schema(
        request=KeyCreateSerializer, responses={201: KeySerializer}, parameters=[VALIDATE]
    )
    def post(self, request: Request, slug: str) -> Response:
        validate = _validate_flag(request)
        body = KeyCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        fields = dict(body.validated_data)
        admin = fields.pop("admin_credential", None)
        linked = queries.admin_credential_of(self.tenant, admin)
        data = keys.KeyInput(**fields, admin_credential=linked)
        key = keys.do_onboard_key(self.tenant, data, validate=validate, actor=self.actor)
        return self.keyed(key, status.HTTP_201_CREATED)


class KeyDetailView(KeyView):
    """One key's metadata (never the secret); PATCH names the admin credential that
    rotates it; DELETE revokes it and destroys every version."""

    permissions_by_method = {
        "GET": (StaffReader,),
        "PATCH": (SecurityAdmin,),
        "DELETE": (SecurityAdmin,),
    }

    @extend_schema(request=KeyUpdateSerializer, responses=KeySerializer)
    def patch(self, request: Request, slug: str, key_id: UUID) -> Response:
        key = self.key(key_id)
        body = KeyUpdateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        if "admin_credential" not in body.validated_data:
            return self.keyed(key)  # nothing asked to change
        admin = queries.admin_credential_of(self.tenant, body.validated_data["admin_credential"])
        return self.keyed(keys.do_set_admin_credential(key, admin, actor=self.actor))

    @extend_schema(responses=KeySerializer)
    def get(self, request: Request, slug: str, key_id: UUID) -> Response:
        return self.keyed(self.key(key_id))

    @extend_schema(responses={204: None})
    def delete(self, request: Request, slug: str, key_id: UUID) -> Response:
        revoked = retirement.do_revoke_key(self.key(key_id), actor=self.actor)
        if revoked.secrets_destroyed_at is not None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        pending = {
            "id": str(revoked.id),
            "status": revoked.status,
            "secrets_destroyed": False,
            "message": "The key is revoked and no token can use it. The secret store did not "
            "answer, so its versions are destroyed in the background as soon as it does.",
        }
        return Response(pending, status=status.HTTP_202_ACCEPTED, headers={"Retry-After": "300"})


class KeyRotateView(KeyView):
    """A new secret becomes current; the previous stays usable for the grace period."""

    permissions_by_method = {"POST": (SecurityAdmin,)}

    @extend_schema(request=KeyRotateSerializer, responses=KeySerializer, parameters=[VALIDATE])
    def post(self, request: Request, slug: str, key_id: UUID) -> Response:
        key = self.key(key_id)
        validate = _validate_flag(request)
        body = KeyRotateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        rotated = keys.do_rotate_key(
            key, **body.validated_data, validate=validate, actor=self.actor
        )
        return self.keyed(rotated)


class KeyValidateView(KeyView):
    """Check the current version with the provider now."""

    permissions_by_method = {"POST": (SecurityAdmin,)}

    @extend_schema(request=None, responses=ValidationSerializer)
    def post(self, request: Request, slug: str, key_id: UUID) -> Response:
        result = keys.do_validate_key(self.key(key_id), actor=self.actor).result
        key = queries.keys().get(pk=result.key_id)
        return Response({**ValidationSerializer(result).data, "key_status": key.status})


class KeyValidationsView(KeyView):
    """The most recent validation results, newest first, with the provider's reasons."""

    permissions_by_method = {"GET": (StaffReader,)}

    @extend_schema(
        operation_id="tenants_keys_validations_list",
        responses=listing(ValidationSerializer, paginated=False),
    )
    def get(self, request: Request, slug: str, key_id: UUID) -> Response:
        key = self.key(key_id)
        return Response(
            {"results": ValidationSerializer(queries.recent_validations(key), many=True).data}
        )


class RotationListView(KeyView):
    """A key's staged rotations, newest first; POST starts one (202), with the steps
    after the first run by a worker."""

    permissions_by_method = {"GET": (StaffReader,), "POST": (SecurityAdmin,)}

    @extend_schema(
        operation_id="tenants_keys_rotations_list",
        responses=listing(RotationSerializer, paginated=False),
    )
    def get(self, request: Request, slug: str, key_id: UUID) -> Response:
        rows = self.key(key_id).rotations.all()[:50]
        return Response({"results": RotationSerializer(rows, many=True).data})

    @extend_schema(
        request=RotationStartSerializer,
        responses={202: RotationSerializer},
        parameters=[VALIDATE],
    )
    def post(self, request: Request, slug: str, key_id: UUID) -> Response:
        key = self.key(key_id)
        validate = _validate_flag(request)
        body = RotationStartSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        ask = rotations.RotationRequest(**body.validated_data, validate=validate)
        rotation, _ = rotations.do_start_rotation(key, ask, actor=self.actor)
        return Response(RotationSerializer(rotation).data, status=status.HTTP_202_ACCEPTED)


class RotationView(KeyView):
    def rotation(self, key_id: UUID, rotation_id: UUID) -> Rotation:
        found = self.key(key_id).rotations.filter(pk=rotation_id).first()
        if found is None:
            raise RotationNotFound()
        return found


class RotationDetailView(RotationView):
    """One rotation: its state and each step's."""

    permissions_by_method = {"GET": (StaffReader,)}

    @extend_schema(responses=RotationSerializer)
    def get(self, request: Request, slug: str, key_id: UUID, rotation_id: UUID) -> Response:
        return Response(RotationSerializer(self.rotation(key_id, rotation_id)).data)


class RotationCancelView(RotationView):
    """Stop a rotation whose new version is not yet current (its pending version is
    destroyed); 409 once it is."""

    permissions_by_method = {"POST": (SecurityAdmin,)}

    @extend_schema(request=None, responses=RotationSerializer)
    def post(self, request: Request, slug: str, key_id: UUID, rotation_id: UUID) -> Response:
        rotation = self.rotation(key_id, rotation_id)
        cancelled = rotations.do_cancel_rotation(rotation, actor=self.actor)
        return Response(RotationSerializer(cancelled).data)
