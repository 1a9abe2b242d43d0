"""Where a provider key may be sent: the strict base_url policy of production."""

from __future__ import annotations

import pytest

from kms.egress import check_base_url
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
    with pytest.raises(ForbiddenBaseUrl):
        check_base_url("http://user:pw@127.0.0.1:8080/v1")
