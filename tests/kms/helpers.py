from __future__ import annotations

import secrets
import string
from collections.abc import Iterator
from typing import Any, TypeVar

from audit.models import AuditEvent
from kms import jobs
from kms.actions.rotations import Advanced
from kms.models import ProviderKey
from stores.models import LocalSecret
from tests.admin_stubs.routed import served
from tests.kms.test_canary import assert_absent
from tests.provider_stub import ProviderStub

S = TypeVar("S", bound=ProviderStub)


def openai_key(tag: str = "") -> str:
    body = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(40))
    return f"sk-proj-{tag}{body}"


def onboard(api, slug: str, secret: str | None = None, *, validate: bool = True, **fields):
    body = {
        "provider": "openai",
        "label": f"prod-{secrets.token_hex(3)}",
        "secret": secret or openai_key(),
        **fields,
    }
    suffix = "" if validate else "?validate=false"
    return api.post(f"/api/v1/tenants/{slug}/keys{suffix}", body, format="json")


def nothing_stored(tenant, bao=None, prefix: str = "") -> bool:
    """No key metadata and no secret anywhere for this tenant."""
    if ProviderKey.objects.filter(tenant=tenant).exists():
        return False
    if LocalSecret.objects.filter(path__startswith=f"{tenant.id}/").exists():
        return False
    if bao is not None:
        import hvac.exceptions

        try:
            listed = bao.client().secrets.kv.v2.list_secrets(
                path=f"{prefix}/{tenant.id}", mount_point=bao.kv_mount
            )
        except hvac.exceptions.InvalidPath:
            return True
        return not listed["data"]["keys"]
    return True


def rotate(world, key: ProviderKey, **body) -> dict:
    """Start a rotation of `key` through the API, as tenant A's admin (202)."""
    url = f"/api/v1/tenants/{key.tenant.slug}/keys/{key.pk}/rotations"
    response = world.actors.as_("alice").post(url, body, format="json")
    assert response.status_code == 202, response.content
    return dict(response.json())


def settle(rotation_id: str, tries: int = 5) -> Advanced:
    """Run the rotation's job until it stops moving: finished, retiring, or waiting on
    the provider (a Retry-After); what the last run left."""
    advanced = jobs.advance_rotation(rotation_id)
    for _ in range(tries):
        if advanced.state not in ("creating", "testing", "promoting"):
            break
        if advanced.retry_after is not None:
            break
        advanced = jobs.advance_rotation(rotation_id)
    return advanced


def end_grace() -> int:
    """The jobs retire every previous version whose grace period is over; how many."""
    return sum(jobs.retire_version(pk) for pk in jobs.due_versions())


def assert_kept_secret(world, key: ProviderKey, secrets_: list[str], logs: str) -> None:
    """None of `secrets_` in the API's answers about the key, the audit events or `logs`."""
    api, base = world.actors.as_("alice"), f"/api/v1/tenants/{key.tenant.slug}/keys"
    shown = "".join(
        api.get(url).content.decode()
        for url in (base, f"{base}/{key.pk}", f"{base}/{key.pk}/rotations")
    )
    events = str(list(AuditEvent.objects.values_list("details", flat=True)))
    for secret in secrets_:
        assert_absent(secret, shown, "the API's answers")
        assert_absent(secret, events, "audit events")
        assert_absent(secret, logs, "the logs")


def admin_api(settings: Any, provider: str, stub: S, url: str = "") -> Iterator[S]:
    """A fixture's body: `provider`'s admin API is `stub` (at `url`, else its root)."""
    settings.PROVIDER_ADMIN_BASE_URLS = {provider: url or stub.url}
    yield from served(stub)
