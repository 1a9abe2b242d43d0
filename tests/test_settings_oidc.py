"""Single sign-on configuration: off unless configured; a half-configured client, a bad URL
or a role map naming an unknown role stops start-up, naming the variable."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from settings.env import Env
from settings.oidc import oidc_settings
from tenants.sso import SsoPolicy
from tests.test_settings import run_configured

GOOD = {
    "KEYWARD_OIDC_ISSUER": "https://id.example/realms/staff",
    "KEYWARD_OIDC_CLIENT_ID": "keyward",
    "KEYWARD_OIDC_CLIENT_SECRET": "client-secret-value",
    "KEYWARD_OIDC_AUTHORIZATION_ENDPOINT": "https://id.example/auth",
    "KEYWARD_OIDC_TOKEN_ENDPOINT": "https://id.example/token",
    "KEYWARD_OIDC_USERINFO_ENDPOINT": "https://id.example/userinfo",
    "KEYWARD_OIDC_JWKS_ENDPOINT": "https://id.example/certs",
    "KEYWARD_OIDC_ROLE_MAP": "keyward-admins=security_admin, keyward-auditors=auditor",
}


def test_single_sign_on_is_off_unless_configured():
    assert oidc_settings(Env({}))["OIDC_POLICY"] is None


def test_a_full_configuration_gives_the_policy_and_the_client(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("from-a-file\n")
    variables = {k: v for k, v in GOOD.items() if k != "KEYWARD_OIDC_CLIENT_SECRET"}
    variables["KEYWARD_OIDC_CLIENT_SECRET_FILE"] = str(secret)
    configured = oidc_settings(Env(variables))
    assert configured["OIDC_POLICY"] == SsoPolicy(
        role_map={"keyward-admins": "security_admin", "keyward-auditors": "auditor"},
        all_tenants_value="*",
    )
    assert configured["OIDC_RP_CLIENT_SECRET"] == "from-a-file"
    assert configured["OIDC_RP_SCOPES"] == "openid email profile"
    assert configured["OIDC_OP_JWKS_ENDPOINT"] == "https://id.example/certs"


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"KEYWARD_OIDC_ROLE_MAP": "keyward-admins=superuser"}, "KEYWARD_OIDC_ROLE_MAP"),
        ({"KEYWARD_OIDC_ROLE_MAP": "keyward-admins"}, "KEYWARD_OIDC_ROLE_MAP"),
        ({"KEYWARD_OIDC_ROLE_MAP": "a=auditor,a=security_admin"}, "KEYWARD_OIDC_ROLE_MAP"),
        ({"KEYWARD_OIDC_ROLE_MAP": None}, "KEYWARD_OIDC_ROLE_MAP"),
        ({"KEYWARD_OIDC_CLIENT_SECRET": None}, "KEYWARD_OIDC_CLIENT_SECRET"),
        ({"KEYWARD_OIDC_CLIENT_ID": None}, "KEYWARD_OIDC_CLIENT_ID"),
        ({"KEYWARD_OIDC_TOKEN_ENDPOINT": None}, "KEYWARD_OIDC_TOKEN_ENDPOINT"),
        ({"KEYWARD_OIDC_JWKS_ENDPOINT": "ftp://id.example/certs"}, "KEYWARD_OIDC_JWKS_ENDPOINT"),
        ({"KEYWARD_OIDC_ISSUER": "https://user:pw@id.example"}, "KEYWARD_OIDC_ISSUER"),
        ({"KEYWARD_OIDC_ROLE_CLAIM": "two words"}, "KEYWARD_OIDC_ROLE_CLAIM"),
        ({"KEYWARD_OIDC_BUTTON_LABEL": "x" * 81}, "KEYWARD_OIDC_BUTTON_LABEL"),
    ],
)
def test_a_malformed_configuration_is_refused_naming_the_variable(change, named):
    variables = {**GOOD, **change}
    variables = {k: v for k, v in variables.items() if v is not None}
    with pytest.raises(ImproperlyConfigured, match=named):
        oidc_settings(Env(variables))


def test_a_lone_oidc_variable_is_a_half_configured_client():
    with pytest.raises(ImproperlyConfigured, match="KEYWARD_OIDC_CLIENT_ID"):
        oidc_settings(Env({"KEYWARD_OIDC_ROLE_MAP": "a=auditor"}))


@pytest.mark.slow
def test_start_up_stops_on_a_role_map_naming_an_unknown_role(tmp_path):
    result = run_configured(tmp_path, **{**GOOD, "KEYWARD_OIDC_ROLE_MAP": "admins=owner"})
    assert result.returncode != 0
    assert "ImproperlyConfigured: KEYWARD_OIDC_ROLE_MAP" in result.stderr
    assert GOOD["KEYWARD_OIDC_CLIENT_SECRET"] not in result.stderr


@pytest.mark.parametrize("name", ["KEYWARD_OIDC_ISSUER", "KEYWARD_OIDC_TOKEN_ENDPOINT"])
def test_production_talks_to_the_provider_over_https_only(name):
    plain = {**GOOD, name: GOOD[name].replace("https://", "http://")}
    assert oidc_settings(Env(plain))["OIDC_POLICY"] is not None  # a laptop may use http
    with pytest.raises(ImproperlyConfigured, match=f"{name}: expected an https:// URL"):
        oidc_settings(Env(plain), production=True)
    assert oidc_settings(Env(GOOD), production=True)["OIDC_POLICY"] is not None
