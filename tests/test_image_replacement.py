"""An image from an earlier job is replaced, never deleted before its replacement exists."""

from __future__ import annotations

import asyncio
from pathlib import Path

from imagedist import Imagedist, OsType, TargetState, load_config
from imagedist._backends import open_backend
from imagedist._domain import SecretUrl
from imagedist._engine._targets import JOB_TAG
from imagedist.abc import Image, ImageService, ImageSpec, ProvisioningState

from helpers import make_disk, write_config


class WatchedImages(ImageService):
    """Delegates to the real service and checks, at every delete, that a replacement exists."""

    def __init__(self, inner: ImageService) -> None:
        self.inner = inner
        self.deleted_foreign: list[str] = []

    async def ensure_resource_group(self, subscription: str, name: str, region: str) -> None:
        await self.inner.ensure_resource_group(subscription, name, region)

    async def begin_create_image(self, spec: ImageSpec) -> None:
        await self.inner.begin_create_image(spec)

    async def get_image(self, subscription: str, resource_group: str, name: str) -> Image:
        return await self.inner.get_image(subscription, resource_group, name)

    async def list_images(self, subscription: str, resource_group: str) -> list[Image]:
        return await self.inner.list_images(subscription, resource_group)

    async def delete_image(self, subscription: str, resource_group: str, name: str) -> bool:
        images = await self.inner.list_images(subscription, resource_group)
        doomed = next((i for i in images if i.name == name), None)
        if doomed is not None and doomed.provisioning_state is ProvisioningState.SUCCEEDED:
            base = name.rsplit(".next-", 1)[0]
            successors = [
                i
                for i in images
                if i.name != name
                and (i.name == base or i.name.startswith(base + ".next-"))
                and i.provisioning_state is ProvisioningState.SUCCEEDED
                and (name != base or i.tags.get(JOB_TAG) != doomed.tags.get(JOB_TAG))
            ]
            assert successors, f"{name} deleted before its replacement existed"
            if name == base:
                self.deleted_foreign.append(name)
        return await self.inner.delete_image(subscription, resource_group, name)

    async def disk_size(self, disk_id: str) -> int:
        return await self.inner.disk_size(disk_id)

    async def grant_disk_read(self, disk_id: str, seconds: int) -> SecretUrl:
        return await self.inner.grant_disk_read(disk_id, seconds)

    async def revoke_disk_read(self, disk_id: str) -> None:
        await self.inner.revoke_disk_read(disk_id)

    async def aclose(self) -> None:
        await self.inner.aclose()


def _distribute(config_path: Path, disk: Path) -> tuple[str, list[str], dict[str, str]]:
    async def main() -> tuple[str, list[str], dict[str, str]]:
        config = load_config(config_path)
        backend = open_backend(config)
        watched = WatchedImages(backend.images)
        backend.images = watched
        async with Imagedist(config, backend) as app:
            job = await app.submit(disk, "golden", OsType.LINUX)
            await app.upload(job.id)
            await app.work([job.id])
            status = await app.status(job.id)
            assert {t.state for t in status.targets} == {TargetState.DONE}
            owners = {}
            for target in config.fleet_targets():
                for image in await watched.list_images(target.subscription, target.resource_group):
                    owners[f"{target.subscription}/{image.name}"] = image.tags[JOB_TAG]
            return job.id, watched.deleted_foreign, owners

    return asyncio.run(main())


def test_second_job_replaces_the_first_jobs_images_safely(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    disk = make_disk(tmp_path / "disk.vhd")
    first, deleted, owners = _distribute(config, disk)
    assert deleted == [] and set(owners.values()) == {first}
    second, deleted, owners = _distribute(config, disk)
    assert len(deleted) == 9  # every old image went, each only after its successor existed
    assert len(owners) == 9, sorted(owners)  # no staging image is left behind
    assert set(owners.values()) == {second}
    assert not any(name.endswith(".next") for name in owners)
