"""Service principals (list, create, rotate a secret, delete) and the grants that let them
ask for tokens (list, create, delete), through the API's actions and with its checks."""

from __future__ import annotations

import contextlib
import uuid
from typing import Any, TypeVar

from django import forms
from django.db import DatabaseError
from django.db.models import Model, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseBase, HttpResponseRedirect
from django.urls import path, reverse

from audit.recorder import AuditUnavailable, record_refusal
from console.pages import Hidden, page, refuse, staff_page, visible_tenant
from kms.providers import GRANT_PROVIDERS
from tenants import queries
from tenants.access import Access
from tenants.actions import (
    do_create_grant,
    do_create_principal,
    do_delete_grant,
    do_delete_principal,
    do_rotate_principal_secret,
)
from tenants.actors import actor_for
from tenants.exceptions import PrincipalExists, PrincipalNotFound
from tenants.models import Scope, ServicePrincipal
from tenants.validators import (
    GRANT_TTL_MIN,
    MODEL_NAME_MAX,
    MODELS_PER_GRANT,
    grant_tenant_validator,
    grant_ttl_max,
    model_name_validator,
    validate_grant_ttl,
    validate_principal_name,
)

EVERY = "*"  # a grant over every tenant, or for any provider
M = TypeVar("M", bound=Model)


class PrincipalForm(forms.Form):
    """A new principal, checked as the API checks one (POST /api/v1/principals)."""

    name = forms.CharField(max_length=63, strip=False, validators=[validate_principal_name])


class ConfirmForm(forms.Form):
    """The principal's name, typed again before it is deleted."""

    confirm = forms.CharField(max_length=63, strip=False)


class GrantForm(forms.Form):
    """A new grant, checked as the API checks one (POST /api/v1/grants). A limited admin
    may name a principal she cannot list by its id, as she may in the API."""

    principal = forms.UUIDField(required=False)
    principal_id = forms.UUIDField(required=False)
    tenant = forms.CharField(max_length=63, strip=False, validators=[grant_tenant_validator])
    provider = forms.ChoiceField(
        choices=[(p, p) for p in GRANT_PROVIDERS],
        error_messages={"invalid_choice": "Unknown provider."},
    )
    scopes = forms.MultipleChoiceField(choices=Scope.choices)
    max_ttl_seconds = forms.IntegerField(validators=[validate_grant_ttl])
    models = forms.CharField(required=False, strip=False, max_length=10_000)

    def clean_models(self) -> list[str]:
        names = [name for name in self.cleaned_data["models"].split(" ") if name]
        if len(names) > MODELS_PER_GRANT:
            raise forms.ValidationError(f"At most {MODELS_PER_GRANT} models.")
        for name in names:
            if len(name) > MODEL_NAME_MAX:
                raise forms.ValidationError(
                    f"A model name has at most {MODEL_NAME_MAX} characters."
                )
            model_name_validator(name)
        return names

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        chosen = data.get("principal_id") or data.get("principal")
        if (
            chosen is None
            and not self.has_error("principal")
            and not self.has_error("principal_id")
        ):
            self.add_error("principal", "Choose a principal.")
        data["principal"] = chosen
        return data


def _found(queryset: QuerySet[M], raw_id: str) -> M | None:
    """The row whose id is `raw_id`, or None (a malformed id names nothing)."""
    try:
        return queryset.filter(pk=uuid.UUID(raw_id)).first()
    except ValueError:
        return None


def _principal(raw_id: str) -> ServicePrincipal:
    principal = _found(queries.principals(), raw_id)
    if principal is None:
        raise Hidden()
    return principal


def _principals_page(
    request: HttpRequest, access: Access, form: PrincipalForm | None = None, status: int = 200
) -> HttpResponse:
    seen = queries.principals_seen_by(access).order_by("name")
    context = {"principals": list(seen), "form": form or PrincipalForm()}
    return page(request, "principals.html", context, status)


def _secret_page(
    request: HttpRequest, principal: ServicePrincipal, secret: str, status: int
) -> HttpResponse:
    """The one response that carries a principal's secret: not stored, not redirected to,
    and (as every console page) not cached."""
    context = {"principal": principal, "secret": secret, "created": status == 201}
    return page(request, "principal_secret.html", context, status)


@staff_page("admin", methods=("GET", "POST"))
def principal_list(request: HttpRequest, access: Access) -> HttpResponseBase:
    """The principals a security admin may see (every one, or those granted on her
    tenants) and a new one with its secret shown once (global security admins)."""
    if request.method == "POST":
        return _create_principal(request, access)
    return _principals_page(request, access)


def _create_principal(request: HttpRequest, access: Access) -> HttpResponse:
    if not access.is_global_security_admin:
        return refuse(request)
    form = PrincipalForm(request.POST)
    if not form.is_valid():
        return _principals_page(request, access, form, 400)
    try:
        principal, secret = do_create_principal(
            form.cleaned_data["name"], actor=actor_for(request.user)
        )
    except PrincipalExists as exists:
        form.add_error("name", exists.message)
        return _principals_page(request, access, form, 409)
    return _secret_page(request, principal, secret, 201)


@staff_page("global_admin", methods=("GET", "POST"))
def principal_rotate(request: HttpRequest, access: Access, principal_id: str) -> HttpResponseBase:
    """Ask, then replace a principal's secret and show the new one once."""
    principal = _principal(principal_id)
    if request.method == "GET":
        return page(request, "principal_confirm.html", {"principal": principal, "rotate": True})
    principal, secret = do_rotate_principal_secret(principal.id, actor=actor_for(request.user))
    return _secret_page(request, principal, secret, 200)


@staff_page("global_admin", methods=("GET", "POST"))
def principal_delete(request: HttpRequest, access: Access, principal_id: str) -> HttpResponseBase:
    """Delete a principal once its name is typed again: its grants go with it, and its
    secret and tokens stop working."""
    principal = _principal(principal_id)
    form = ConfirmForm(request.POST if request.method == "POST" else None)
    if request.method == "GET" or not form.is_valid():
        return _confirm_delete(request, principal, form)
    if form.cleaned_data["confirm"] != principal.name:
        form.add_error("confirm", f"Type {principal.name} to delete it.")
        return _confirm_delete(request, principal, form)
    do_delete_principal(principal.id, actor=actor_for(request.user))
    return HttpResponseRedirect(reverse("console:principals"))


def _confirm_delete(
    request: HttpRequest, principal: ServicePrincipal, form: ConfirmForm
) -> HttpResponse:
    context = {"principal": principal, "form": form, "grants": principal.grants.count()}
    return page(request, "principal_confirm.html", context, 400 if form.errors else 200)


def _grants_page(
    request: HttpRequest, access: Access, form: GrantForm | None = None, status: int = 200
) -> HttpResponse:
    grants = access.restrict(queries.grants().select_related("principal"))
    principals = queries.principals() if access.all_tenants else queries.principals_seen_by(access)
    context = {
        "grants": list(grants.order_by("principal__name", "created_at")),
        "principals": list(principals.order_by("name")),
        # The platform tenant's keys serve other tenants by their policy: it is not granted.
        "tenants": list(access.tenants().filter(is_platform=False).order_by("slug")),
        "providers": GRANT_PROVIDERS,
        "scopes": Scope.choices,
        "ttl_help": f"From {GRANT_TTL_MIN} to {grant_ttl_max()} (KEYWARD_TOKEN_MAX_TTL).",
        "form": form or GrantForm(initial={"max_ttl_seconds": 900, "scopes": [Scope.RELEASE]}),
    }
    return page(request, "grants.html", context, status)


@staff_page("admin", methods=("GET", "POST"))
def grant_list(request: HttpRequest, access: Access) -> HttpResponseBase:
    """The grants of the tenants a security admin covers, and a new one for one of them
    (or over every tenant, for global security admins)."""
    if request.method == "GET":
        return _grants_page(request, access)
    form = GrantForm(request.POST)
    if not form.is_valid():
        return _grants_page(request, access, form, 400)
    data = form.cleaned_data
    principal: ServicePrincipal | None = queries.principals().filter(pk=data["principal"]).first()
    if principal is None:
        form.add_error("principal", PrincipalNotFound.message)
        return _grants_page(request, access, form, 404)
    if data["tenant"] == EVERY and not access.is_global_security_admin:
        return refuse(request)
    tenant = None if data["tenant"] == EVERY else visible_tenant(access, data["tenant"])
    do_create_grant(
        principal,
        tenant,
        data["provider"],
        data["scopes"],
        data["max_ttl_seconds"],
        models=data["models"],
        actor=actor_for(request.user),
    )
    return HttpResponseRedirect(reverse("console:grants"))


@staff_page("admin", methods=("POST",))
def grant_delete(request: HttpRequest, access: Access, grant_id: str) -> HttpResponseBase:
    """Delete a grant the admin covers; every token issued under it stops working."""
    grant = _found(queries.grants(), grant_id)
    if grant is None:
        raise Hidden()
    if not access.covers_scope(grant.tenant):
        if grant.tenant is None:
            _audit_hidden_from_global_chain(request)
        raise Hidden(grant.tenant)
    do_delete_grant(grant, actor=actor_for(request.user))
    return HttpResponseRedirect(reverse("console:grants"))


def _audit_hidden_from_global_chain(request: HttpRequest) -> None:
    """A grant over every tenant has no tenant chain: the 404 that hides it from a limited
    admin is audited in the global chain, as the API audits it."""
    details = {"method": request.method, "path": request.path[:200], "status": 404}
    with contextlib.suppress(AuditUnavailable, DatabaseError):  # the refusal stands anyway
        record_refusal("access.denied", actor=actor_for(request.user), details=details)


urlpatterns = [
    path("principals/", principal_list, name="principals"),
    path("principals/<str:principal_id>/rotate/", principal_rotate, name="principal-rotate"),
    path("principals/<str:principal_id>/delete/", principal_delete, name="principal-delete"),
    path("grants/", grant_list, name="grants"),
    path("grants/<str:grant_id>/delete/", grant_delete, name="grant-delete"),
]
