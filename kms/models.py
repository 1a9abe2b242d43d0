"""Provider keys and their versions. The database holds metadata only: the secret lives in
a secret store (under `local`, as ciphertext in LocalSecret; under `vault`, in Vault).
"""

from __future__ import annotations

import uuid

from django.db import models
from django.db.models import Q

from tenants.models import HashedCredential, Tenant


class KeyStatus(models.TextChoices):
    ACTIVE = "active"
    INVALID = "invalid"
    REVOKED = "revoked"


class Stage(models.TextChoices):
    """The staged model of AWS Secrets Manager: pending -> current -> previous ->
    destroyed. Only a staged rotation (`Rotation`) leaves a version pending while it is
    tested; the one-step rotation checks the secret before storing it."""

    PENDING = "pending"
    CURRENT = "current"
    PREVIOUS = "previous"
    DESTROYED = "destroyed"


class Validation(models.TextChoices):
    OK = "ok"
    INVALID = "invalid"
    ERROR = "error"


class KeyKind(models.TextChoices):
    """A provider key services use, or an admin credential that rotations use to create
    and retire keys at the provider (never released by exchange, never proxied)."""

    API_KEY = "api_key"
    ADMIN = "admin"


class ProviderKey(models.Model):
    """One customer-owned credential for one provider."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="provider_keys")
    provider = models.CharField(max_length=32)
    label = models.CharField(max_length=100)
    status = models.CharField(max_length=16, choices=KeyStatus.choices, default=KeyStatus.ACTIVE)
    store = models.CharField(max_length=63)
    store_path = models.CharField(max_length=255, unique=True)
    fingerprint = models.CharField(max_length=80)
    hint = models.CharField(max_length=8)
    base_url = models.CharField(max_length=2048, blank=True)
    rotation_period_days = models.PositiveIntegerField(default=90)
    rotation_due_at = models.DateTimeField(null=True, blank=True)
    current_version = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.CharField(max_length=150, blank=True)
    updated_at = models.DateTimeField(auto_now=True)
    last_validated_at = models.DateTimeField(null=True, blank=True)
    # When the periodic check is next due (null: at the next dispatch).
    next_check_at = models.DateTimeField(null=True, blank=True, db_index=True)
    last_validation = models.CharField(max_length=8, choices=Validation.choices, blank=True)
    last_validation_result = models.CharField(max_length=32, blank=True)
    last_validation_reason = models.CharField(max_length=500, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    secrets_destroyed_at = models.DateTimeField(null=True, blank=True)
    kind = models.CharField(max_length=16, choices=KeyKind.choices, default=KeyKind.API_KEY)
    # An admin credential's non-secret settings (a project, a resource...).
    upstream = models.JSONField(default=dict, blank=True)
    # The admin credential that rotates this key at its provider.
    admin_credential = models.ForeignKey(
        "self", on_delete=models.SET_NULL, null=True, blank=True, related_name="rotated_keys"
    )

    class Meta:
        ordering = ("created_at", "id")
        constraints = [
            models.UniqueConstraint(
                fields=("tenant", "fingerprint"),
                condition=~Q(status="revoked"),
                name="kms_key_unique_live_fingerprint",
            ),
            models.UniqueConstraint(
                fields=("tenant", "provider", "label"),
                condition=~Q(status="revoked"),
                name="kms_key_unique_live_label",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.tenant_id}/{self.provider}/{self.label}"


class KeyVersion(models.Model):
    """One secret of a key; `store_version` is its version number in the secret store."""

    key = models.ForeignKey(ProviderKey, on_delete=models.CASCADE, related_name="versions")
    version = models.PositiveIntegerField()
    stage = models.CharField(max_length=16, choices=Stage.choices)
    fingerprint = models.CharField(max_length=80)
    hint = models.CharField(max_length=8)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.CharField(max_length=150, blank=True)
    promoted_at = models.DateTimeField(null=True, blank=True)
    retire_after = models.DateTimeField(null=True, blank=True)
    destroyed_at = models.DateTimeField(null=True, blank=True)
    # The provider's id of this secret (a service account, a key slot...), where a
    # rotation created it upstream; it is retired there with the version.
    upstream_id = models.CharField(max_length=255, blank=True)

    class Meta:
        ordering = ("key", "version")
        constraints = [
            models.UniqueConstraint(fields=("key", "version"), name="kms_version_unique"),
            models.UniqueConstraint(
                fields=("key",), condition=Q(stage="current"), name="kms_one_current_version"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.key_id} v{self.version} {self.stage}"


class RotationState(models.TextChoices):
    """Where a staged rotation stands; the running states are the steps still to do."""

    CREATING = "creating"  # the new key is to be created at the provider
    TESTING = "testing"  # a pending version is stored; it is to be checked
    PROMOTING = "promoting"  # checked; it is to become current
    RETIRING = "retiring"  # current; the previous version waits for its grace period
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


# A key has at most one rotation in these states at a time.
RUNNING_ROTATION = (RotationState.CREATING, RotationState.TESTING, RotationState.PROMOTING)


class Rotation(models.Model):
    """A staged rotation of one key: create a pending version, test it with the provider,
    promote it to current, retire the previous one after the grace period. Each step is a
    job that is safe to run twice; `client_request_token` makes starting it idempotent."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    key = models.ForeignKey(ProviderKey, on_delete=models.CASCADE, related_name="rotations")
    client_request_token = models.CharField(max_length=64)
    mode = models.CharField(max_length=16, default="manual")
    state = models.CharField(max_length=16, choices=RotationState.choices)
    validate = models.BooleanField(default=True)
    grace_period_seconds = models.PositiveIntegerField()
    pending_version = models.PositiveIntegerField(null=True, blank=True)
    previous_version = models.PositiveIntegerField(null=True, blank=True)
    fingerprint = models.CharField(max_length=80)
    steps = models.JSONField(default=list)
    failure = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.CharField(max_length=150, blank=True)
    updated_at = models.DateTimeField(auto_now=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # No step before this: a worker holds the step that calls the provider's admin API,
    # or the provider asked to wait.
    not_before = models.DateTimeField(null=True, blank=True)
    # When a person was reminded that this scheduled rotation failed or was cancelled
    # (`key.rotation_due`): once per attempt, however often the schedule runs.
    reminded_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-created_at", "id")
        constraints = [
            models.UniqueConstraint(
                fields=("key", "client_request_token"), name="kms_rotation_unique_request"
            ),
            models.UniqueConstraint(
                fields=("key",),
                condition=Q(state__in=RUNNING_ROTATION),
                name="kms_one_running_rotation",
            ),
        ]
        indexes = [models.Index(fields=("state", "updated_at"), name="kms_rotation_state")]

    def __str__(self) -> str:
        return f"{self.key_id} rotation {self.id} {self.state}"


class ValidationResult(models.Model):
    """One check of a key with its provider: the classification and the provider's reason."""

    key = models.ForeignKey(ProviderKey, on_delete=models.CASCADE, related_name="validations")
    version = models.PositiveIntegerField()
    checked_at = models.DateTimeField(auto_now_add=True)
    result = models.CharField(max_length=32)
    http_status = models.PositiveSmallIntegerField(null=True, blank=True)
    reason = models.CharField(max_length=500, blank=True)
    duration_ms = models.PositiveIntegerField(default=0)
    trigger = models.CharField(max_length=16, default="manual")

    class Meta:
        ordering = ("-checked_at", "-id")
        indexes = [models.Index(fields=("key", "-checked_at"), name="kms_validation_recent")]

    def __str__(self) -> str:
        return f"{self.key_id} v{self.version} {self.result}"


class ScopedToken(HashedCredential):
    """A short-lived `kwt_` token: a lookup id and a keyed hash, bound to one principal,
    grant, tenant, key version and scope set. Opaque, so it can be listed and revoked."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    principal = models.ForeignKey(
        "tenants.ServicePrincipal", on_delete=models.CASCADE, related_name="tokens"
    )
    grant = models.ForeignKey("tenants.Grant", on_delete=models.CASCADE, related_name="tokens")
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="tokens")
    provider_key = models.ForeignKey(ProviderKey, on_delete=models.CASCADE, related_name="tokens")
    # A pinned version; None (the usual case) releases whatever version is current.
    key_version = models.PositiveIntegerField(null=True, blank=True)
    scopes = models.JSONField(default=list)
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    max_uses = models.PositiveIntegerField(null=True, blank=True)
    uses = models.PositiveIntegerField(default=0)
    # The models a proxied call may name (the grant's, or fewer); empty: any.
    allowed_models = models.JSONField(default=list, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=("provider_key", "expires_at"), name="kms_token_key_live"),
            models.Index(fields=("expires_at",), name="kms_token_expiry"),
        ]

    def __str__(self) -> str:
        return f"kwt_{self.key_id}..."


class RateCounter(models.Model):
    """A fixed-window request counter, for deployments without Redis."""

    bucket = models.CharField(max_length=120, primary_key=True)
    count = models.PositiveIntegerField(default=0)
    expires_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.bucket}={self.count}"


class MoveState(models.TextChoices):
    """Where a move of a tenant between secret stores stands; the running states are the
    steps still to do. Until `switching` is done the tenant works on the source store,
    from then on on the target."""

    COPYING = "copying"  # every live version is to be written to the target store
    VERIFYING = "verifying"  # copied; each copy is to be read back and compared
    SWITCHING = "switching"  # verified; every key is to point at the target
    DESTROYING = "destroying"  # switched; the source store is to be emptied
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"  # stopped before the switch by a security admin


# A tenant has at most one move in these states at a time.
RUNNING_MOVE = (
    MoveState.COPYING,
    MoveState.VERIFYING,
    MoveState.SWITCHING,
    MoveState.DESTROYING,
)
# While a move is in these states the tenant's keys gain no version and no key is added.
BEFORE_SWITCH = (MoveState.COPYING, MoveState.VERIFYING, MoveState.SWITCHING)
# A move that ended in these states left the tenant on its source; its copies are to go.
ABANDONED_MOVE = (MoveState.FAILED, MoveState.CANCELLED)


class TenantMove(models.Model):
    """A move of one tenant's secrets from the store it is on to another: copy every live
    version to a fresh path per key in the target (keeping the version numbers), verify
    each copy, switch the keys and the tenant in one transaction, then empty the source.
    `keys` holds, per key id, where it came from, where it goes and what was copied."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="moves")
    source = models.CharField(max_length=63)
    target = models.CharField(max_length=63)
    state = models.CharField(max_length=16, choices=MoveState.choices)
    steps = models.JSONField(default=list)
    keys = models.JSONField(default=dict)
    failure = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.CharField(max_length=150, blank=True)
    updated_at = models.DateTimeField(auto_now=True)
    switched_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # No step before this: a rotation that started in the race with the move must end,
    # or a version missing from the copy is given time to settle.
    not_before = models.DateTimeField(null=True, blank=True)
    # How often the move went back to copying a version it lacked (it fails past a cap).
    recopies = models.PositiveSmallIntegerField(default=0)
    # When the copies of a failed or cancelled move were emptied out of the target store.
    discarded_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-created_at", "id")
        constraints = [
            models.UniqueConstraint(
                fields=("tenant",),
                condition=Q(state__in=RUNNING_MOVE),
                name="kms_one_running_move",
            ),
        ]
        indexes = [models.Index(fields=("state", "updated_at"), name="kms_move_state")]

    def __str__(self) -> str:
        return f"{self.tenant_id} move {self.source}->{self.target} {self.state}"
