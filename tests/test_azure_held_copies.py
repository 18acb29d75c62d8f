"""The engine's crash-resume path on the Azure backend, with copies that stay pending.

Azurite finishes every copy inside its request, so the end-to-end tests never see a worker stop
while a copy runs. Here the target accounts' copies are held pending by
:class:`held_copies.HeldCopiesTransport` (the real storage SDK, Azurite behind it): a worker is
stopped while every target copy is pending, and the next worker must adopt those copies, not
start them again, and finish the job, through the real SDKs against Azurite and the ARM server.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any
from urllib.parse import quote

from armserver.credentials import AsyncStaticTokenCredential
from armserver.process import ArmServerProcess
from azure_env import AzureSetup, azure_world, make_setup  # noqa: F401
from azurite import AzuriteServer
from imagedist import Imagedist, OsType
from imagedist._backends.azure.blobs import AccountAccess, AzureBlobStore
from imagedist._backends.azure.images import AzureImageService
from imagedist._backends.azure.provisioner import AzureProvisioner
from imagedist._backends.azure.state import AzureTableStateStore
from imagedist._config import Config, load_config
from imagedist._domain import BlobRef
from imagedist.abc import Backend, SystemClock

from held_copies import CopyWorld, HeldCopiesTransport
from helpers import FakeClock, make_disk

MiB = 1024 * 1024


def _backend(setup: AzureSetup, config: Config, world: CopyWorld) -> Backend:
    """The Azure backend ``open_backend`` would build for the config, with held copies and trust
    in the ARM test server's CA (this process loaded its trust store before the server existed)."""
    azurite, arm = setup.azurite, setup.arm
    arm_kwargs: dict[str, Any] = {"connection_verify": arm.ca_file, "polling_interval": 0.05}

    def blob_url(ref: BlobRef) -> str:
        return f"{azurite.blob_endpoint(ref.account)}/{ref.container}/{quote(ref.name)}"

    access = {
        name: AccountAccess.from_connection_string(azurite.connection_string(name))
        for name in azurite.accounts
    }
    return Backend(
        blobs=AzureBlobStore(
            access, wrap_transport=lambda inner: HeldCopiesTransport(inner, world)
        ),
        images=AzureImageService(
            AsyncStaticTokenCredential(),
            arm_endpoint=arm.url,
            blob_url=blob_url,
            client_kwargs=arm_kwargs,
        ),
        state=AzureTableStateStore(
            azurite.connection_string(config.staging.account),
            table_prefix=config.azure.table_prefix,
        ),
        clock=SystemClock(),
        provisioner=AzureProvisioner(
            AsyncStaticTokenCredential(), arm_endpoint=arm.url, client_kwargs=arm_kwargs
        ),
    )


async def _until(condition: Any, what: str, timeout: float = 90.0) -> None:
    """Wait (in real time: the workers run on it) until ``condition()`` holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, f"timed out waiting until {what}"
        await asyncio.sleep(0.05)


def test_a_worker_stopped_while_copies_are_pending_leaves_them_to_the_next_one(
    tmp_path: Path,
    azure_world: AzuriteServer,  # noqa: F811 (a fixture)
    arm: ArmServerProcess,
) -> None:
    setup = make_setup(tmp_path, azure_world, arm, 3)
    done = setup.imagedist("setup")
    assert done.returncode == 0, done.stderr
    config = load_config(setup.config)
    accounts = [account for _, _, account in setup.targets]
    clock = FakeClock()
    world = CopyWorld(clock)
    for account in accounts:
        world.hold_copies_into(account, bandwidth=MiB)  # frozen clock: pending until it moves
    disk = make_disk(tmp_path / "golden.vhd")

    def all_pending() -> bool:
        return all(world.pending_into(account) == 1 for account in accounts)

    async def scenario() -> Any:
        async with Imagedist(config, _backend(setup, config, world)) as first:
            job = await first.submit(disk, "golden", OsType.LINUX)
            await first.upload(job.id)
            worker = asyncio.create_task(first.work())
            await _until(all_pending, "every target's copy is pending")
            worker.cancel()  # the worker stops; its copies go on in the storage service
            await asyncio.gather(worker, return_exceptions=True)
        clock.advance(3600.0)  # the copies finish meanwhile
        async with Imagedist(config, _backend(setup, config, world)) as second:
            await second.work()
            return await second.status(job.id)

    status = asyncio.run(scenario())

    assert status.completed and status.error_count == 0
    for subscription, region, account in setup.targets:
        copies = [n for dest, n in world.started.items() if dest[0] == account]
        assert copies == [1], f"the copy into {account} was started again"
        assert arm.image_creations(subscription, "imagedist-images", f"golden.{region}") == 1
