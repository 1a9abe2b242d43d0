"""Moving a tenant between secret stores: /api/v1/tenants/{slug}/moves."""

from __future__ import annotations

from uuid import UUID

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response

from api.base import KeywardView, SecurityAdmin, StaffReader
from api.schema import listing
from api.serializers.moves import MoveSerializer, MoveStartSerializer
from kms.actions import moves
from kms.exceptions import MoveNotFound
from kms.models import TenantMove


class MoveListView(KeywardView):
    """A tenant's moves between stores, newest first; POST starts one (202), the steps
    run by a worker."""

    permissions_by_method = {"GET": (StaffReader,), "POST": (SecurityAdmin,)}

    @extend_schema(
        operation_id="tenants_moves_list", responses=listing(MoveSerializer, paginated=False)
    )
    def get(self, request: Request, slug: str) -> Response:
        rows = TenantMove.objects.filter(tenant=self.tenant).select_related("tenant")[:50]
        return Response({"results": MoveSerializer(rows, many=True).data})

    @extend_schema(request=MoveStartSerializer, responses={202: MoveSerializer})
    def post(self, request: Request, slug: str) -> Response:
        body = MoveStartSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        move = moves.do_start_move(self.tenant, body.validated_data["store"], actor=self.actor)
        return Response(MoveSerializer(move).data, status=status.HTTP_202_ACCEPTED)


class MoveView(KeywardView):
    def move(self, move_id: UUID) -> TenantMove:
        found = TenantMove.objects.filter(tenant=self.tenant, pk=move_id).first()
        if found is None:
            raise MoveNotFound()
        return found


class MoveDetailView(MoveView):
    """One move: its state, each step's, and what was verified."""

    permissions_by_method = {"GET": (StaffReader,)}

    @extend_schema(responses=MoveSerializer)
    def get(self, request: Request, slug: str, move_id: UUID) -> Response:
        return Response(MoveSerializer(self.move(move_id)).data)


class MoveCancelView(MoveView):
    """Stop a move that has not switched: the tenant stays on its source and the copies
    are destroyed; 409 once it has switched or ended."""

    permissions_by_method = {"POST": (SecurityAdmin,)}

    @extend_schema(request=None, responses=MoveSerializer)
    def post(self, request: Request, slug: str, move_id: UUID) -> Response:
        cancelled = moves.do_cancel_move(self.move(move_id), actor=self.actor)
        return Response(MoveSerializer(cancelled).data)
