"""Where a provider key may be sent: the strict base_url policy of production."""

from __future__ import annotations

import ssl

import pytest

from core.egress import tls_context
from kms.egress import check_base_url, pin
from kms.exceptions import ForbiddenBaseUrl


@pytest.fixture
def strict(settings):
    settings.PROVIDER_URL_POLICY = "strict"
    settings.PROVIDER_URL_ALLOWLIST = []
    return settings


@pytest.mark.parametrize(
    "url",
    [
        "http://api.openai.com/v1",
        "https://127.0.0.1/v1",
        "https://localhost/v1",
        "https://10.1.2.3",
        "https://172.16.0.9",
        "https://192.168.1.1",
        "https://169.254.169.254/latest",
        "https://[::1]/v1",
        "https://[fd00::1]",
        "https://[::ffff:127.0.0.1]",
        "https://100.64.0.1",
        "https://0.0.0.0",
        "https://user:pass@api.openai.com",
        "https://api.openai.com/v1?x=1",
        "https://api.openai.com/v1#f",
        "ftp://api.openai.com",
        "https://",
        "not a url",
        "https://exa mple.com",
        "https://ехample.com",
        "https://no-such-host.invalid",
        # IPv6 forms that carry a private or metadata IPv4 address
        "https://[2002:a9fe:a9fe::]/",  # 6to4 of 169.254.169.254
        "https://[2002:7f00:1::]/",  # 6to4 of 127.0.0.1
        "https://[64:ff9b::a9fe:a9fe]/",  # NAT64 of 169.254.169.254
        "https://[64:ff9b:1::a00:1]/",  # local-use NAT64 of 10.0.0.1
        "https://[2001:0:4136:e378:8000:63bf:5601:56fe]/",  # Teredo, client 169.254.169.1
        "https://[::a9fe:a9fe]/",  # IPv4-compatible 169.254.169.254
        "https://[::ffff:a9fe:a9fe]/",  # IPv4-mapped 169.254.169.254
        "https://api.openai.com:notaport/v1",
        "https://[::1",
        "https://[::1]x/v1",
    ],
)
def test_strict_policy_refuses(strict, url):
    with pytest.raises(ForbiddenBaseUrl):
        check_base_url(url)


@pytest.mark.parametrize("url", ["https://1.1.1.1/v1", "https://[2606:4700:4700::1111]/openai"])
def test_strict_policy_allows_public_https(strict, url):
    assert check_base_url(url + "/") == url


def test_an_allowlisted_host_or_network_may_be_private(strict):
    strict.PROVIDER_URL_ALLOWLIST = ["10.0.0.0/8", "localhost"]
    assert check_base_url("https://10.20.30.40/v1") == "https://10.20.30.40/v1"
    assert check_base_url("http://localhost:8080/v1") == "http://localhost:8080/v1"
    with pytest.raises(ForbiddenBaseUrl):
        check_base_url("https://192.168.0.1")


def test_the_open_policy_still_refuses_credentials_in_the_url(settings):
    settings.PROVIDER_URL_POLICY = "open"
    assert check_base_url("http://127.0.0.1:8080/v1") == "http://127.0.0.1:8080/v1"
    for url in ("http://user:pw@127.0.0.1:8080/v1", "http://[::1", "http://h:99999/v1"):
        with pytest.raises(ForbiddenBaseUrl):
            check_base_url(url)


@pytest.mark.parametrize("url", ["https://[2002:0101:0101::]/v1", "https://[64:ff9b::101:101]/v1"])
def test_carried_public_ipv4_addresses_pass(strict, url):
    assert check_base_url(url) == url


def test_an_allowlist_entry_may_name_a_port(strict):
    strict.PROVIDER_URL_ALLOWLIST = ["10.0.0.5:8443", "[fd00::5]:9443"]
    assert check_base_url("https://10.0.0.5:8443/v1") == "https://10.0.0.5:8443/v1"
    assert check_base_url("https://[fd00::5]:9443/v1") == "https://[fd00::5]:9443/v1"
    for other in ("https://10.0.0.5/v1", "https://10.0.0.5:8444/v1", "https://[fd00::5]/v1"):
        with pytest.raises(ForbiddenBaseUrl):
            check_base_url(other)


def test_a_call_connects_to_the_address_that_was_checked(strict):
    strict.PROVIDER_URL_ALLOWLIST = ["127.0.0.0/8", "::1/128"]
    target = pin("https://localhost:8443/v1/models")
    assert target.pinned
    assert target.url in ("https://127.0.0.1:8443/v1/models", "https://[::1]:8443/v1/models")
    assert target.headers() == {"Host": "localhost:8443"}
    assert target.extensions() == {"sni_hostname": "localhost"}
    public = pin("https://1.1.1.1/v1")
    assert (public.url, public.pinned) == ("https://1.1.1.1/v1", True)
    with pytest.raises(ForbiddenBaseUrl):
        pin("https://[2002:a9fe:a9fe::]/v1")


def test_the_open_policy_pins_nothing(settings):
    settings.PROVIDER_URL_POLICY = "open"
    target = pin("http://127.0.0.1:8080/v1")
    assert (target.url, target.pinned, target.headers()) == ("http://127.0.0.1:8080/v1", False, {})


@pytest.mark.django_db
def test_the_policy_of_the_moment_holds_for_keys_stored_before_it(actors, provider_stub, settings):
    from kms.models import ProviderKey
    from tests.kms.helpers import onboard

    settings.PROVIDER_URL_POLICY = "open"
    api, slug = actors.as_("alice"), actors.tenant_a.slug
    stored = onboard(api, slug, base_url=provider_stub.url + "/v1")
    assert stored.status_code == 201, stored.content
    key_id = stored.json()["id"]
    seen = len(provider_stub.seen)
    settings.PROVIDER_URL_POLICY = "strict"  # tightened after the key was stored
    settings.PROVIDER_URL_ALLOWLIST = []
    checked = api.post(f"/api/v1/tenants/{slug}/keys/{key_id}/validate").json()
    assert checked["result"] == "provider_unavailable", checked
    assert "egress policy" in checked["reason"]
    assert len(provider_stub.seen) == seen, "the key was not sent"
    assert ProviderKey.objects.get(pk=key_id).status == "active", "a policy is not the key's fault"


def test_outbound_calls_share_one_verifying_tls_context():
    """One context per process (building one loads the CA bundle), and it verifies the
    certificate and the host name of every provider, admin API and webhook receiver."""
    shared = tls_context()
    assert shared is tls_context()
    assert shared.verify_mode == ssl.CERT_REQUIRED and shared.check_hostname
    assert shared.cert_store_stats()["x509_ca"] > 0
