"""The copy-holding transport answers as Azure Storage does, seen through the raw storage SDK.

The contract suite checks the adapter on top of it; these check the double itself: the status
codes, error codes and messages, and the copy headers a real account sends for a pending, failed
or aborted copy (Copy Blob, Get Blob Properties and Abort Copy Blob in the REST reference).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError, ResourceExistsError
from azure.core.pipeline.transport import AioHttpTransport
from azure.storage.blob import BlobSasPermissions, generate_blob_sas
from azure.storage.blob.aio import BlobClient, BlobServiceClient

from azurite import AzuriteServer

from held_copies import COPY_FAILED, SOURCE_GONE, CopyWorld, HeldCopiesTransport
from helpers import FakeClock

MiB = 1024 * 1024
ACCOUNT = "stagingacct"


def _refusal(exc: HttpResponseError) -> tuple[int | None, str, str]:
    """Status, the code the SDK parsed and the one on the wire (``x-ms-error-code``)."""
    response: Any = exc.response  # the legacy transport response: its headers are untyped
    wire = str(response.headers.get("x-ms-error-code", "")) if response is not None else ""
    return exc.status_code, str(getattr(exc, "error_code", "")), wire


Scenario = Callable[[BlobClient, BlobClient, str, FakeClock, CopyWorld], Awaitable[None]]


def _run(server: AzuriteServer, scenario: Scenario) -> None:
    """A 2 MiB source with 1 MiB written and a destination, in a container of their own, reached
    through the held transport at 1 MiB per clock second."""

    async def body() -> None:
        clock = FakeClock()
        world = CopyWorld(clock)
        transport = HeldCopiesTransport(AioHttpTransport(), world, bandwidth=MiB)
        conn = server.connection_string(ACCOUNT)
        async with BlobServiceClient.from_connection_string(conn, transport=transport) as service:
            container = service.get_container_client(f"h{uuid.uuid4().hex[:8]}")
            await container.create_container()
            try:
                source = container.get_blob_client("golden.vhd")
                await source.create_page_blob(2 * MiB)
                await source.upload_page(b"\x01" * MiB, offset=0, length=MiB)
                sas = generate_blob_sas(
                    ACCOUNT,
                    container.container_name,
                    "golden.vhd",
                    account_key=server.key(ACCOUNT),
                    permission=BlobSasPermissions(read=True),
                    expiry=datetime.now(UTC) + timedelta(hours=1),
                )
                dest = container.get_blob_client("dst.vhd")
                await scenario(source, dest, f"{source.url}?{sas}", clock, world)
            finally:
                await container.delete_container()

    asyncio.run(body())


def test_a_held_copy_is_pending_with_partial_progress_then_succeeds(
    azurite_server: AzuriteServer,
) -> None:
    async def scenario(
        source: BlobClient, dest: BlobClient, url: str, clock: FakeClock, world: CopyWorld
    ) -> None:
        started = await dest.start_copy_from_url(url)
        assert started["copy_status"] == "pending"

        clock.advance(0.5)
        copy = (await dest.get_blob_properties()).copy
        assert (copy.id, copy.status, copy.progress) == (
            started["copy_id"],
            "pending",
            f"{MiB // 2}/{MiB}",
        )
        assert copy.completion_time is None  # "does not appear if a copy is pending"

        clock.advance(1)
        copy = (await dest.get_blob_properties()).copy
        assert (copy.status, copy.progress) == ("success", f"{MiB}/{MiB}")
        # (Not its completion time: azure-storage-blob 12.19 never reads that header back.)

    _run(azurite_server, scenario)


def test_a_second_copy_while_one_is_pending_is_refused_as_azure_refuses_it(
    azurite_server: AzuriteServer,
) -> None:
    async def scenario(
        source: BlobClient, dest: BlobClient, url: str, clock: FakeClock, world: CopyWorld
    ) -> None:
        await dest.start_copy_from_url(url)

        with pytest.raises(ResourceExistsError) as refused:
            await dest.start_copy_from_url(url)

        assert _refusal(refused.value) == (409, "PendingCopyOperation", "PendingCopyOperation")
        assert "There is currently a pending copy operation." in str(refused.value)
        assert world.started == {(ACCOUNT, dest.container_name, "dst.vhd"): 1}

    _run(azurite_server, scenario)


def test_abort_stops_a_pending_copy_and_refuses_as_azure_does(
    azurite_server: AzuriteServer,
) -> None:
    async def scenario(
        source: BlobClient, dest: BlobClient, url: str, clock: FakeClock, world: CopyWorld
    ) -> None:
        copy_id = str((await dest.start_copy_from_url(url))["copy_id"])
        clock.advance(0.25)

        with pytest.raises(HttpResponseError) as mismatch:
            await dest.abort_copy("not-" + copy_id)
        assert _refusal(mismatch.value) == (409, "CopyIdMismatch", "CopyIdMismatch")

        await dest.abort_copy(copy_id)

        clock.advance(60)
        props = await dest.get_blob_properties()
        assert (props.copy.status, props.copy.progress) == ("aborted", f"{MiB // 4}/{MiB}")
        assert props.size == 0  # "leaves a destination blob with zero length"
        with pytest.raises(HttpResponseError) as none_pending:
            await dest.abort_copy(copy_id)
        code = "NoPendingCopyOperation"
        assert _refusal(none_pending.value) == (409, code, code)

    _run(azurite_server, scenario)


def test_a_copy_fails_on_demand_and_when_its_source_is_deleted(
    azurite_server: AzuriteServer,
) -> None:
    async def scenario(
        source: BlobClient, dest: BlobClient, url: str, clock: FakeClock, world: CopyWorld
    ) -> None:
        await dest.start_copy_from_url(url)
        world.fail(ACCOUNT, dest.container_name, "dst.vhd")
        copy = (await dest.get_blob_properties()).copy
        assert (copy.status, copy.status_description) == ("failed", COPY_FAILED)

        await dest.start_copy_from_url(url)  # a failed copy does not block the next one
        clock.advance(0.5)
        await source.delete_blob()
        clock.advance(10)
        copy = (await dest.get_blob_properties()).copy
        assert (copy.status, copy.status_description) == ("failed", SOURCE_GONE)
        assert copy.progress == f"{MiB // 2}/{MiB}"

    _run(azurite_server, scenario)
