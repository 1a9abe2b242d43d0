"""Staged rotations from a key's page: starting one (a worker tests the new secret, or has
the provider create it, then makes it current) and cancelling one before its version is
current, through the actions the API uses (`kms.actions.rotations`)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponseBase
from django.urls import path

from console.pages import staff_page, visible_object
from console.views.keys import StagedRotationForm, _done, _key, _key_page, _refused, _with_retry
from core.errors import DomainError
from kms.actions.rotations import RotationRequest, do_cancel_rotation, do_start_rotation
from kms.exceptions import RotationNotCancellable
from kms.models import KeyStatus, ProviderKey, Rotation
from tenants.access import Access
from tenants.actors import actor_for


@staff_page("admin", methods=("POST",))
def rotation_start(
    request: HttpRequest, access: Access, slug: str, key_id: str
) -> HttpResponseBase:
    """Start a staged rotation; the same request token submitted again answers with the
    rotation it started, as the API does."""
    key = _key(access, slug, key_id)
    form = StagedRotationForm(request.POST, key=key)
    if not form.is_valid():
        form.renew_token()
        return _key_page(request, access, key, staged=form, status=400)
    try:
        rotation, _ = do_start_rotation(
            key, RotationRequest(**form.cleaned_data), actor=actor_for(request.user)
        )
    except DomainError as error:
        _refused(form, error)
        form.renew_token()
        # A revoked key has no form to show the refusal on.
        above = error.message if key.status == KeyStatus.REVOKED else ""
        shown = _key_page(request, access, key, staged=form, problem=above, status=error.status)
        return _with_retry(shown, error)
    return _done(key, "staged" if rotation.mode == "manual" else "staged-automated")


@staff_page("admin", methods=("POST",))
def rotation_cancel(
    request: HttpRequest, access: Access, slug: str, key_id: str, rotation_id: str
) -> HttpResponseBase:
    """Cancel a rotation whose new version is not yet current; 409, shown beside the
    rotations, once it is."""
    key = _key(access, slug, key_id)
    rotation = _rotation(access, key, rotation_id)
    try:
        do_cancel_rotation(rotation, actor=actor_for(request.user))
    except RotationNotCancellable as late:
        return _key_page(request, access, key, rotation_problem=late.message, status=late.status)
    return _done(key, "rotation-cancelled")


def _rotation(access: Access, key: ProviderKey, rotation_id: str) -> Rotation:
    rotations = Rotation.objects.select_related("key", "key__tenant")
    return visible_object(access, rotations, rotation_id, lambda found: found.key_id == key.pk)


urlpatterns = [
    path(
        "tenants/<str:slug>/keys/<str:key_id>/rotations/",
        rotation_start,
        name="rotation-start",
    ),
    path(
        "tenants/<str:slug>/keys/<str:key_id>/rotations/<str:rotation_id>/cancel/",
        rotation_cancel,
        name="rotation-cancel",
    ),
]
