"""Users, passwords and claims from users.json, read afresh at every request, so a test
changes what the provider says about a user by rewriting the file."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import User
from oauth2_provider.oauth2_validators import OAuth2Validator


def users() -> dict[str, Any]:
    found: dict[str, Any] = json.loads(
        (Path(os.environ["OIDC_PROVIDER_DIR"]) / "users.json").read_text()
    )
    return found


class UsersFileBackend(ModelBackend):
    """A user of users.json with its password; the Django user is made on first use."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        entry = users().get(username or "")
        if entry is None or entry["password"] != password:
            return None
        user, _ = User.objects.get_or_create(username=username)
        return user


class ClaimsValidator(OAuth2Validator):  # type: ignore[misc]
    # Every claim of users.json, whatever the scopes asked.
    oidc_claim_scope = None

    def get_additional_claims(self, request):
        entry = users().get(request.user.username, {})
        return {"sub": request.user.username, **entry.get("claims", {})}
