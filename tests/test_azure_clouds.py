"""`[azure] cloud`: one setting for the ARM endpoint, its token scope, storage and the authority;
and the pre-issued ARM token never given to storage."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from azure.core.exceptions import ClientAuthenticationError

from imagedist import ConfigError
from imagedist._config import AzureEndpoints, parse_config

STAGING = {"subscription": "s", "region": "westeurope", "account": "stagingacct"}
TARGET = {"subscription": "s", "region": "eastus", "account": "targetacct"}
LOOPBACK_ARM = "https://127.0.0.1:8443"


def _endpoints(**azure: Any) -> AzureEndpoints:
    raw = {"backend": "azure", "staging": STAGING, "targets": [TARGET], "azure": azure}
    return parse_config(raw).azure.endpoints()


@pytest.mark.parametrize(
    ("cloud", "arm", "suffix", "authority"),
    [
        pytest.param(
            "public",
            "https://management.azure.com",
            "core.windows.net",
            "login.microsoftonline.com",
            id="public",
        ),
        pytest.param(
            "usgov",
            "https://management.usgovcloudapi.net",
            "core.usgovcloudapi.net",
            "login.microsoftonline.us",
            id="usgov",
        ),
        pytest.param(
            "china",
            "https://management.chinacloudapi.cn",
            "core.chinacloudapi.cn",
            "login.chinacloudapi.cn",
            id="china",
        ),
    ],
)
def test_cloud_sets_every_endpoint_and_the_arm_scope_together(
    cloud: str, arm: str, suffix: str, authority: str
) -> None:
    assert _endpoints(cloud=cloud) == AzureEndpoints(
        cloud=cloud,
        arm=arm,
        arm_scope=f"{arm}/.default",
        authority=authority,
        blob=f"https://{{account}}.blob.{suffix}",
        table=f"https://{{account}}.table.{suffix}",
    )


def test_default_is_the_public_cloud() -> None:
    assert _endpoints() == _endpoints(cloud="public")


def test_a_test_server_endpoint_keeps_the_clouds_token_scope() -> None:
    endpoints = _endpoints(cloud="usgov", arm_endpoint=LOOPBACK_ARM)
    assert endpoints.arm == LOOPBACK_ARM
    assert endpoints.arm_scope == "https://management.usgovcloudapi.net/.default"
    assert endpoints.authority == "login.microsoftonline.us"


def test_an_endpoint_of_a_known_cloud_decides_the_cloud_when_none_is_named() -> None:
    endpoints = _endpoints(arm_endpoint="https://management.chinacloudapi.cn/")
    assert endpoints.cloud == "china"
    assert endpoints.arm_scope == "https://management.chinacloudapi.cn/.default"
    assert endpoints.blob == "https://{account}.blob.core.chinacloudapi.cn"


def test_an_explicit_audience_wins() -> None:
    endpoints = _endpoints(arm_endpoint=LOOPBACK_ARM, arm_audience="https://arm.example.test/")
    assert endpoints.arm_scope == "https://arm.example.test/.default"


@pytest.mark.parametrize(
    ("azure", "needle"),
    [
        pytest.param(
            {"cloud": "public", "arm_endpoint": "https://management.usgovcloudapi.net"},
            "cloud = 'public' but arm_endpoint 'https://management.usgovcloudapi.net' is in the"
            " 'usgov' cloud",
            id="cloud-vs-arm",
        ),
        pytest.param(
            {
                "arm_endpoint": "https://management.azure.com",
                "blob_endpoint": "https://{account}.blob.core.chinacloudapi.cn",
            },
            "but blob_endpoint 'https://{account}.blob.core.chinacloudapi.cn' is in the 'china'",
            id="arm-vs-blob",
        ),
    ],
)
def test_endpoints_of_two_clouds_are_refused(azure: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        _endpoints(**azure)
    message = str(info.value)
    assert needle in message and "same cloud" in message
    assert info.value.key_path == "azure"
    assert "\n" not in message and message.endswith(".")


def test_an_unknown_cloud_is_refused_naming_the_key() -> None:
    with pytest.raises(ConfigError) as info:
        _endpoints(cloud="germany")
    assert info.value.key_path == "azure.cloud"
    assert "germany" in str(info.value)


def test_the_pre_issued_arm_token_refuses_any_other_scope(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from imagedist._backends.azure import TOKEN_VARIABLE, _credentials

    monkeypatch.setenv(TOKEN_VARIABLE, "pre-issued-arm-token")
    raw = {"backend": "azure", "staging": STAGING, "targets": [TARGET]}
    options = parse_config(raw).azure
    endpoints = options.endpoints()
    credentials = _credentials(options, endpoints)
    arm = credentials.arm

    async def tokens() -> str:
        try:
            token = await arm.get_token(endpoints.arm_scope)
            with pytest.raises(ClientAuthenticationError, match="only"):
                await arm.get_token("https://storage.azure.com/.default")
            return str(token.token)
        finally:
            for close in credentials.closers:
                await close()

    assert asyncio.run(tokens()) == "pre-issued-arm-token"
    assert credentials.storage is not None and credentials.storage is not arm


def test_the_principal_is_read_from_a_token_for_the_clouds_arm() -> None:
    """Setup reads the signed-in identity's object id from an ARM token: one for the cloud's
    own ARM audience, as every other ARM call asks (a public-cloud token means nothing in
    US Gov or China)."""
    import base64
    import json
    import time

    from azure.core.credentials import AccessToken

    from imagedist._backends.azure.provisioner import AzureProvisioner

    claims = base64.urlsafe_b64encode(json.dumps({"oid": "object-1"}).encode()).decode()
    scopes: list[str] = []

    class Recording:
        async def get_token(self, *asked: str, **_: Any) -> AccessToken:
            scopes.extend(asked)
            return AccessToken(f"e30.{claims.rstrip('=')}.", int(time.time()) + 3600)

        async def close(self) -> None:
            return None

    gov = "https://management.usgovcloudapi.net/.default"
    provisioner = AzureProvisioner(
        Recording(),  # type: ignore[arg-type]
        arm_endpoint="https://management.usgovcloudapi.net",
        arm_scope=gov,
    )
    assert asyncio.run(provisioner.principal_id()) == "object-1"
    assert scopes == [gov]
