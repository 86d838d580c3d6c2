"""What a job's notify_url may name (no servers: IP literals, and `localhost` from /etc/hosts), and the signature."""

from __future__ import annotations

import subprocess
import sys

import pytest

from farm.errors import ValidationError
from farm.webhooks import addresses
from farm.webhooks.courier import sign

REFUSED = [
    "http://127.0.0.1:9/hook",
    "http://localhost/hook",
    "http://10.1.2.3/x",
    "http://192.168.0.10/",
    "http://172.16.5.4/",
    "http://169.254.169.254/latest/meta-data",  # a cloud's metadata service
    "http://100.64.0.1/",  # shared address space (CGNAT)
    "http://[::1]:8080/",
    "http://[fd00::1]/",
    "http://[::ffff:127.0.0.1]/",  # IPv4-mapped loopback
    "http://0.0.0.0/",
    "http://2130706433/",  # 127.0.0.1 written as one number: resolved like any name
]


@pytest.mark.parametrize("url", REFUSED)
def test_private_and_loopback_addresses_are_refused_naming_the_field(url):
    with pytest.raises(ValidationError) as raised:
        addresses.check_notify_url(url, allow_private=False)
    assert raised.value.field == "notify_url" and raised.value.code == "private_address"


@pytest.mark.parametrize("url", REFUSED[:3])
def test_private_addresses_pass_when_the_farm_allows_them(url):
    assert addresses.check_notify_url(url, allow_private=True) == url


@pytest.mark.parametrize("url", ["http://93.184.215.14/hook", "https://[2606:4700::1111]/x?token=1"])
def test_public_addresses_pass(url):
    assert addresses.check_notify_url(url, allow_private=False) == url


@pytest.mark.parametrize(
    "url", ["ftp://93.184.215.14/", "not a url", "http:///path", "http://93.184.215.14:99999/", "http://a\x07b/"]
)
def test_malformed_urls_are_refused_naming_the_field(url):
    with pytest.raises(ValidationError) as raised:
        addresses.check_notify_url(url, allow_private=True)
    assert raised.value.field == "notify_url" and raised.value.code == "bad_url"


def test_a_name_that_does_not_resolve_is_refused():
    with pytest.raises(ValidationError) as raised:
        addresses.check_notify_url("http://no-such-host.invalid/hook", allow_private=False)
    assert raised.value.field == "notify_url" and "does not resolve" in raised.value.message


def test_left_out_is_none():
    assert addresses.check_notify_url("  ", allow_private=False) is None


def test_signature_is_hmac_sha256_of_the_body():
    # RFC 4231-style known answer: HMAC-SHA256("key", "The quick brown fox jumps over the lazy dog")
    body = b"The quick brown fox jumps over the lazy dog"
    assert sign(body, "key") == "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"


def test_the_cli_leaves_prometheus_client_unimported():
    """`farm web` and `farm worker` set prometheus-client's multiprocess folder before it is imported (it picks
    its mode then): nothing the command line imports at start may import it first."""
    code = "import sys, farm.cli.commands, farm.jobs.states; print('prometheus_client' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
