"""Tenants: the list (with the region of each one's secret store), a new tenant, suspending
and reactivating one, and each one's key policy."""

from __future__ import annotations

from django import forms
from django.http import HttpRequest, HttpResponse, HttpResponseBase, HttpResponseRedirect
from django.urls import path, reverse

from console.pages import page, refuse, staff_page, visible_tenant
from kms.keychoice import region_of
from tenants.access import Access
from tenants.actions import do_create_tenant, do_update_tenant
from tenants.actors import actor_for
from tenants.exceptions import TenantExists
from tenants.models import KeyPolicy, TenantStatus
from tenants.validators import NO_CONTROL_CHARACTERS, validate_slug


class TenantForm(forms.Form):
    """A new tenant, checked as the API checks one (POST /api/v1/tenants)."""

    slug = forms.CharField(max_length=63, strip=False, validators=[validate_slug])
    name = forms.CharField(max_length=200, strip=False, validators=[NO_CONTROL_CHARACTERS])


def _tenants_page(
    request: HttpRequest, access: Access, form: TenantForm | None = None, status: int = 200
) -> HttpResponse:
    tenants = list(access.tenants().order_by("slug"))
    context = {
        "tenants": tenants,
        "rows": [(tenant, region_of(tenant)) for tenant in tenants],
        "form": form or TenantForm(),
        "statuses": TenantStatus,
        "policies": KeyPolicy.choices,
    }
    return page(request, "tenants.html", context, status)


@staff_page("admin", methods=("GET", "POST"))
def tenant_list(request: HttpRequest, access: Access) -> HttpResponseBase:
    """The tenants a security admin covers, with their status, and a new tenant (global
    security admins, as in the API); 403 for anyone else."""
    if request.method == "GET":
        return _tenants_page(request, access)
    if not access.is_global_security_admin:
        return refuse(request)
    form = TenantForm(request.POST)
    if not form.is_valid():
        return _tenants_page(request, access, form, 400)
    try:
        do_create_tenant(**form.cleaned_data, actor=actor_for(request.user))
    except TenantExists as exists:
        form.add_error("slug", exists.message)
        return _tenants_page(request, access, form, 409)
    return HttpResponseRedirect(reverse("console:tenants"))


@staff_page("admin", methods=("POST",))
def tenant_status(request: HttpRequest, access: Access, slug: str) -> HttpResponseBase:
    """Suspend or reactivate a tenant the security admin covers (404, audited, for one it
    does not: its existence is not told)."""
    tenant = visible_tenant(access, slug)
    wanted = request.POST.get("status", "")
    if wanted not in TenantStatus.values:
        return _tenants_page(request, access, status=400)
    do_update_tenant(tenant, status=wanted, actor=actor_for(request.user))
    return HttpResponseRedirect(reverse("console:tenants"))


class PolicyForm(forms.Form):
    """A tenant's key policy, as PATCH /api/v1/tenants/{slug} takes it."""

    key_policy = forms.ChoiceField(choices=KeyPolicy.choices)
    platform_fallback = forms.BooleanField(required=False)


@staff_page("admin", methods=("POST",))
def tenant_policy(request: HttpRequest, access: Access, slug: str) -> HttpResponseBase:
    """Set a tenant's key policy (`tenant.key_policy_changed`): security admins over every
    tenant only, as in the API (404, audited, for a tenant the admin does not cover)."""
    tenant = visible_tenant(access, slug)
    if not access.is_global_security_admin:
        return refuse(request, slug)  # the policy decides whether the deployment's keys serve it
    form = PolicyForm(request.POST)
    if not form.is_valid():
        return _tenants_page(request, access, status=400)
    do_update_tenant(tenant, **form.cleaned_data, actor=actor_for(request.user))
    return HttpResponseRedirect(reverse("console:tenants"))


urlpatterns = [
    path("tenants/", tenant_list, name="tenants"),
    path("tenants/<str:slug>/status/", tenant_status, name="tenant-status"),
    path("tenants/<str:slug>/policy/", tenant_policy, name="tenant-policy"),
]
