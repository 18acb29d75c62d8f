"""A managed disk as the source of a job: the adapters' side (grant, copy from the access URL,
revoke), on the local backend and on Azure (Azurite + the ARM test server).

On Azure the "disk" is a page blob in Azurite; the ARM test server hands out an Azurite SAS URL of
it as the disk's access SAS. Each test runs its scenario in one event loop (one ``asyncio.run``),
as a CLI command does, so the SDK clients live in that loop from first use to ``aclose``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import pytest

from armserver.process import ArmServerProcess
from azurite import AzuriteServer
from imagedist._backends.local.blobs import LocalBlobStore
from imagedist._backends.local.images import LocalImageService
from imagedist._domain import BlobRef, SecretUrl
from imagedist._domain.names import parse_disk_id
from imagedist._exceptions import (
    AuthFailed,
    Conflict,
    ImagedistError,
    InvalidInput,
    NotFound,
    OperationFailed,
)
from imagedist.abc import BlobStore, CopyStatus, ImageService

from held_copies import CopyWorld, HeldCopiesTransport
from helpers import FakeClock, run

MiB = 1024 * 1024
DISK_SIZE = 2 * MiB
SUBSCRIPTION = "sub-disk"
RESOURCE_GROUP = "rg-golden"
DISK_NAME = "golden-os-disk"
DISK_ID = (
    f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}"
    f"/providers/Microsoft.Compute/disks/{DISK_NAME}"
)
UNKNOWN_DISK_ID = (
    f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}"
    "/providers/Microsoft.Compute/disks/no-such-disk"
)
#: A SAS signature that is not a redaction (the storage SDK writes ``sig=*****``, URL-encoded).
SAS_SIGNATURE = re.compile(r"sig=(?!%2A|\*|REDACTED)[A-Za-z0-9%/+=_-]{10,}", re.IGNORECASE)


def disk_bytes() -> bytes:
    """2 MiB with data at both ends and a hole between, like a sparse OS disk."""
    data = bytearray(DISK_SIZE)
    data[: 64 * 1024] = uuid.uuid4().bytes * (64 * 1024 // 16)
    data[-4096:] = b"\xa5" * 4096
    return bytes(data)


@dataclass
class DiskWorld:
    """One backend's image service and blob store, a registered disk, and how to look at it."""

    kind: str
    #: builds (image service, blob store); called inside the test's event loop; with
    #: ``slow=True`` the store's copies advance one byte per clock second (so one stays pending)
    open: Callable[..., tuple[ImageService, BlobStore]]
    data: bytes
    #: the staging blob the disk is copied into
    dest: BlobRef
    #: (grants, revokes, granted now) of the disk, as the platform saw them
    access: Callable[[], tuple[int, int, bool]]
    #: waits between two polls of a pending copy
    pause: Callable[[], Coroutine[Any, Any, None]]
    #: make the next grant fail; None if the backend cannot inject that
    fail_next_grant: Callable[..., None] | None = None
    #: requests the platform answered about disks (to check that a bad id never reached it)
    disk_requests: Callable[[], int] = field(default=lambda: 0)
    #: the blob endpoint of the disk's storage account (Azure only)
    blob_endpoint: str = ""


def _local_world(request: pytest.FixtureRequest, tmp_path: Path) -> DiskWorld:
    clock = FakeClock()
    data = disk_bytes()
    disk_blob = BlobRef("diskacct", "disks", "golden/os-disk")

    def open_local(*, slow: bool = False, **_: Any) -> tuple[ImageService, BlobStore]:
        blobs = LocalBlobStore(tmp_path / "blobs", clock, copy_bandwidth=1.0 if slow else 0.0)
        images = LocalImageService(tmp_path / "images.db", clock, blobs, account_locations={})
        blobs.set_grant_check(images.disk_grant_live)  # the wiring of _local.py
        return images, blobs

    images, blobs = open_local()
    assert isinstance(images, LocalImageService)

    async def put_disk() -> None:
        await blobs.ensure_container(disk_blob.account, disk_blob.container)
        await blobs.create_page_blob(disk_blob, DISK_SIZE)
        await blobs.write_pages(disk_blob, 0, data[: 64 * 1024])
        await blobs.write_pages(disk_blob, DISK_SIZE - 4096, data[-4096:])

    run(put_disk())
    images.register_disk(DISK_ID, disk_blob, DISK_SIZE)

    def access() -> tuple[int, int, bool]:
        state = images.disk_access(DISK_ID)
        return state.grants, state.revokes, state.granted

    return DiskWorld(
        kind="local",
        open=open_local,
        data=data,
        dest=BlobRef("stagingacct", "staging", "from-disk.vhd"),
        access=access,
        pause=lambda: clock.sleep(1.0),
    )


def _azure_world(request: pytest.FixtureRequest, tmp_path: Path) -> DiskWorld:
    from azure.storage.blob import BlobSasPermissions, BlobServiceClient, generate_blob_sas

    from armserver.credentials import AsyncStaticTokenCredential
    from imagedist._backends.azure.blobs import AccountAccess, AzureBlobStore
    from imagedist._backends.azure.images import AzureImageService

    server: AzuriteServer = request.getfixturevalue("azurite_server")
    arm_srv: ArmServerProcess = request.getfixturevalue("arm")  # reset for this test
    data = disk_bytes()
    disk_account, staging = "target3acct", "stagingacct"
    disk_container, dest_container = f"d{uuid.uuid4().hex[:8]}", f"c{uuid.uuid4().hex[:8]}"

    with BlobServiceClient.from_connection_string(server.connection_string(disk_account)) as svc:
        blob = svc.get_container_client(disk_container)
        blob.create_container()
        page_blob = blob.get_blob_client("golden/os-disk")
        page_blob.create_page_blob(DISK_SIZE)
        page_blob.upload_page(data[: 64 * 1024], offset=0, length=64 * 1024)
        page_blob.upload_page(data[-4096:], offset=DISK_SIZE - 4096, length=4096)
        url = page_blob.url

    def drop() -> None:
        for account, container in ((disk_account, disk_container), (staging, dest_container)):
            with BlobServiceClient.from_connection_string(server.connection_string(account)) as s:
                if s.get_container_client(container).exists():
                    s.delete_container(container)

    request.addfinalizer(drop)
    sas = generate_blob_sas(
        disk_account,
        disk_container,
        "golden/os-disk",
        account_key=server.key(disk_account),
        permission=BlobSasPermissions(read=True),
        expiry=datetime.now(UTC) + timedelta(hours=1),
    )
    arm_srv.register_disk(SUBSCRIPTION, RESOURCE_GROUP, DISK_NAME, DISK_SIZE, f"{url}?{sas}")
    access = {
        name: AccountAccess.from_connection_string(server.connection_string(name))
        for name in (staging, disk_account)
    }

    # Azurite finishes a copy inside its request: a slow store's copies are held pending (and
    # advance one byte per second of this clock) by the test transport in front of the SDK's.
    copies = CopyWorld(FakeClock())

    def open_azure(
        *, logging_enable: bool = False, slow: bool = False
    ) -> tuple[ImageService, BlobStore]:
        images = AzureImageService(
            AsyncStaticTokenCredential(),
            arm_endpoint=arm_srv.url,
            blob_url=lambda ref: f"{server.blob_endpoint(ref.account)}/{ref.container}/{ref.name}",
            client_kwargs={
                "connection_verify": arm_srv.ca_file,
                "polling_interval": 0.02,
                "retry_total": 2,
                "logging_enable": logging_enable,
            },
        )
        blobs = AzureBlobStore(
            access,
            retry_total=2,
            initial_backoff=1,
            client_options={"logging_enable": logging_enable},
            wrap_transport=(lambda inner: HeldCopiesTransport(inner, copies, 1.0))
            if slow
            else None,
        )
        return images, blobs

    def disk_access() -> tuple[int, int, bool]:
        state = arm_srv.disk_access(SUBSCRIPTION, RESOURCE_GROUP, DISK_NAME)
        return state["grants"], state["revokes"], state["granted"]

    def fail_next_grant(**kwargs: Any) -> None:
        arm_srv.fail_disk_grant(count=1, **kwargs)

    def disk_requests() -> int:
        return sum(
            arm_srv.request_count(kind) for kind in ("disk_get", "disk_grant", "disk_revoke")
        )

    return DiskWorld(
        kind="azure",
        open=open_azure,
        data=data,
        dest=BlobRef(staging, dest_container, "from-disk.vhd"),
        access=disk_access,
        pause=lambda: asyncio.sleep(0.05),
        fail_next_grant=fail_next_grant,
        disk_requests=disk_requests,
        blob_endpoint=server.blob_endpoint(disk_account),
    )


@pytest.fixture(
    params=[pytest.param(_local_world, id="local"), pytest.param(_azure_world, id="azure")]
)
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DiskWorld]:
    factory: Callable[[pytest.FixtureRequest, Path], DiskWorld] = request.param
    yield factory(request, tmp_path)


async def _settle(world: DiskWorld, blobs: BlobStore, dest: BlobRef) -> CopyStatus:
    for _ in range(100):
        props = await blobs.get_properties(dest)
        if props.copy_status is not CopyStatus.PENDING:
            return props.copy_status
        await world.pause()
    raise AssertionError(f"the copy into {dest} is still pending")


async def _copy_disk(
    world: DiskWorld, images: ImageService, blobs: BlobStore
) -> tuple[SecretUrl, CopyStatus]:
    """What the engine does: size, grant, copy, settle, and revoke whatever happened."""
    assert await images.disk_size(DISK_ID) == DISK_SIZE
    await blobs.ensure_container(world.dest.account, world.dest.container)
    url = await images.grant_disk_read(DISK_ID, 3600)
    try:
        copy_id = await blobs.start_copy_from_url(url, world.dest)
        assert copy_id
        status = await _settle(world, blobs, world.dest)
    finally:
        await images.revoke_disk_read(DISK_ID)
    return url, status


def _signature(url: SecretUrl) -> str:
    return parse_qs(urlsplit(url.reveal()).query)["sig"][0]


def _assert_no_signature(text: str, signature: str) -> None:
    for form in {signature, quote(signature, safe=""), unquote(signature)}:
        assert form not in text, "the access URL's signature leaked"
    assert not SAS_SIGNATURE.search(text), "a SAS signature leaked"


# -- the copy ---------------------------------------------------------------------------------------


def test_a_disk_is_copied_into_staging_and_its_access_revoked(world: DiskWorld) -> None:
    async def scenario() -> tuple[SecretUrl, CopyStatus, bytes, str]:
        images, blobs = world.open()
        try:
            url, status = await _copy_disk(world, images, blobs)
            props = await blobs.get_properties(world.dest)
            data = await blobs.read(world.dest, 0, props.size)
            return url, status, data, props.copy_source
        finally:
            await images.aclose()
            await blobs.aclose()

    url, status, data, copy_source = run(scenario())

    assert status is CopyStatus.SUCCESS
    assert data == world.data
    assert world.access() == (1, 1, False)  # one grant, one revoke, nothing granted now
    for text in (repr(url), str(url), copy_source):
        assert "sig=" not in text and _signature(url) not in text


def test_the_disk_id_is_case_insensitive(world: DiskWorld) -> None:
    async def scenario() -> int:
        images, blobs = world.open()
        try:
            return await images.disk_size(DISK_ID.lower())
        finally:
            await images.aclose()
            await blobs.aclose()

    assert run(scenario()) == DISK_SIZE


def test_a_revoked_url_no_longer_copies(world: DiskWorld) -> None:
    if world.kind != "local":
        pytest.skip("Azurite's SAS outlives the ARM test server's revocation")

    async def scenario() -> tuple[SecretUrl, AuthFailed]:
        images, blobs = world.open()
        await blobs.ensure_container(world.dest.account, world.dest.container)
        url = await images.grant_disk_read(DISK_ID, 3600)
        await images.revoke_disk_read(DISK_ID)
        with pytest.raises(AuthFailed) as caught:
            await blobs.start_copy_from_url(url, world.dest)
        return url, caught.value

    url, error = run(scenario())

    assert str(world.dest) in str(error)
    _assert_no_signature(str(error), _signature(url))


def test_an_expired_grant_no_longer_copies(world: DiskWorld) -> None:
    if world.kind != "local":
        pytest.skip("the ARM test server's SAS does not expire on the test's clock")

    async def scenario() -> None:
        images, blobs = world.open()
        await blobs.ensure_container(world.dest.account, world.dest.container)
        url = await images.grant_disk_read(DISK_ID, 60)
        await world.pause()  # one second: still valid
        assert world.access()[2]
        for _ in range(60):
            await world.pause()
        assert not world.access()[2]
        with pytest.raises(AuthFailed):
            await blobs.start_copy_from_url(url, world.dest)

    run(scenario())


def test_a_copy_into_a_pending_destination_conflicts(world: DiskWorld) -> None:
    async def scenario() -> None:
        images, slow = world.open(slow=True)
        try:
            await slow.ensure_container(world.dest.account, world.dest.container)
            url = await images.grant_disk_read(DISK_ID, 3600)
            await slow.start_copy_from_url(url, world.dest)
            with pytest.raises(Conflict) as caught:
                await slow.start_copy_from_url(url, world.dest)
            _assert_no_signature(str(caught.value), _signature(url))
        finally:
            await images.aclose()
            await slow.aclose()

    run(scenario())


# -- errors -----------------------------------------------------------------------------------------


def test_an_unknown_disk_is_not_found(world: DiskWorld) -> None:
    async def scenario() -> None:
        images, blobs = world.open()
        try:
            with pytest.raises(NotFound):
                await images.disk_size(UNKNOWN_DISK_ID)
            with pytest.raises(NotFound):
                await images.grant_disk_read(UNKNOWN_DISK_ID, 3600)
            await images.revoke_disk_read(UNKNOWN_DISK_ID)  # nothing to revoke: not an error
        finally:
            await images.aclose()
            await blobs.aclose()

    run(scenario())
    assert world.access() == (0, 0, False)


BAD_IDS = [
    "",
    "golden-os-disk",
    "/subscriptions/sub/resourceGroups/rg/providers/Microsoft.Compute/images/golden",
    "/subscriptions/sub/resourceGroups/rg/providers/Microsoft.Compute/disks/",
    "/subscriptions/sub/resourceGroups/rg/providers/Microsoft.Compute/disks/a/b",
    "/subscriptions/sub/resourceGroups/rg/providers/Microsoft.Compute/disks/x?sig=abc",
    "https://management.azure.com/subscriptions/sub/resourceGroups/rg/providers/"
    "Microsoft.Compute/disks/golden",
]


@pytest.mark.parametrize("disk_id", BAD_IDS)
def test_a_malformed_disk_id_is_invalid_input(world: DiskWorld, disk_id: str) -> None:
    async def scenario() -> None:
        images, blobs = world.open()
        try:
            with pytest.raises(InvalidInput, match="resource id"):
                await images.disk_size(disk_id)
            with pytest.raises(InvalidInput):
                await images.grant_disk_read(disk_id, 3600)
            with pytest.raises(InvalidInput):
                await images.revoke_disk_read(disk_id)
        finally:
            await images.aclose()
            await blobs.aclose()

    run(scenario())
    assert world.disk_requests() == 0  # refused before any request


def test_parse_disk_id() -> None:
    assert parse_disk_id(DISK_ID) == (SUBSCRIPTION, RESOURCE_GROUP, DISK_NAME)
    upper = DISK_ID.upper().replace("/SUBSCRIPTIONS/", "/subscriptions/")
    assert parse_disk_id(upper) == (SUBSCRIPTION.upper(), RESOURCE_GROUP.upper(), DISK_NAME.upper())
    assert parse_disk_id(DISK_ID + "/")[2] == DISK_NAME


def test_a_url_that_is_not_an_access_url_is_refused_without_echoing_it(world: DiskWorld) -> None:
    secret = "s3cr3tSignatureValue0123456789"
    if world.kind == "local":
        bogus = SecretUrl(f"https://elsewhere.example/c/b?sig={secret}")
        expected: type[ImagedistError] = OperationFailed
    else:  # a SAS URL of a blob that is not there
        bogus = SecretUrl(f"{world.blob_endpoint}/nothing/here.vhd?sv=2024-01-01&sig={secret}")
        expected = ImagedistError

    async def scenario() -> ImagedistError:
        images, blobs = world.open()
        try:
            await blobs.ensure_container(world.dest.account, world.dest.container)
            with pytest.raises(expected) as caught:
                await blobs.start_copy_from_url(bogus, world.dest)
            return caught.value
        finally:
            await images.aclose()
            await blobs.aclose()

    error = run(scenario())

    assert str(world.dest) in str(error)
    _assert_no_signature(str(error), secret)


def test_a_failed_grant_grants_nothing(world: DiskWorld) -> None:
    if world.fail_next_grant is None:
        pytest.skip(f"{world.kind} cannot make a grant fail")
    fail = world.fail_next_grant

    async def scenario() -> None:
        images, blobs = world.open()
        try:
            fail(code="OperationNotAllowed", message="The disk is attached to a running VM.")
            with pytest.raises(OperationFailed, match="grant read access"):
                await images.grant_disk_read(DISK_ID, 3600)
            fail(status=409, code="ConflictingOperation", message="Another operation is running.")
            with pytest.raises(Conflict):
                await images.grant_disk_read(DISK_ID, 3600)
            await images.revoke_disk_read(DISK_ID)  # the engine revokes in every case
        finally:
            await images.aclose()
            await blobs.aclose()

    run(scenario())
    assert world.access() == (1, 1, False)  # the refused request was no grant


# -- secrecy ----------------------------------------------------------------------------------------


def test_no_signature_reaches_the_debug_log(
    world: DiskWorld, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> SecretUrl:
        images, blobs = world.open(logging_enable=True)  # the SDKs' network trace, on Azure
        try:
            url, status = await _copy_disk(world, images, blobs)
            assert status is CopyStatus.SUCCESS
            return url
        finally:
            await images.aclose()
            await blobs.aclose()

    with caplog.at_level(logging.DEBUG):
        url = run(scenario())

    text = "\n".join(
        [caplog.text, *(record.getMessage() for record in caplog.records)]
        + [repr(record.args) for record in caplog.records]
    )
    _assert_no_signature(text, _signature(url))
    if world.kind == "azure":  # the trace was on: the requests are there, without the secret
        assert "beginGetAccess" in text
        assert "x-ms-copy-source" in text.lower()


def test_a_secret_url_is_never_pickled() -> None:
    import pickle

    with pytest.raises(TypeError):
        pickle.dumps(SecretUrl("local://a/c/b?sig=abc"))


def test_the_arm_test_server_reports_the_disk_state() -> None:
    from armserver.server import ArmState, Request
    from armserver.tokens import mint_token

    state = ArmState()
    state.control(
        "POST",
        "disks",
        {
            "subscription": "s",
            "resource_group": "rg",
            "name": "d",
            "size_bytes": DISK_SIZE,
            "access_url": "http://127.0.0.1:1/acct/c/d?sv=x&sig=secretsecretsecret",
        },
    )
    path = "/subscriptions/s/resourceGroups/RG/providers/Microsoft.Compute/disks/D"
    auth = {"authorization": f"Bearer {mint_token()}"}
    versions = state.api_versions.allowed(path)  # what the installed SDK sends for disks
    assert versions
    query = f"api-version={max(versions)}"

    def call(method: str, suffix: str = "", body: bytes = b"") -> Any:
        return state.handle(Request(method, path + suffix, query, auth, body, "https://h"))

    def disk_state() -> str:
        return str(call("GET").body["properties"]["diskState"])

    assert call("GET").body["properties"]["diskSizeBytes"] == DISK_SIZE
    assert disk_state() == "Unattached"
    granted = call("POST", "/beginGetAccess", b'{"access": "Read", "durationInSeconds": 60}')
    assert granted.status == 202
    assert disk_state() == "ActiveSAS"
    location = urlsplit(granted.headers["Location"])
    result = state.handle(Request("GET", location.path, location.query, auth, b"", "https://h"))
    assert result.body == {"accessSAS": "http://127.0.0.1:1/acct/c/d?sv=x&sig=secretsecretsecret"}
    assert "secretsecret" not in repr(state.control("GET", "state"))
    assert call("POST", "/beginGetAccess", b'{"access": "Read"}').status == 400
    assert call("POST", "/endGetAccess").status == 202
    assert disk_state() == "Unattached"
    disks = state.control("GET", "counters")[1]["disks"]
    assert [(d["grants"], d["revokes"], d["granted"]) for d in disks] == [(1, 1, False)]
    missing = state.handle(
        Request("GET", path[: -len("/D")] + "/none", query, auth, b"", "https://h")
    )
    assert (missing.status, missing.body["error"]["code"]) == (404, "ResourceNotFound")
