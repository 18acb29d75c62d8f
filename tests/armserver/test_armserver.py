"""The test ARM server, driven by the real azure-mgmt clients (sync and ``.aio``) over HTTPS."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import ssl
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
)
from azure.mgmt.compute import ComputeManagementClient
from azure.mgmt.compute.aio import ComputeManagementClient as AioComputeManagementClient
from azure.mgmt.compute.models import (
    Image,
    ImageOSDisk,
    ImageProperties,
    ImageStorageProfile,
)
from azure.mgmt.resource.resources import ResourceManagementClient
from azure.mgmt.resource.resources.aio import (
    ResourceManagementClient as AioResourceManagementClient,
)
from azure.mgmt.storage import StorageManagementClient
from azure.mgmt.storage.aio import StorageManagementClient as AioStorageManagementClient
from azure.mgmt.storage.models import (
    Sku,
    StorageAccountCheckNameAvailabilityParameters,
    StorageAccountCreateParameters,
)
from azure.storage.blob import BlobServiceClient, BlobType

from armserver import (
    ARM_SCOPE,
    ArmServer,
    ArmServerProcess,
    ArmState,
    AsyncStaticTokenCredential,
    CertPaths,
    StaticTokenCredential,
    sourceblob,
)
from armserver.apiversions import installed_api_versions
from armserver.certs import _generate_with_openssl
from armserver.server import Request, Response
from armserver.tokens import DEFAULT_TENANT as TENANT
from armserver.tokens import mint_token
from imagedist._vhd._footer import fixed_footer

SUB = "00000000-0000-0000-0000-00000000000a"
OTHER_SUB = "sub-bravo"  # ARM ids are GUIDs; the clients do not check, imagedist tests use names
CRED = StaticTokenCredential()
AZURITE = "http://127.0.0.1:10000"
MiB = 1024 * 1024


def rm(arm: Any, sub: str = SUB, **kw: Any) -> ResourceManagementClient:
    return ResourceManagementClient(kw.pop("credential", CRED), sub, **arm.client_kwargs(**kw))


def storage(arm: Any, sub: str = SUB) -> StorageManagementClient:
    return StorageManagementClient(CRED, sub, **arm.client_kwargs())


def compute(arm: Any, sub: str = SUB) -> ComputeManagementClient:
    return ComputeManagementClient(CRED, sub, **arm.client_kwargs())


def image_body(blob_uri: str, region: str = "westeurope", **tags: str) -> Image:
    return Image(
        location=region,
        tags=tags or None,
        properties=ImageProperties(
            storage_profile=ImageStorageProfile(
                os_disk=ImageOSDisk(os_type="Linux", os_state="Generalized", blob_uri=blob_uri)
            ),
            hyper_v_generation="V2",
        ),
    )


def make_group(arm: Any, name: str, sub: str = SUB, region: str = "westeurope") -> None:
    with rm(arm, sub) as client:
        client.resource_groups.create_or_update(name, {"location": region})


# ---------------------------------------------------------------------- resource groups


def test_resource_group_create_get_exists_list_delete(arm: ArmServerProcess) -> None:
    with rm(arm) as client:
        created = client.resource_groups.create_or_update(
            "rg-one", {"location": "westeurope", "tags": {"a": "1"}}
        )
        assert (created.name, created.location, created.tags) == (
            "rg-one",
            "westeurope",
            {"a": "1"},
        )
        assert created.properties is not None
        assert created.properties.provisioning_state == "Succeeded"
        assert client.resource_groups.get("RG-ONE").name == "rg-one"  # ARM names ignore case
        assert client.resource_groups.check_existence("rg-one") is True
        assert client.resource_groups.check_existence("rg-two") is False
        assert [g.name for g in client.resource_groups.list()] == ["rg-one"]

        client.resource_groups.begin_delete("rg-one").result()
        assert arm.request_count("location_get") >= 1
        assert client.resource_groups.check_existence("rg-one") is False
        with pytest.raises(ResourceNotFoundError) as err:
            client.resource_groups.get("rg-one")
        assert err.value.error is not None and err.value.error.code == "ResourceGroupNotFound"


# ---------------------------------------------------------------------- storage accounts


def test_storage_account_name_availability_create_get_list_delete(arm: ArmServerProcess) -> None:
    make_group(arm, "rg-st")
    with storage(arm) as client, storage(arm, OTHER_SUB) as other:
        check = client.storage_accounts.check_name_availability
        bad = check(StorageAccountCheckNameAvailabilityParameters(name="Bad_Name"))
        assert (bad.name_available, bad.reason) == (False, "AccountNameInvalid")
        assert (
            check({"name": "imgdst01", "type": "Microsoft.Storage/storageAccounts"}).name_available
            is True
        )

        params = StorageAccountCreateParameters(
            sku=Sku(name="Standard_LRS"), kind="StorageV2", location="westeurope"
        )
        account = client.storage_accounts.begin_create("rg-st", "imgdst01", params).result()
        assert account.name == "imgdst01"
        assert account.provisioning_state == "Succeeded"
        assert account.primary_endpoints.blob == "https://imgdst01.blob.core.windows.net/"
        assert arm.request_count("location_get") >= 1  # the LRO went through Location polling

        taken = other.storage_accounts.check_name_availability(
            {"name": "imgdst01", "type": "Microsoft.Storage/storageAccounts"}
        )
        assert (taken.name_available, taken.reason) == (False, "AlreadyExists")

        got = client.storage_accounts.get_properties("rg-st", "imgdst01")
        assert got.sku is not None
        assert (got.location, got.sku.name) == ("westeurope", "Standard_LRS")
        assert [a.name for a in client.storage_accounts.list_by_resource_group("rg-st")] == [
            "imgdst01"
        ]

        # a second create of the same account in the same group answers at once with it
        again = client.storage_accounts.begin_create("rg-st", "imgdst01", params).result()
        assert again.id == account.id

        with pytest.raises(ResourceNotFoundError) as err:
            client.storage_accounts.get_properties("rg-st", "nosuchacct")
        assert err.value.error is not None and err.value.error.code == "ResourceNotFound"
        with pytest.raises(HttpResponseError) as missing_location:
            no_location = StorageAccountCreateParameters(
                {"sku": {"name": "Standard_LRS"}, "kind": "StorageV2"}
            )
            client.storage_accounts.begin_create("rg-st", "imgdst02", no_location).result()
        assert missing_location.value.status_code == 400

        client.storage_accounts.delete("rg-st", "imgdst01")
        assert list(client.storage_accounts.list_by_resource_group("rg-st")) == []


# ---------------------------------------------------------------------- images


def test_image_create_polls_until_succeeded_then_is_idempotent(arm: ArmServerProcess) -> None:
    make_group(arm, "rg-img")
    with storage(arm) as st, compute(arm) as cp:
        st.storage_accounts.begin_create(
            "rg-img",
            "imgsrcwe",
            {"sku": {"name": "Standard_LRS"}, "kind": "StorageV2", "location": "westeurope"},
        ).result()
        blob = "https://imgsrcwe.blob.core.windows.net/vhds/golden.vhd"

        started = time.monotonic()
        poller = cp.images.begin_create_or_update("rg-img", "golden", image_body(blob, team="x"))
        image = poller.result()
        assert time.monotonic() - started >= 0.4  # the default 0.5 s of "Creating"
        assert image.provisioning_state == "Succeeded"
        assert image.location == "westeurope" and image.tags == {"team": "x"}
        assert image.hyper_v_generation == "V2"
        os_disk = image.storage_profile.os_disk
        assert (os_disk.os_type, os_disk.os_state, os_disk.blob_uri) == (
            "Linux",
            "Generalized",
            blob,
        )
        assert arm.request_count("async_operation_get") >= 1
        assert arm.image_creations(SUB, "rg-img", "golden") == 1

        assert cp.images.get("RG-IMG", "GOLDEN").provisioning_state == "Succeeded"
        assert [i.name for i in cp.images.list_by_resource_group("rg-img")] == ["golden"]

        # the same PUT again: 200, nothing created
        assert (
            cp.images.begin_create_or_update("rg-img", "golden", image_body(blob))
            .result()
            .provisioning_state
            == "Succeeded"
        )
        assert arm.image_creations(SUB, "rg-img", "golden") == 1

        # another blob for an existing image: 409 Conflict
        with pytest.raises(HttpResponseError) as conflict:
            cp.images.begin_create_or_update("rg-img", "golden", image_body(blob + "2"))
        assert conflict.value.status_code == 409
        assert (
            conflict.value.error is not None
            and conflict.value.error.code == "PropertyChangeNotAllowed"
        )

        cp.images.begin_delete("rg-img", "golden").result()
        with pytest.raises(ResourceNotFoundError) as gone:
            cp.images.get("rg-img", "golden")
        assert gone.value.error is not None and gone.value.error.code == "ResourceNotFound"
        with pytest.raises(ResourceNotFoundError) as no_group:
            cp.images.get("rg-nope", "golden")
        assert (
            no_group.value.error is not None
            and no_group.value.error.code == "ResourceGroupNotFound"
        )


@pytest.mark.parametrize(
    ("image_sub", "image_region", "blob"),
    [
        (SUB, "eastus", f"{AZURITE}/stagewe/vhds/golden.vhd"),  # another region
        (OTHER_SUB, "westeurope", f"{AZURITE}/stagewe/vhds/golden.vhd"),  # another subscription
        (SUB, "westeurope", "https://unknownacct.blob.core.windows.net/vhds/golden.vhd"),  # unknown
    ],
    ids=["region", "subscription", "unknown-account"],
)
def test_image_blob_must_be_in_same_subscription_and_region(
    arm: ArmServerProcess, image_sub: str, image_region: str, blob: str
) -> None:
    arm.register_account("stagewe", SUB, "West Europe", f"{AZURITE}/stagewe/")
    make_group(arm, "rg-img", image_sub, image_region)
    with compute(arm, image_sub) as cp, pytest.raises(HttpResponseError) as err:
        cp.images.begin_create_or_update("rg-img", "golden", image_body(blob, image_region))
    assert err.value.status_code == 400
    assert err.value.error is not None and err.value.error.code == "InvalidParameter"
    assert "same subscription and region" in (err.value.error.message or "")
    assert arm.total_image_creations() == 0


def test_preloaded_azurite_account_is_accepted(arm: ArmServerProcess) -> None:
    arm.configure(image_delay=0.1)
    arm.register_account("stageeu", SUB, "eastus", f"{AZURITE}/stageeu/")
    make_group(arm, "rg-img", region="eastus")
    with compute(arm) as cp:
        image = cp.images.begin_create_or_update(
            "rg-img", "golden", image_body(f"{AZURITE}/stageeu/vhds/g.vhd", "eastus")
        ).result()
    assert image.provisioning_state == "Succeeded"


def test_injected_failure_surfaces_code_and_message_through_aio_clients(
    arm: ArmServerProcess,
) -> None:
    arm.configure(image_delay=0.2)
    arm.fail_image_creation(
        SUB, "westeurope", code="InternalDiskManagementError", message="disk gone", count=1
    )

    async def scenario() -> None:
        kw = arm.client_kwargs()
        async with (
            AsyncStaticTokenCredential() as cred,
            AioResourceManagementClient(cred, SUB, **kw) as rmc,
            AioStorageManagementClient(cred, SUB, **kw) as stc,
            AioComputeManagementClient(cred, SUB, **kw) as cpc,
        ):
            await rmc.resource_groups.create_or_update("rg-aio", {"location": "westeurope"})
            assert await rmc.resource_groups.check_existence("rg-aio") is True
            poller = await stc.storage_accounts.begin_create(
                "rg-aio",
                "aiosrc",
                {"sku": {"name": "Standard_LRS"}, "kind": "StorageV2", "location": "westeurope"},
            )
            account = await poller.result()
            blob = f"{account.primary_endpoints.blob}vhds/golden.vhd"

            failing = await cpc.images.begin_create_or_update("rg-aio", "golden", image_body(blob))
            with pytest.raises(HttpResponseError) as err:
                await failing.result()
            assert err.value.error is not None
            assert (err.value.error.code, err.value.error.message) == (
                "InternalDiskManagementError",
                "disk gone",
            )
            assert (await cpc.images.get("rg-aio", "golden")).provisioning_state == "Failed"

            # a new PUT of a failed image creates it again (the fault was for one creation)
            again = await cpc.images.begin_create_or_update("rg-aio", "golden", image_body(blob))
            assert (await again.result()).provisioning_state == "Succeeded"
            assert [i.name async for i in cpc.images.list_by_resource_group("rg-aio")] == ["golden"]
            delete = await rmc.resource_groups.begin_delete("rg-aio")
            await delete.result()

    asyncio.run(scenario())
    assert arm.image_creations(SUB, "rg-aio", "golden") == 2


def test_refused_put_fault_raises_at_once(arm: ArmServerProcess) -> None:
    arm.register_account("stagewe", SUB, "westeurope", f"{AZURITE}/stagewe/")
    arm.fail_image_creation(
        SUB, "westeurope", code="OperationNotAllowed", message="quota", status=409
    )
    make_group(arm, "rg-img")
    with compute(arm) as cp, pytest.raises(HttpResponseError) as err:
        cp.images.begin_create_or_update(
            "rg-img", "golden", image_body(f"{AZURITE}/stagewe/v/g.vhd")
        )
    assert err.value.status_code == 409
    assert err.value.error is not None and err.value.error.code == "OperationNotAllowed"
    assert arm.total_image_creations() == 0


def test_concurrent_puts_of_one_image_create_it_once(arm: ArmServerProcess) -> None:
    arm.configure(image_delay=0.2)
    arm.register_account("stagewe", SUB, "westeurope", f"{AZURITE}/stagewe/")
    make_group(arm, "rg-img")
    blob = f"{AZURITE}/stagewe/vhds/golden.vhd"

    def create(i: int) -> str:
        with compute(arm) as cp:
            name = "shared" if i % 2 else f"own-{i}"
            return str(
                cp.images.begin_create_or_update("rg-img", name, image_body(blob))
                .result()
                .provisioning_state
            )

    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(create, range(16))) == {"Succeeded"}
    assert arm.image_creations(SUB, "rg-img", "shared") == 1
    assert arm.total_image_creations() == 1 + 8


# ---------------------------------------------------------------------- throttling and auth


def test_throttled_write_is_retried_after_retry_after(arm: ArmServerProcess) -> None:
    arm.throttle(1, retry_after=1)
    started = time.monotonic()
    make_group(arm, "rg-throttled")
    assert time.monotonic() - started >= 0.9
    assert arm.request_count("throttled") == 1
    assert arm.request_count("rg_put") == 1  # the retry went through
    with rm(arm) as client:
        assert client.resource_groups.check_existence("rg-throttled") is True


def test_requests_without_a_bearer_token_get_401(arm: ArmServerProcess) -> None:
    ctx = ssl.create_default_context(cafile=arm.ca_file)
    req = urllib.request.Request(
        f"{arm.url}/subscriptions/{SUB}/resourcegroups?api-version={RG_API}"
    )
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, context=ctx, timeout=10)
    with err.value:
        assert err.value.code == 401
        assert json.loads(err.value.read())["error"]["code"] == "AuthenticationFailed"

    with (
        rm(arm, credential=StaticTokenCredential(token=" ")) as client,
        pytest.raises(ClientAuthenticationError),
    ):
        client.resource_groups.get("rg")
    assert arm.request_count("unauthorized") == 2


# ---------------------------------------------------------------------- TLS trust


def test_connection_verify_is_required_for_the_self_signed_ca(arm: ArmServerProcess) -> None:
    kwargs = arm.client_kwargs(retry_total=0)  # a TLS failure is otherwise retried with back-off
    del kwargs["connection_verify"]
    with (
        ResourceManagementClient(CRED, SUB, **kwargs) as client,
        pytest.raises(ServiceRequestError),
    ):
        client.resource_groups.check_existence("rg")


PROBE = textwrap.dedent(
    """
    import asyncio, json, os, sys
    sys.path.insert(0, os.environ["ARMSERVER_TESTS"])
    from azure.mgmt.resource.resources import ResourceManagementClient
    from azure.mgmt.resource.resources.aio import ResourceManagementClient as Aio
    from armserver import ARM_SCOPE, AsyncStaticTokenCredential, StaticTokenCredential

    kw = {"base_url": os.environ["ARMSERVER_URL"], "credential_scopes": [ARM_SCOPE], "retry_total": 0}
    result = {}
    try:
        with ResourceManagementClient(StaticTokenCredential(), "s", **kw) as c:
            c.resource_groups.check_existence("rg")
        result["sync"] = "ok"
    except Exception as exc:
        result["sync"] = type(exc).__name__

    async def aio():
        async with Aio(AsyncStaticTokenCredential(), "s", **kw) as c:
            await c.resource_groups.check_existence("rg")
    try:
        asyncio.run(aio())
        result["aio"] = "ok"
    except Exception as exc:
        result["aio"] = type(exc).__name__
    print(json.dumps(result))
    """
)


def _probe(arm: ArmServerProcess, **env_vars: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")
    }
    env.update(ARMSERVER_URL=arm.url, ARMSERVER_TESTS=str(Path(__file__).parent.parent), **env_vars)
    out = subprocess.run(
        [sys.executable, "-c", PROBE],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result: dict[str, str] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_which_environment_variable_makes_which_transport_trust_the_ca(
    arm: ArmServerProcess,
) -> None:
    # aiohttp (.aio clients) reads SSL_CERT_FILE through OpenSSL's default verify paths;
    # requests (sync clients) uses certifi unless REQUESTS_CA_BUNDLE is set.
    assert _probe(arm, SSL_CERT_FILE=arm.ca_file) == {"sync": "ServiceRequestError", "aio": "ok"}
    assert _probe(arm, REQUESTS_CA_BUNDLE=arm.ca_file) == {
        "sync": "ok",
        "aio": "ServiceRequestError",
    }
    both = {"SSL_CERT_FILE": arm.ca_file, "REQUESTS_CA_BUNDLE": arm.ca_file}
    assert _probe(arm, **both) == {"sync": "ok", "aio": "ok"}
    assert {k: arm.client_env()[k] for k in both} == both


# ---------------------------------------------------------------------- in-process server


def test_in_process_server_and_state_file(tmp_path: Path) -> None:
    state_file = tmp_path / "arm.json"
    with ArmServer(state_file=state_file, image_delay=0.05) as server:
        server.register_account("inproc", SUB, "westeurope")
        make_group(server, "rg-in")
        with compute(server) as cp:
            blob = "https://inproc.blob.core.windows.net/vhds/g.vhd"
            assert (
                cp.images.begin_create_or_update("rg-in", "img", image_body(blob))
                .result()
                .provisioning_state
                == "Succeeded"
            )
        assert server.image_creations(SUB, "rg-in", "img") == 1
    with ArmServer(
        state_file=state_file, cert_dir=tmp_path / "certs"
    ) as server:  # state survives a restart
        assert server.image_creations(SUB, "rg-in", "img") == 1
        with compute(server) as cp:
            assert cp.images.get("rg-in", "img").provisioning_state == "Succeeded"


@pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl CLI")
def test_openssl_fallback_makes_a_usable_chain(tmp_path: Path) -> None:
    paths = CertPaths(tmp_path / "ca.pem", tmp_path / "server.pem", tmp_path / "server.key")
    _generate_with_openssl(paths, tmp_path)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(paths.cert_file, paths.key_file)
    verify = subprocess.run(
        ["openssl", "verify", "-x509_strict", "-CAfile", str(paths.ca_file), str(paths.cert_file)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert verify.returncode == 0, verify.stderr


# ---------------------------------------------------------------------- what ARM refuses

# What the installed azure-mgmt-resource sends for resource groups.
RG_API = max(installed_api_versions().allowed("/subscriptions/s/resourcegroups") or {"?"})


def raw(
    arm: Any,
    path: str,
    *,
    query: str = f"api-version={RG_API}",
    token: str | None = "mint",
    method: str = "GET",
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """One request without an SDK: (status, JSON body, headers)."""
    headers = {}
    if token is not None:
        headers["Authorization"] = f"Bearer {mint_token() if token == 'mint' else token}"
    url = f"{arm.url}{path}" + (f"?{query}" if query else "")
    req = urllib.request.Request(url, method=method, headers=headers)
    ctx = ssl.create_default_context(cafile=arm.ca_file)
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"{}"), dict(resp.headers)
    except urllib.error.HTTPError as err:
        with err:
            return err.code, json.loads(err.read() or b"{}"), dict(err.headers)


def _sent_version(client: Any) -> str:
    """The api-version a client sends: its configuration's, or, for a multi-API client
    (older SDKs), its default."""
    return str(getattr(client._config, "api_version", None) or client.DEFAULT_API_VERSION)


def test_the_api_version_table_is_what_the_installed_sdks_send(arm: ArmServerProcess) -> None:
    table = installed_api_versions()
    with rm(arm) as resources, storage(arm) as st:
        rg_version = _sent_version(resources)
        storage_version = _sent_version(st)
    assert table.allowed(f"/subscriptions/{SUB}/resourcegroups/rg") == frozenset({rg_version})
    assert table.allowed(
        f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/a"
    ) == frozenset({storage_version})
    image_path = f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Compute/images/i"
    assert table.resource_type(image_path) == "Microsoft.Compute/images"
    # every image call the SDK makes is accepted (the other tests drive it end to end)
    make_group(arm, "rg-v")
    with compute(arm) as cp:
        assert list(cp.images.list_by_resource_group("rg-v")) == []


def test_an_unknown_api_version_is_refused_per_resource_type(arm: ArmServerProcess) -> None:
    path = f"/subscriptions/{SUB}/resourcegroups"
    status, body, _ = raw(arm, path, query="api-version=2099-01-01")
    assert status == 400
    assert body["error"]["code"] == "InvalidApiVersionParameter"
    assert body["error"]["message"] == (
        f"The api-version '2099-01-01' is invalid. The supported versions are '{RG_API}'."
    )
    # the resource-group version is not one of the image's
    images = f"/subscriptions/{SUB}/providers/Microsoft.Compute/images"
    status, body, _ = raw(arm, images, query=f"api-version={RG_API}")
    assert (status, body["error"]["code"]) == (400, "InvalidApiVersionParameter")
    status, body, _ = raw(arm, path, query="")
    assert (status, body["error"]["code"]) == (400, "MissingApiVersionParameter")
    # and through an SDK client pinned to another version
    with rm(arm, api_version="2021-04-01") as client, pytest.raises(HttpResponseError) as err:
        client.resource_groups.get("rg")
    assert err.value.status_code == 400
    assert err.value.error is not None and err.value.error.code == "InvalidApiVersionParameter"


@pytest.mark.parametrize(
    ("credential", "code", "says"),
    [
        (
            StaticTokenCredential(audience="https://storage.azure.com/"),
            "InvalidAuthenticationTokenAudience",
            "wrong audience or resource 'https://storage.azure.com/'",
        ),
        (
            StaticTokenCredential(tenant="99999999-0000-4000-8000-000000000000"),
            "InvalidAuthenticationTokenTenant",
            "wrong issuer 'https://sts.windows.net/99999999-0000-4000-8000-000000000000/'",
        ),
        (StaticTokenCredential(lifetime_seconds=-60), "ExpiredAuthenticationToken", "expiry"),
        (StaticTokenCredential(token="not.a-jwt"), "InvalidAuthenticationToken", "invalid"),
    ],
    ids=["audience", "tenant", "expired", "malformed"],
)
def test_a_token_arm_would_refuse_gets_401_with_a_challenge(
    arm: ArmServerProcess, credential: StaticTokenCredential, code: str, says: str
) -> None:
    with rm(arm, credential=credential) as client, pytest.raises(ClientAuthenticationError) as err:
        client.resource_groups.check_existence("rg")
    assert err.value.status_code == 401
    assert err.value.response is not None
    challenge = err.value.response.headers["WWW-Authenticate"]  # type: ignore[attr-defined]
    assert challenge.startswith(f'Bearer authorization_uri="https://login.windows.net/{TENANT}"')
    assert 'error="invalid_token"' in challenge
    status, body, headers = raw(arm, f"/subscriptions/{SUB}/resourcegroups", token=None)
    assert (status, body["error"]["code"]) == (401, "AuthenticationFailed")
    assert "WWW-Authenticate" in headers
    # the refusal itself, with ARM's words
    bad = credential.get_token(ARM_SCOPE).token
    status, body, _ = raw(arm, f"/subscriptions/{SUB}/resourcegroups", token=bad)
    assert (status, body["error"]["code"]) == (401, code)
    assert says in body["error"]["message"]


def test_a_sovereign_cloud_audience_is_configurable(arm: ArmServerProcess) -> None:
    usgov = "https://management.usgovcloudapi.net/"
    arm.configure(audiences=[usgov])
    with rm(arm) as public, pytest.raises(ClientAuthenticationError):
        public.resource_groups.check_existence("rg")  # a public-cloud token
    kwargs = arm.client_kwargs(credential_scopes=[usgov + ".default"])
    with ResourceManagementClient(CRED, SUB, **kwargs) as gov:
        assert gov.resource_groups.check_existence("rg") is False


def test_route_handlers_see_the_principal_of_the_token(tmp_path: Path) -> None:
    seen: list[str] = []

    def spy(state: ArmState, req: Request, segs: list[str], low: list[str]) -> Response | None:
        assert req.principal is not None
        seen.append(req.principal.oid)
        return None  # the built-in routes answer

    with ArmServer(cert_dir=tmp_path, route_handlers=[spy]) as server:
        credential = StaticTokenCredential(oid="11111111-2222-4333-8444-555555555555")
        with rm(server, credential=credential) as client:
            assert client.resource_groups.check_existence("rg") is False
    assert seen == ["11111111-2222-4333-8444-555555555555"]


def test_every_list_pages_with_next_link(arm: ArmServerProcess) -> None:
    names = [f"rg-{i}" for i in range(5)]
    for name in names:
        make_group(arm, name)
        arm.register_account(f"acct{name[-1]}", SUB, "westeurope", resource_group=name)
    first = raw(arm, f"/subscriptions/{SUB}/resourcegroups")[1]
    assert len(first["value"]) == 2 and "$skiptoken=2" in first["nextLink"]
    assert f"api-version={RG_API}" in first["nextLink"]
    with rm(arm) as client, storage(arm) as st:
        assert sorted(str(g.name) for g in client.resource_groups.list()) == names
        assert len(list(st.storage_accounts.list())) == 5
    with compute(arm) as cp:
        for i in range(5):
            cp.images.begin_create_or_update(
                "rg-0", f"img-{i}", image_body(f"{AZURITE}/acct0/vhds/g.vhd")
            )
        assert len(list(cp.images.list_by_resource_group("rg-0"))) == 5
        assert len(list(cp.images.list())) == 5


# ---------------------------------------------------------------------- long-running operations


def test_lro_headers_are_the_ones_azure_sends(arm: ArmServerProcess) -> None:
    arm.configure(image_delay=0, lro_delay=0.3, lro_retry_after=0)
    arm.register_account("stagewe", SUB, "westeurope", f"{AZURITE}/stagewe/")
    make_group(arm, "rg-lro")
    with compute(arm) as cp, rm(arm) as client, storage(arm) as st:
        put = cp.images.begin_create_or_update(
            "rg-lro", "golden", image_body(f"{AZURITE}/stagewe/vhds/g.vhd")
        )
        initial = put.polling_method()._initial_response.http_response  # type: ignore[attr-defined]
        assert initial.status_code == 201 and "Azure-AsyncOperation" in initial.headers
        assert initial.headers["Retry-After"] == "0"
        put.result()

        deletion = cp.images.begin_delete("rg-lro", "golden")
        initial = deletion.polling_method()._initial_response.http_response  # type: ignore[attr-defined]
        assert initial.status_code == 202
        assert {"Azure-AsyncOperation", "Location"} <= set(initial.headers)
        assert cp.images.get("rg-lro", "golden").provisioning_state == "Deleting"
        deletion.result()
        with pytest.raises(ResourceNotFoundError):
            cp.images.get("rg-lro", "golden")

        params = StorageAccountCreateParameters(
            sku=Sku(name="Standard_LRS"), kind="StorageV2", location="westeurope"
        )
        create = st.storage_accounts.begin_create("rg-lro", "imgdst09", params)
        initial = create.polling_method()._initial_response.http_response  # type: ignore[attr-defined]
        assert initial.status_code == 202 and "Location" in initial.headers
        create.result()

        gone = client.resource_groups.begin_delete("rg-lro")
        initial = gone.polling_method()._initial_response.http_response  # type: ignore[attr-defined]
        assert initial.status_code == 202 and "Location" in initial.headers
        gone.result()


# ---------------------------------------------------------------------- image states


def test_an_image_can_be_put_in_every_provisioning_state(arm: ArmServerProcess) -> None:
    make_group(arm, "rg-s")
    arm.set_image_state(SUB, "rg-s", "seeded", "Deleting", seconds=0.3, then="gone")
    arm.set_image_state(SUB, "rg-s", "busy", "Updating", seconds=0.3, then="Succeeded")
    arm.set_image_state(SUB, "rg-s", "stopped", "Canceled")
    arm.set_image_state(SUB, "rg-s", "odd", "Migrating")  # a state Azure may add
    with compute(arm) as cp:
        with pytest.raises(HttpResponseError) as busy:
            cp.images.begin_delete("rg-s", "busy").result()
        assert (busy.value.status_code, busy.value.error.code) == (409, "OperationNotAllowed")  # type: ignore[union-attr]
        states = {i.name: i.provisioning_state for i in cp.images.list_by_resource_group("rg-s")}
        assert states == {
            "seeded": "Deleting",
            "busy": "Updating",
            "stopped": "Canceled",
            "odd": "Migrating",
        }
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            names = {i.name for i in cp.images.list_by_resource_group("rg-s")}
            if "seeded" not in names:
                break
            time.sleep(0.05)
        assert cp.images.get("rg-s", "busy").provisioning_state == "Succeeded"
        with pytest.raises(ResourceNotFoundError):
            cp.images.get("rg-s", "seeded")


def test_a_canceled_creation_ends_canceled(arm: ArmServerProcess) -> None:
    arm.configure(image_delay=0)
    arm.register_account("stagewe", SUB, "westeurope", f"{AZURITE}/stagewe/")
    arm.fail_image_creation(
        SUB, "westeurope", code="OperationPreempted", message="canceled", state="Canceled"
    )
    make_group(arm, "rg-c")
    with compute(arm) as cp:
        poller = cp.images.begin_create_or_update(
            "rg-c", "golden", image_body(f"{AZURITE}/stagewe/vhds/g.vhd")
        )
        with pytest.raises(HttpResponseError):
            poller.result()
        assert cp.images.get("rg-c", "golden").provisioning_state == "Canceled"


# ---------------------------------------------------------------------- source blobs (Azurite)


def _page_blob(service: BlobServiceClient, name: str, size: int, footer: bytes | None) -> str:
    container = service.get_container_client("vhds")
    if not container.exists():
        container.create_container()
    blob = container.get_blob_client(name)
    blob.create_page_blob(size)
    if footer is not None:
        blob.upload_page(footer, offset=size - 512, length=512)
    return str(blob.url)


def test_image_creation_reads_its_source_blob_as_azure_does(
    arm: ArmServerProcess, azurite_server: Any
) -> None:
    account = "stagingacct"
    arm.configure(image_delay=0)
    arm.register_account(account, SUB, "westeurope", azurite_server.blob_endpoint(account) + "/")
    arm.check_source_blobs({account: azurite_server.key(account)})
    assert "<redacted>" in json.dumps(arm.snapshot()["config"])
    assert azurite_server.key(account) not in json.dumps(arm.snapshot())
    make_group(arm, "rg-src")
    service = BlobServiceClient.from_connection_string(azurite_server.connection_string(account))
    size = 2 * MiB + 512
    good = _page_blob(service, "good.vhd", size, fixed_footer(size - 512).pack())
    cases = {
        "missing": (good.replace("good.vhd", "missing.vhd"), "InvalidParameter", "does not exist"),
        "odd-size": (
            _page_blob(service, "odd.vhd", 2 * MiB, fixed_footer(2 * MiB - 512).pack()),
            "InvalidVhd",
            "whole number (in MBs)",
        ),
        "no-footer": (_page_blob(service, "raw.vhd", size, None), "InvalidVhd", "'conectix'"),
    }
    block = service.get_blob_client("vhds", "block.vhd")
    block.upload_blob(b"x" * 1024, overwrite=True)
    cases["block-blob"] = (str(block.url), "InvalidParameter", "Only page blobs")
    with compute(arm) as cp:
        for name, (uri, code, says) in cases.items():
            poller = cp.images.begin_create_or_update("rg-src", name, image_body(uri))
            with pytest.raises(HttpResponseError) as err:
                poller.result()
            assert err.value.error is not None and err.value.error.code == code, name
            assert says in (err.value.error.message or ""), name
            assert cp.images.get("rg-src", name).provisioning_state == "Failed"
        image = cp.images.begin_create_or_update("rg-src", "good", image_body(good)).result()
        assert image.provisioning_state == "Succeeded"
    service.close()


class _PendingCopyBlob:
    """A page blob a copy is still being written into (Azurite ends every copy at once)."""

    url = f"{AZURITE}/stagingacct/vhds/g.vhd"

    @classmethod
    def from_blob_url(cls, url: str, **options: Any) -> _PendingCopyBlob:
        return cls()

    def __enter__(self) -> _PendingCopyBlob:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def get_blob_properties(self) -> Any:
        copy = SimpleNamespace(status="pending")
        return SimpleNamespace(blob_type=BlobType.PAGEBLOB, size=2 * MiB + 512, copy=copy)


def test_a_source_blob_with_a_copy_pending_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sourceblob, "BlobClient", _PendingCopyBlob)
    problem = sourceblob.source_blob_problem(_PendingCopyBlob.url, "stagingacct", "key")
    assert problem is not None
    assert problem[0] == "InvalidParameter" and "pending copy" in problem[1]
