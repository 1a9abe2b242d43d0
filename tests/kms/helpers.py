from __future__ import annotations

import secrets
import string

from kms.models import ProviderKey
from stores.models import LocalSecret


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
