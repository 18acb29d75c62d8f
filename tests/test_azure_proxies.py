"""Each client's proxy is the environment's, worked out when the client is made (not by aiohttp
on every request)."""

from __future__ import annotations

import pytest

from imagedist._backends.azure.arm import ArmClients
from imagedist._backends.azure.proxies import proxy_options

PROXY_VARIABLES = ("HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY", "https_proxy", "http_proxy", "no_proxy")


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_no_proxy_in_the_environment_means_none_and_no_lookup_per_request(
    environment: pytest.MonkeyPatch,
) -> None:
    assert proxy_options("https://acct.blob.core.windows.net") == {"use_env_settings": False}


def test_the_proxy_of_the_endpoints_scheme_is_used(environment: pytest.MonkeyPatch) -> None:
    environment.setenv("https_proxy", "http://proxy.example:3128")
    environment.setenv("http_proxy", "http://plain.example:8080")

    assert proxy_options("https://acct.table.core.windows.net") == {
        "use_env_settings": False,
        "proxies": {"https": "http://proxy.example:3128"},
    }
    assert proxy_options("http://127.0.0.1:10000/devstoreaccount1")["proxies"] == {
        "http": "http://plain.example:8080"
    }


def test_no_proxy_exempts_a_host(environment: pytest.MonkeyPatch) -> None:
    environment.setenv("https_proxy", "http://proxy.example:3128")
    environment.setenv("no_proxy", ".core.windows.net,localhost")

    assert "proxies" not in proxy_options("https://acct.blob.core.windows.net")
    assert "proxies" in proxy_options("https://management.azure.com")


def test_arm_clients_carry_the_endpoints_proxy(environment: pytest.MonkeyPatch) -> None:
    environment.setenv("https_proxy", "http://proxy.example:3128")

    clients = ArmClients(object(), endpoint="https://management.azure.com/")  # type: ignore[arg-type]

    assert clients.options["use_env_settings"] is False
    assert clients.options["proxies"] == {"https": "http://proxy.example:3128"}


def test_proxies_read_once_are_used_as_given(environment: pytest.MonkeyPatch) -> None:
    environment.setenv("https_proxy", "http://ignored.example:1")
    read_before = {"https": "http://proxy.example:3128", "no": "localhost"}

    assert proxy_options("https://acct.blob.core.windows.net", read_before)["proxies"] == {
        "https": "http://proxy.example:3128"
    }
    assert "proxies" not in proxy_options("https://localhost:8443", read_before)
