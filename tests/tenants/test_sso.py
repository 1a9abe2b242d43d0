"""Claims to a Keyward identity, and the audited action that applies it at every single
sign-on: the claims are the source of truth, and a refusal changes nothing."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from audit.actors import Actor
from audit.models import AuditEvent
from tenants.actions import do_set_admin_password, do_sync_sso_user
from tenants.models import AdminToken, StaffRole
from tenants.sso import SsoIdentity, SsoPolicy, SsoRefused, identity_for
from tests.factories import rand

POLICY = SsoPolicy(
    role_map={"admins": "security_admin", "auditors": "auditor"}, all_tenants_value="*"
)
pytestmark = pytest.mark.django_db


def _claims(**extra):
    return {"sub": "u-1", "groups": ["auditors"], "keyward_tenants": ["acme"], **extra}


def test_the_role_that_reaches_more_wins_and_the_username_is_namespaced():
    identity = identity_for(POLICY, _claims(groups="auditors admins", keyward_tenants="b, a"))
    assert identity == SsoIdentity("oidc:u-1", "security_admin", ("a", "b"))


def test_the_all_tenants_value_gives_every_tenant_and_nothing_else_does():
    assert identity_for(POLICY, _claims(keyward_tenants=["x", "*"])).tenant_slugs is None
    no_star = SsoPolicy(role_map=POLICY.role_map, all_tenants_value="")
    assert identity_for(no_star, _claims(keyward_tenants=["*"])).tenant_slugs == ("*",)


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        (_claims(groups=["staff"]), "no_role"),
        (_claims(groups=None), "no_role"),
        (_claims(keyward_tenants=[]), "no_tenant"),
        (_claims(keyward_tenants=None), "no_tenant"),
        (_claims(sub=""), "no_username"),
        (_claims(sub="a\nb"), "no_username"),
        (_claims(sub="x" * 200), "no_username"),
    ],
)
def test_claims_that_grant_nothing_usable_are_refused(claims, reason):
    with pytest.raises(SsoRefused) as refused:
        identity_for(POLICY, claims)
    assert refused.value.reason == reason


def test_unknown_tenant_slugs_are_ignored_while_one_remains(actors):
    a = actors.tenant_a
    user = do_sync_sso_user(SsoIdentity("oidc:" + rand(), "auditor", (a.slug, "nope")), via="oidc")
    staff = StaffRole.objects.get(user_id=user.pk)
    assert [t.slug for t in staff.tenants.all()] == [a.slug] and not staff.all_tenants
    assert (
        not user.has_usable_password() and not AdminToken.objects.filter(user_id=user.pk).exists()
    )


def test_naming_only_unknown_tenants_is_refused_and_nothing_changes(actors):
    username = "oidc:" + rand()
    before = AuditEvent.objects.count()
    with pytest.raises(SsoRefused) as refused:
        do_sync_sso_user(SsoIdentity(username, "auditor", ("nope",)), via="oidc")
    assert refused.value.reason == "unknown_tenant"
    assert not get_user_model().objects.filter(username=username).exists()
    assert AuditEvent.objects.count() == before


def test_a_disabled_account_is_refused(actors):
    username = "oidc:" + rand()
    user = do_sync_sso_user(SsoIdentity(username, "auditor", None), via="oidc")
    get_user_model().objects.filter(pk=user.pk).update(is_active=False)
    with pytest.raises(SsoRefused):
        do_sync_sso_user(SsoIdentity(username, "auditor", None), via="oidc")


def test_a_single_sign_on_user_gets_no_password_and_a_local_name_cannot_be_one(actors):
    username = "oidc:" + rand()
    do_sync_sso_user(SsoIdentity(username, "security_admin", None), via="oidc")
    with pytest.raises(SsoRefused):
        do_set_admin_password(username, "a long enough password", actor=Actor.system("t"))
    with pytest.raises(CommandError, match="username"):
        call_command("create_admin", username, role="security_admin")
