"""The single sign-on pages without a provider: the button only when configured, 404 when
off, and the one hop that brings back the SameSite=Strict session cookie."""

from __future__ import annotations

import pytest

from tenants.sso import SsoPolicy
from tests.console.helpers import browser_client

pytestmark = pytest.mark.django_db


@pytest.fixture
def configured(settings):
    settings.OIDC_POLICY = SsoPolicy(role_map={"g": "auditor"}, label="Sign in with Acme ID")
    settings.OIDC_OP_AUTHORIZATION_ENDPOINT = "https://id.example/auth"
    settings.OIDC_RP_CLIENT_ID = "keyward"


def test_the_sign_in_page_offers_single_sign_on_only_when_configured(actors, settings):
    assert "/console/oidc/" not in browser_client().get("/console/login/").content.decode()
    assert browser_client().get("/console/oidc/authenticate/").status_code == 404
    settings.OIDC_POLICY = SsoPolicy(role_map={"g": "auditor"}, label="Sign in with Acme ID")
    page = browser_client().get("/console/login/?next=/console/tenants/").content.decode()
    assert "Sign in with Acme ID" in page
    assert 'href="/console/oidc/authenticate/?next=/console/tenants/"' in page


def test_starting_sends_the_browser_to_the_provider_with_state_nonce_and_pkce(actors, configured):
    answer = browser_client().get("/console/oidc/authenticate/")
    assert answer.status_code == 302 and answer["Location"].startswith("https://id.example/auth?")
    for part in ("state=", "nonce=", "code_challenge=", "code_challenge_method=S256"):
        assert part in answer["Location"]
    assert answer.cookies["keyward_session"]["path"] == "/console/"


def test_a_callback_without_the_session_cookie_takes_one_hop_of_our_own(actors, configured):
    answer = browser_client().get("/console/oidc/callback/?code=c&state=s")
    assert answer.status_code == 200
    assert answer["Refresh"] == "0; url=/console/oidc/callback/?code=c&state=s&again=1"
    assert not answer.cookies
    again = browser_client().get("/console/oidc/callback/?code=c&state=s&again=1")
    assert again.status_code == 400 and "did not complete" in again.content.decode()
