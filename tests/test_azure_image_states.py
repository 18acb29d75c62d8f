"""The engine on the Azure backend meets images in every provisioning state (issue 10, item 6).

An image someone else is deleting or updating (or in a state imagedist does not know) is waited
for, never deleted, within a bound; a canceled creation is treated like a failed one. Each case
runs one target through the real SDKs against Azurite and the ARM test server.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import threading
import time
from pathlib import Path
from typing import cast

import pytest

from armserver.process import ArmServerProcess
from azure_env import AzureSetup, azure_world, make_setup  # noqa: F401
from azurite import AzuriteServer
from imagedist import Imagedist, OsType, TargetState, load_config
from imagedist._backends import open_backend
from imagedist._backends.azure.images import AzureImageService
from imagedist._backends.azure.provisioner import AzureProvisioner
from imagedist._domain import TargetRow
from imagedist.abc import Backend

from helpers import make_disk

REGION = "westeurope"
IMAGE = f"golden.{REGION}"
SEEN_READS = 12


@pytest.fixture
def one_target(
    tmp_path: Path,
    azure_world: AzuriteServer,  # noqa: F811 (a fixture)
    arm: ArmServerProcess,
    monkeypatch: pytest.MonkeyPatch,
) -> AzureSetup:
    """One target (``sub-0``, westeurope), its token and connection strings set in this process."""
    setup = make_setup(tmp_path, azure_world, arm, 1, subscriptions=1)
    for name, value in setup.env.items():
        if name.startswith("IMAGEDIST_") and os.environ.get(name) != value:
            monkeypatch.setenv(name, value)
    return setup


def _distribute(
    setup: AzureSetup,
    disk: Path,
    *,
    settle_seconds: float | None = None,
    seed: str | None = None,
    release: dict[str, object] | None = None,
) -> TargetRow:
    """Set up, put the target's image in state ``seed`` (made if absent), run one job to its
    end and return its target. With ``release`` (``set_image_state`` arguments), the image is
    released from ``seed`` once the engine has looked at it a dozen times: its wait is seen, and
    no test depends on how long upload and copy take."""

    async def main() -> TargetRow:
        config = load_config(setup.config)
        async with Imagedist(config, _trusting(open_backend(config), setup.arm.ca_file)) as app:
            if settle_seconds is not None:  # else the default bound (half an hour)
                app.ctx.settings = dataclasses.replace(
                    app.ctx.settings, image_settle_seconds=settle_seconds
                )
            await app.setup()
            if seed is not None:
                setup.arm.set_image_state("sub-0", _group(setup), IMAGE, seed, region=REGION)
            job = await app.submit(disk, "golden", OsType.LINUX)
            await app.upload(job.id)
            await app.work([job.id])
            status = await app.status(job.id)
            [target] = status.targets
            return target

    watcher = None
    if release is not None:
        watcher = threading.Thread(target=_release_when_seen, args=(setup, release), daemon=True)
        watcher.start()
    try:
        return asyncio.run(main())
    finally:
        if watcher is not None:
            watcher.join(60)


def _trusting(backend: Backend, ca_file: str) -> Backend:
    """The backend, its ARM clients trusting the test server's CA. (The worker subprocesses of
    other tests get it from ``SSL_CERT_FILE``, which aiohttp reads once, when imported.)"""
    cast(AzureImageService, backend.images)._arm.options["connection_verify"] = ca_file
    cast(AzureProvisioner, backend.provisioner)._arm.options["connection_verify"] = ca_file
    return backend


def _release_when_seen(setup: AzureSetup, release: dict[str, object]) -> None:
    """Once the engine has read the image a dozen times (it is waiting, and a replacement it
    might wrongly have started meanwhile has settled), release it."""
    deadline = time.monotonic() + 240
    while setup.arm.request_count("image_get") < SEEN_READS and time.monotonic() < deadline:
        time.sleep(0.05)
    state = str(release.pop("state"))
    setup.arm.set_image_state("sub-0", _group(setup), IMAGE, state, **release)  # type: ignore[arg-type]


def _group(setup: AzureSetup) -> str:
    return load_config(setup.config).fleet_targets()[0].resource_group


def _arm_image(setup: AzureSetup) -> dict[str, object] | None:
    for image in setup.arm.snapshot()["images"]:
        if image["name"] == IMAGE:
            return dict(image["properties"])
    return None


@pytest.mark.timeout(300)
def test_an_image_being_deleted_is_waited_for_then_made_anew(
    one_target: AzureSetup, tmp_path: Path
) -> None:
    disk = make_disk(tmp_path / "golden.raw")
    release = {"state": "Deleting", "seconds": 0, "then": "gone"}
    target = _distribute(one_target, disk, seed="Deleting", release=release)

    assert target.state is TargetState.DONE, target.error
    assert one_target.arm.request_count("image_delete") == 0  # it went on its own
    assert one_target.arm.image_creations("sub-0", _group(one_target), IMAGE) == 1
    image = _arm_image(one_target)
    assert image is not None and image["provisioningState"] == "Succeeded"


@pytest.mark.timeout(300)
def test_an_image_being_updated_is_waited_for_then_replaced(
    one_target: AzureSetup, tmp_path: Path
) -> None:
    disk = make_disk(tmp_path / "golden.raw")
    release = {"state": "Updating", "seconds": 0, "then": "Succeeded"}
    target = _distribute(one_target, disk, seed="Updating", release=release)

    assert target.state is TargetState.DONE, target.error
    image = _arm_image(one_target)
    assert image is not None and image["provisioningState"] == "Succeeded"
    assert one_target.arm.request_count("image_delete") >= 1  # the old one, once settled


@pytest.mark.timeout(300)
@pytest.mark.parametrize("state", ["Deleting", "Updating", "Migrating"])
def test_an_image_that_stays_busy_fails_the_target_untouched(
    one_target: AzureSetup, tmp_path: Path, state: str
) -> None:
    disk = make_disk(tmp_path / "golden.raw")
    target = _distribute(one_target, disk, settle_seconds=1.0, seed=state)

    assert target.state is TargetState.FAILED
    assert f"stayed in state '{state}'" in target.error and "imagedist retry" in target.error
    assert one_target.arm.request_count("image_delete") == 0
    assert one_target.arm.total_image_creations() == 0
    image = _arm_image(one_target)
    assert image is not None and image["provisioningState"] == state


@pytest.mark.timeout(300)
def test_a_canceled_creation_fails_the_target_like_a_failed_one(
    one_target: AzureSetup, tmp_path: Path
) -> None:
    one_target.arm.fail_image_creation(
        "sub-0",
        REGION,
        code="OperationPreempted",
        message="Operation execution has been preempted by a more recent operation.",
        state="Canceled",
    )
    disk = make_disk(tmp_path / "golden.raw")
    target = _distribute(one_target, disk)

    assert target.state is TargetState.FAILED
    assert "image creation canceled" in target.error
    assert _arm_image(one_target) is None  # a canceled image of ours is deleted, as a failed one
