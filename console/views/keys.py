"""Provider keys: the list and onboarding, a key's page (versions, staged rotations and
their steps, validation history with what each result means, live tokens), and validating,
rotating and revoking it.

Every change goes through the actions the API uses (`kms.actions`), with the same checks,
the same audit events and the same refusals; a refusal is shown beside the form that
caused it, with the service's message and status, and nothing is changed.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from django import forms
from django.http import HttpRequest, HttpResponse, HttpResponseBase, HttpResponseRedirect
from django.urls import path, reverse
from django.utils import timezone

from console.pages import page, refuse, staff_page, visible_object, visible_tenant
from core.errors import DomainError
from kms import queries
from kms.actions import keys as key_actions
from kms.actions import retirement
from kms.actions.keys import MAX_GRACE_SECONDS
from kms.actions.rotations import REQUEST_TOKEN
from kms.actions.tokens import do_revoke_token
from kms.models import RUNNING_ROTATION, KeyKind, KeyStatus, ProviderKey, Rotation, ScopedToken
from kms.providers import ADAPTERS, MAX_SECRET, meaning
from kms.providers.admin import ADMIN_ADAPTERS, MAX_ADMIN_SECRET, admin_adapter
from kms.validators import BASE_URL, LABEL, ROTATION_PERIOD_DAYS, SETTING_VALUE
from stores.exceptions import StoreConflict
from stores.registry import store_region
from tenants.access import Access
from tenants.actors import actor_for

GRACE_PERIODS = [
    (0, "None: the old secret stops at once"),
    (900, "15 minutes"),
    (3600, "1 hour"),
    (86400, "1 day"),
    (7 * 86400, "7 days"),
    (MAX_GRACE_SECONDS, "30 days"),
]
# Where a service's refusal is shown on a form, by its code; the rest go above the form.
FIELD_OF_CODE = {
    "invalid_secret": "secret",
    "duplicate_key": "secret",
    "forbidden_base_url": "base_url",
    "label_taken": "label",
}
# Refusals whose API wording names an API parameter.
CONSOLE_WORDING = {
    "provider_unavailable": "The provider could not be reached to check the key; nothing was "
    "stored. Retry, or untick “Check … with the provider first” to skip the check.",
}
# What a redirect after a change tells the admin, by the `done` it carries.
DONE = {
    "onboarded": "The key is onboarded.",
    "onboarded-admin": "The admin credential is onboarded. Choose it on a key's page to have "
    "it rotate that key at the provider.",
    "validated": "The key was checked with its provider; the result is at the top of its "
    "validation history.",
    "rotated": "The key is rotated: the new secret is current.",
    "revoked": "The key is revoked and every version is destroyed in the secret store.",
    "revoking": "The key is revoked and no token can use it. The secret store did not "
    "answer, so its versions are destroyed in the background as soon as it does.",
    "token-revoked": "The token is revoked.",
    "admin-credential-set": "The admin credential is set: staged rotations of this key use it "
    "at the provider.",
    "admin-credential-cleared": "The key has no admin credential now: each staged rotation "
    "takes a new secret from a person.",
    "staged": "The staged rotation has started: a worker tests the new secret with the "
    "provider, then makes it current. Its steps are under Rotations.",
    "staged-automated": "The staged rotation has started: a worker has the provider create "
    "the new key, tests it, then makes it current. Its steps are under Rotations.",
    "rotation-cancelled": "The rotation is cancelled and its pending version destroyed; the "
    "current secret is unchanged.",
}
# What each step of a staged rotation does, in the order a worker runs them.
STEP_NAMES = {
    "create_pending": "Store the new secret as pending",
    "set_upstream": "Create the new key at the provider",
    "test": "Test it with the provider",
    "promote": "Make it current",
    "retire_previous": "Retire the previous version after its grace period",
}
LATEST_ROTATIONS = 10


def _secret_field(
    label: str = "Secret", max_length: int = MAX_SECRET, help_text: str = ""
) -> forms.CharField:
    """Never trimmed, never rendered back into the page."""
    return forms.CharField(
        label=label,
        max_length=max_length,
        help_text=help_text,
        strip=False,
        widget=forms.PasswordInput(
            render_value=False, attrs={"autocomplete": "off", "spellcheck": "false"}
        ),
    )


KINDS = [(KeyKind.API_KEY, "API key"), (KeyKind.ADMIN, "Admin credential")]


@dataclass(frozen=True)
class SettingsSection:
    """One provider's admin credential settings on the onboarding form."""

    provider: str
    creates_keys: bool
    fields: list[forms.BoundField]


class OnboardForm(forms.Form):
    """A new key or admin credential, checked as POST /api/v1/tenants/{slug}/keys checks
    one. Each provider with an admin API has a section of the settings its adapter asks
    for; only the section of the chosen provider is sent, and only for an admin
    credential (the action refuses settings on a key, as the API does)."""

    tenant = forms.ChoiceField()
    kind = forms.ChoiceField(choices=KINDS, required=False)
    provider = forms.ChoiceField(choices=[(name, name) for name in sorted(ADAPTERS)])
    label = forms.CharField(max_length=100, strip=False, validators=[LABEL])
    # The action holds each kind to its own length (a key file is longer than a key).
    secret = _secret_field(
        max_length=max(MAX_SECRET, MAX_ADMIN_SECRET),
        help_text="For an admin credential: its admin key, client secret or service "
        "account key file (JSON).",
    )
    rotation_period_days = forms.IntegerField(
        min_value=ROTATION_PERIOD_DAYS[0],
        max_value=ROTATION_PERIOD_DAYS[1],
        initial=90,
        label="Rotation period (days)",
    )
    base_url = forms.CharField(
        max_length=2048,
        required=False,
        strip=False,
        validators=[BASE_URL],
        label="Base URL (optional)",
        help_text="An Azure OpenAI resource, a regional or an OpenAI-compatible gateway; "
        "for an admin credential, where the provider's admin API lives.",
    )
    validate = forms.BooleanField(
        required=False, initial=True, label="Check the key with the provider first"
    )

    def __init__(self, *args: Any, slugs: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cast(forms.ChoiceField, self.fields["tenant"]).choices = [(s, s) for s in slugs]
        # Field name -> (provider, setting), from what each admin adapter declares.
        self.settings_of: dict[str, tuple[str, str]] = {}
        for provider, adapter in sorted(ADMIN_ADAPTERS.items()):
            for name, what in adapter.required_settings.items():
                self._add_setting(provider, name, name, what)
            for name, what in adapter.optional_settings.items():
                self._add_setting(provider, name, f"{name} (optional)", what)

    def _add_setting(self, provider: str, name: str, label: str, help_text: str) -> None:
        field = f"{provider}-{name}"
        self.fields[field] = forms.CharField(
            label=label,
            required=False,
            max_length=500,
            validators=[SETTING_VALUE],
            help_text=help_text[:1].upper() + help_text[1:] + ".",
        )
        self.settings_of[field] = (provider, name)

    def settings_sections(self) -> list[SettingsSection]:
        return [
            SettingsSection(
                provider,
                adapter.creates_keys,
                [self[f] for f, (p, _) in self.settings_of.items() if p == provider],
            )
            for provider, adapter in sorted(ADMIN_ADAPTERS.items())
        ]

    def clean_kind(self) -> str:
        return str(self.cleaned_data.get("kind") or KeyKind.API_KEY)

    def clean(self) -> dict[str, Any]:
        """The chosen provider's settings; a setting typed into another provider's section
        is refused rather than dropped."""
        data = super().clean() or {}
        provider, upstream = data.get("provider"), {}
        for field, (owner, name) in self.settings_of.items():
            value = data.pop(field, "")
            if not value or provider is None:
                continue
            if owner == provider:
                upstream[name] = value
            else:
                self.add_error(field, f"A setting for {owner}, not {provider}: leave it empty.")
        data["upstream"] = upstream
        return data

    def key_input(self) -> key_actions.KeyInput:
        data = self.cleaned_data
        return key_actions.KeyInput(
            data["provider"],
            data["label"],
            data["secret"],
            data["rotation_period_days"],
            data["base_url"],
            kind=data["kind"],
            upstream=data["upstream"],
        )


def _grace_field(label: str) -> forms.TypedChoiceField:
    """How long the old secret keeps working once the new one is current."""
    return forms.TypedChoiceField(choices=GRACE_PERIODS, coerce=int, initial=3600, label=label)


def _check_first() -> forms.BooleanField:
    return forms.BooleanField(
        required=False, initial=True, label="Check the new secret with the provider first"
    )


class RotateForm(forms.Form):
    """A new secret for a key, as POST .../keys/{id}/rotate takes one."""

    prefix = "rotate"

    secret = _secret_field("New secret")
    grace_period_seconds = _grace_field("Grace period for the old secret")
    validate = _check_first()


def _request_token() -> str:
    return uuid.uuid4().hex


def creates_keys(key: ProviderKey) -> bool:
    """Whether a staged rotation of `key` may leave out the secret: its admin credential's
    provider creates the new key (the rule `do_start_rotation` applies)."""
    adapter = admin_adapter(key.provider)
    return key.admin_credential_id is not None and adapter is not None and adapter.creates_keys


class StagedRotationForm(forms.Form):
    """A staged rotation, as POST .../keys/{id}/rotations takes one; the request token is
    made when the form is shown, so that submitting it twice starts one rotation."""

    prefix = "staged"

    secret = _secret_field("New secret to stage")
    grace_period_seconds = _grace_field("Grace period once it is current")
    validate = _check_first()
    client_request_token = forms.RegexField(
        REQUEST_TOKEN, initial=_request_token, widget=forms.HiddenInput
    )

    def __init__(self, *args: Any, key: ProviderKey, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if creates_keys(key):
            secret = self.fields["secret"]
            secret.required = False
            secret.help_text = f"Optional: leave empty to have {key.provider} create the new key."

    def renew_token(self) -> None:
        """A refused form comes back with a token of its own: the refused one may be spent."""
        self.data = {**self.data, self.add_prefix("client_request_token"): _request_token()}


@dataclass(frozen=True)
class Step:
    """One step of a staged rotation as the page shows it."""

    name: str
    state: str
    detail: str
    at: datetime | None


def _steps(rotation: Rotation) -> list[Step]:
    return [
        Step(
            STEP_NAMES.get(step["step"], step["step"]),
            step["state"],
            step.get("detail", ""),
            datetime.fromisoformat(step["at"]) if step.get("at") else None,
        )
        for step in rotation.steps
    ]


def _rotations_context(
    key: ProviderKey, staged: StagedRotationForm | None, problem: str
) -> dict[str, Any]:
    """The key's latest staged rotations with their steps, and the form that starts one."""
    latest = list(key.rotations.all()[:LATEST_ROTATIONS])
    return {
        "rotations": [(r, _steps(r), r.state in RUNNING_ROTATION) for r in latest],
        "rotation_running": any(r.state in RUNNING_ROTATION for r in latest),
        "staged": staged or StagedRotationForm(key=key),
        "rotation_problem": problem,
    }


class AdminCredentialForm(forms.Form):
    """The admin credential that rotates a key at its provider, as PATCH .../keys/{id}
    names one: the tenant's live admin credentials of the key's provider are offered, and
    whatever id is sent is checked by the action."""

    prefix = "admin"

    admin_credential = forms.UUIDField(
        required=False, label="Admin credential that rotates it", widget=forms.Select
    )

    def __init__(self, *args: Any, key: ProviderKey, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["admin_credential"].initial = key.admin_credential_id
        self.offered = list(queries.admin_credentials_for(key))
        choices = [("", "None: a person supplies each new secret")]
        choices += [(str(admin.pk), f"{admin.label} ({admin.hint})") for admin in self.offered]
        cast(forms.Select, self.fields["admin_credential"].widget).choices = choices


class Unechoed(forms.TextInput):
    """A text box that never shows what was typed into it again (it may be pasted
    anything, a secret included)."""

    def format_value(self, value: Any) -> str | None:
        return None


class RevokeForm(forms.Form):
    """Revoking cannot be undone, so the key's label is typed to confirm it."""

    prefix = "revoke"

    confirm = forms.CharField(
        max_length=100,
        strip=False,
        label="Type the key's label to confirm",
        widget=Unechoed(attrs={"autocomplete": "off", "spellcheck": "false"}),
    )

    def __init__(self, *args: Any, label: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.label = label

    def clean_confirm(self) -> str:
        typed: str = self.cleaned_data["confirm"]
        if typed != self.label:
            raise forms.ValidationError("That is not this key's label; nothing was revoked.")
        return typed


def _refused(form: forms.Form, error: DomainError) -> None:
    """Put a service's refusal on the form (with the provider's reason and what it means,
    when the provider refused the key)."""
    fields = error.extra.get("fields")
    if isinstance(fields, dict):  # the service named the fields at fault
        for name, problems in fields.items():
            form.add_error(name if name in form.fields else None, " ".join(map(str, problems)))
        return
    message = CONSOLE_WORDING.get(error.code, error.message)
    reason, result = error.extra.get("reason"), error.extra.get("result")
    if result and error.code == "key_rejected":
        message = f"{message} {meaning(str(result))}".strip()
    if reason:
        message = f"{message} The provider said: “{reason}”"
    field = FIELD_OF_CODE.get(error.code)
    form.add_error(field if field in form.fields else None, message)


def _with_retry(response: HttpResponse, error: DomainError) -> HttpResponse:
    """A refusal's page with the service's Retry-After (a provider or store outage)."""
    if error.retry_after:
        response["Retry-After"] = str(error.retry_after)
    return response


def _keys_page(
    request: HttpRequest, access: Access, form: OnboardForm | None = None, status: int = 200
) -> HttpResponse:
    covered = list(access.tenants().order_by("slug"))
    wanted = request.GET.get("tenant", "")
    rows = access.restrict(queries.keys())
    if wanted:
        rows = rows.filter(tenant=visible_tenant(access, wanted))
    context = {
        "keys": list(rows.order_by("tenant__slug", "provider", "label")),
        "tenants": covered,
        "tenant": wanted,
        "now": timezone.now(),
        "form": form or OnboardForm(slugs=[t.slug for t in covered], initial={"tenant": wanted}),
    }
    return page(request, "keys.html", context, status)


@staff_page("reader", methods=("GET", "POST"))
def key_list(request: HttpRequest, access: Access) -> HttpResponseBase:
    """The keys of the tenants the user covers (one tenant with ?tenant=, a 404 for one
    not covered, as the API's); security admins onboard a key here, checked with its
    provider first unless they say otherwise. A tenant she does not cover is a 404,
    audited in its chain, as in the API."""
    if request.method == "GET":
        return _keys_page(request, access)
    if not access.is_security_admin:
        return refuse(request)  # a reader (an auditor) asking for a change
    tenant = visible_tenant(access, request.POST.get("tenant", ""))
    form = OnboardForm(request.POST, slugs=[tenant.slug])
    if not form.is_valid():
        return _keys_page(request, access, form, 400)
    validate = form.cleaned_data["validate"]
    try:
        key = key_actions.do_onboard_key(
            tenant, form.key_input(), validate=validate, actor=actor_for(request.user)
        )
    except DomainError as error:
        _refused(form, error)
        return _with_retry(_keys_page(request, access, form, error.status), error)
    return _done(key, "onboarded-admin" if key.kind == KeyKind.ADMIN else "onboarded")


def _key(access: Access, slug: str, key_id: str) -> ProviderKey:
    """The key `key_id` of tenant `slug`, if the user covers that tenant; `Hidden`
    otherwise."""
    tenant = visible_tenant(access, slug)
    return visible_object(
        access, queries.keys_with_versions(), key_id, lambda key: key.tenant_id == tenant.pk
    )


def _done(key: ProviderKey, done: str) -> HttpResponseRedirect:
    url = reverse("console:key", args=[key.tenant.slug, key.pk])
    return HttpResponseRedirect(f"{url}?done={done}")


def _key_page(
    request: HttpRequest,
    access: Access,
    key: ProviderKey,
    *,
    rotate: RotateForm | None = None,
    revoke: RevokeForm | None = None,
    staged: StagedRotationForm | None = None,
    admin_form: AdminCredentialForm | None = None,
    problem: str = "",
    rotation_problem: str = "",
    status: int = 200,
) -> HttpResponse:
    validations = [
        (check, meaning(check.result)) for check in queries.recent_validations(key, limit=20)
    ]
    context = {
        "key": key,
        "region": store_region(key.store),
        "versions": sorted(key.versions.all(), key=lambda v: v.version, reverse=True),
        "validations": validations,
        "last_meaning": meaning(key.last_validation_result),
        "tokens": list(queries.live_tokens(key).select_related("principal")),
        "is_admin_credential": key.kind == KeyKind.ADMIN,
        "rotated_keys": list(key.rotated_keys.exclude(status=KeyStatus.REVOKED)),
        "rotate": rotate or RotateForm(),
        "revoke": revoke or RevokeForm(label=key.label),
        "admin_form": admin_form or AdminCredentialForm(key=key),
        "revoked": key.status == KeyStatus.REVOKED,
        "problem": problem,
        "done": DONE.get(request.GET.get("done", ""), ""),
        **_rotations_context(key, staged, rotation_problem),
    }
    return page(request, "key.html", context, status)


@staff_page("reader")
def key_detail(request: HttpRequest, access: Access, slug: str, key_id: str) -> HttpResponseBase:
    """One key: metadata (never the secret), versions, staged rotations step by step,
    validation history and live tokens; the forms that change it are shown to security
    admins."""
    return _key_page(request, access, _key(access, slug, key_id))


@staff_page("admin", methods=("POST",))
def key_validate(request: HttpRequest, access: Access, slug: str, key_id: str) -> HttpResponseBase:
    """Check the current version with the provider now."""
    key = _key(access, slug, key_id)
    try:
        key_actions.do_validate_key(key, actor=actor_for(request.user))
    except DomainError as error:
        shown = _key_page(request, access, key, problem=error.message, status=error.status)
        return _with_retry(shown, error)
    return _done(key, "validated")


@staff_page("admin", methods=("POST",))
def key_rotate(request: HttpRequest, access: Access, slug: str, key_id: str) -> HttpResponseBase:
    """A new secret becomes current; the old one stays usable for the grace period."""
    key = _key(access, slug, key_id)
    form = RotateForm(request.POST)
    if not form.is_valid():
        return _key_page(request, access, key, rotate=form, status=400)
    try:
        key_actions.do_rotate_key(key, **form.cleaned_data, actor=actor_for(request.user))
    except StoreConflict:
        form.add_error(None, "The key changed meanwhile; nothing was rotated. Try again.")
        return _key_page(request, access, key, rotate=form, status=409)
    except DomainError as error:
        _refused(form, error)
        # A revoked key has no rotate form to show the refusal on.
        above = error.message if key.status == KeyStatus.REVOKED else ""
        shown = _key_page(request, access, key, rotate=form, problem=above, status=error.status)
        return _with_retry(shown, error)
    return _done(key, "rotated")


@staff_page("admin", methods=("POST",))
def key_admin_credential(
    request: HttpRequest, access: Access, slug: str, key_id: str
) -> HttpResponseBase:
    """Name, or clear, the admin credential that rotates the key at its provider."""
    key = _key(access, slug, key_id)
    form = AdminCredentialForm(request.POST, key=key)
    if not form.is_valid():
        return _admin_credential_refused(request, access, key, form, 400)
    try:
        admin = queries.admin_credential_of(key.tenant, form.cleaned_data["admin_credential"])
        key_actions.do_set_admin_credential(key, admin, actor=actor_for(request.user))
    except DomainError as error:
        _refused(form, error)
        shown = _admin_credential_refused(request, access, key, form, error.status)
        return _with_retry(shown, error)
    return _done(key, "admin-credential-set" if admin else "admin-credential-cleared")


def _admin_credential_refused(
    request: HttpRequest, access: Access, key: ProviderKey, form: AdminCredentialForm, status: int
) -> HttpResponse:
    """The key's page with the refusal on its form, or above the page where the page has
    no such form (a revoked key, an admin credential)."""
    unshown = key.status == KeyStatus.REVOKED or key.kind == KeyKind.ADMIN
    above = " ".join(str(m) for errors in form.errors.values() for m in errors) if unshown else ""
    return _key_page(request, access, key, admin_form=form, problem=above, status=status)


@staff_page("admin", methods=("POST",))
def key_revoke(request: HttpRequest, access: Access, slug: str, key_id: str) -> HttpResponseBase:
    """Revoke the key once its label is typed: no token can use it any more, and every
    version is destroyed in the secret store."""
    key = _key(access, slug, key_id)
    form = RevokeForm(request.POST, label=key.label)
    if not form.is_valid():
        return _key_page(request, access, key, revoke=form, status=400)
    revoked = retirement.do_revoke_key(key, actor=actor_for(request.user))
    return _done(key, "revoked" if revoked.secrets_destroyed_at else "revoking")


@staff_page("admin", methods=("POST",))
def token_revoke(
    request: HttpRequest, access: Access, slug: str, key_id: str, token_id: str
) -> HttpResponseBase:
    """Revoke one of the key's live tokens at once."""
    key = _key(access, slug, key_id)
    token = _token(access, key, token_id)
    do_revoke_token(token, actor=actor_for(request.user))
    return _done(key, "token-revoked")


def _token(access: Access, key: ProviderKey, token_id: str) -> ScopedToken:
    return visible_object(
        access, queries.tokens(), token_id, lambda token: token.provider_key_id == key.pk
    )


urlpatterns = [
    path("keys/", key_list, name="keys"),
    path("tenants/<str:slug>/keys/<str:key_id>/", key_detail, name="key"),
    path("tenants/<str:slug>/keys/<str:key_id>/validate/", key_validate, name="key-validate"),
    path("tenants/<str:slug>/keys/<str:key_id>/rotate/", key_rotate, name="key-rotate"),
    path("tenants/<str:slug>/keys/<str:key_id>/revoke/", key_revoke, name="key-revoke"),
    path(
        "tenants/<str:slug>/keys/<str:key_id>/admin-credential/",
        key_admin_credential,
        name="key-admin-credential",
    ),
    path(
        "tenants/<str:slug>/keys/<str:key_id>/tokens/<str:token_id>/revoke/",
        token_revoke,
        name="token-revoke",
    ),
]
