"""Managed images in the simulator: a creation settles after a drawn delay, like an ARM LRO."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, replace

from ..._domain import SecretUrl
from ..._domain.names import parse_disk_id
from ..._domain.regions import check_image_place, region_name
from ..._exceptions import Conflict, NotFound
from ...abc import CopyStatus, Image, ImageService, ImageSpec, ProvisioningState, looks_until
from .arm import ArmThrottle
from .storage import SimStorage

__all__ = ["SimImageService"]

_UNSETTLED = (CopyStatus.PENDING, CopyStatus.FAILED, CopyStatus.ABORTED)


@dataclass
class _Creation:
    image: Image
    ready_at: float
    fail: tuple[str, str] | None  # injected (code, message), decided when the creation starts


class SimImageService(ImageService):
    """Images and resource groups in memory, over the blobs of ``storage``.

    Azure's rule that the source blob be in the image's subscription and region is enforced with the
    storage's account locations. Every call is an ARM call, throttled per subscription.
    """

    def __init__(self, storage: SimStorage, arm: ArmThrottle, *, seed: int = 0) -> None:
        self._storage = storage
        self._arm = arm
        self._rng = random.Random(f"{seed}:images")
        self._groups: dict[tuple[str, str], str] = {}
        self._images: dict[tuple[str, str, str], _Creation] = {}
        self._creations: dict[tuple[str, str, str], int] = {}
        self._fail_next: dict[tuple[str, str], int] = {}

    def reopen(self) -> SimImageService:
        """Another adapter on the same simulated platform (as another process would build it)."""
        other = SimImageService(self._storage, self._arm)
        other._rng, other._groups, other._images = self._rng, self._groups, self._images
        other._creations, other._fail_next = self._creations, self._fail_next
        return other

    def fail_next_creation(self, subscription: str, region: str, count: int = 1) -> None:
        """Make the next ``count`` creations in (subscription, region) fail (for tests)."""
        key = (subscription.lower(), region_name(region))
        self._fail_next[key] = self._fail_next.get(key, 0) + count

    def set_state(
        self, subscription: str, resource_group: str, name: str, state: ProvisioningState
    ) -> None:
        """Put an existing image in ``state``, as Azure does on its own (someone updates,
        deletes or cancels it): for tests of how callers cope with each state."""
        creation = self._images.get(_key(subscription, resource_group, name))
        if creation is None:
            raise NotFound(f"image '{name}' does not exist in resource group '{resource_group}'")
        self._settle(creation)
        creation.image = replace(creation.image, provisioning_state=state)

    def creation_count(self, subscription: str, resource_group: str, name: str) -> int:
        """How many creations were started for the image (for exactly-once checks)."""
        return self._creations.get(_key(subscription, resource_group, name), 0)

    async def ensure_resource_group(self, subscription: str, name: str, region: str) -> None:
        self._arm.call(subscription, write=True, what="ensure_resource_group")
        self._groups.setdefault((subscription.lower(), name.lower()), region)

    async def begin_create_image(self, spec: ImageSpec) -> None:
        self._arm.call(spec.subscription, write=True, what="begin_create_image")
        self._check_location(spec)
        if (spec.subscription.lower(), spec.resource_group.lower()) not in self._groups:
            raise NotFound(
                f"resource group '{spec.resource_group}' does not exist in "
                f"subscription '{spec.subscription}'"
            )
        key = _key(spec.subscription, spec.resource_group, spec.name)
        existing = self._images.get(key)
        if existing is not None:
            self._settle(existing)
            if existing.image.source_blob != spec.source_blob:
                raise Conflict(
                    f"image '{spec.name}' exists with source blob "
                    f"'{existing.image.source_blob}', not '{spec.source_blob}'"
                )
            if not existing.image.provisioning_state.unusable:
                return  # a PUT of what exists changes nothing
        self._start(key, spec)

    def _start(self, key: tuple[str, str, str], spec: ImageSpec) -> None:
        storage, rng = self._storage, self._rng
        faults = storage.faults
        now = storage.now()
        fail = None
        place = (spec.subscription.lower(), region_name(spec.region))
        if self._fail_next.get(place, 0) > 0:
            self._fail_next[place] -= 1
            fail = (
                "InjectedFailure",
                f"injected image creation failure in '{spec.subscription}' region '{spec.region}'",
            )
        elif (spec.subscription, region_name(spec.region)) in {
            (s, region_name(r)) for s, r in faults.fail_images_in
        }:
            fail = (
                "InjectedFailure",
                f"injected image creation failure in '{spec.subscription}' region '{spec.region}'",
            )
        elif faults.image_failure and rng.random() < faults.image_failure:
            fail = ("InjectedFailure", "injected image creation failure (InternalExecutionError)")
        image = Image(
            subscription=spec.subscription,
            resource_group=spec.resource_group,
            name=spec.name,
            region=spec.region,
            source_blob=spec.source_blob,
            os_type=spec.os_type,
            provisioning_state=ProvisioningState.CREATING,
            tags=dict(spec.tags),
            hyper_v_generation=spec.hyper_v_generation,
        )
        self._images[key] = _Creation(image, now + storage.model.draw_image_seconds(rng), fail)
        self._creations[key] = self._creations.get(key, 0) + 1
        storage.stats.images_started += 1

    async def get_image(self, subscription: str, resource_group: str, name: str) -> Image:
        self._arm.call(subscription, write=False, what="get_image")
        creation = self._images.get(_key(subscription, resource_group, name))
        if creation is None:
            raise NotFound(f"image '{name}' does not exist in resource group '{resource_group}'")
        self._settle(creation)
        return replace(creation.image, tags=dict(creation.image.tags))

    async def wait_for_image(
        self, subscription: str, resource_group: str, name: str, longest: float, every: float
    ) -> bool:
        creation = self._images.get(_key(subscription, resource_group, name))
        if creation is None or creation.image.provisioning_state is not ProvisioningState.CREATING:
            return True
        now = self._storage.now()
        wake = min(creation.ready_at, now + max(0.0, longest))
        # The looks the caller spares, one every ``every`` seconds until the first at or after
        # the wake, are counted as the ARM reads they would have been (not charged to the
        # subscription's throttle: they would have been spread over the wait).
        spared = looks_until(wake - now, every) - 1 if every > 0 else 0
        self._arm.count_reads(subscription, "get_image", spared)
        if wake > now:
            await asyncio.sleep(wake - now)
        return True

    async def delete_image(self, subscription: str, resource_group: str, name: str) -> bool:
        self._arm.call(subscription, write=True, what="delete_image")
        return self._images.pop(_key(subscription, resource_group, name), None) is not None

    async def list_images(self, subscription: str, resource_group: str) -> list[Image]:
        self._arm.call(subscription, write=False, what="list_images")
        found = []
        for (sub, group, _), creation in self._images.items():
            if (sub, group) == (subscription.lower(), resource_group.lower()):
                self._settle(creation)
                found.append(replace(creation.image, tags=dict(creation.image.tags)))
        return sorted(found, key=lambda image: image.name.lower())

    async def disk_size(self, disk_id: str) -> int:
        self._arm.call(parse_disk_id(disk_id)[0], write=False, what="disk_size")
        return self._storage.blob(self._storage.disk(disk_id)).size

    async def grant_disk_read(self, disk_id: str, seconds: int) -> SecretUrl:
        self._arm.call(parse_disk_id(disk_id)[0], write=True, what="grant_disk_read")
        self._storage.disk(disk_id)
        url = f"https://md-sim.blob.core.windows.net/{disk_id.lower()}/abcd?sig={self._rng.getrandbits(64):016x}"
        self._storage.grants[url] = disk_id
        return SecretUrl(url)

    async def revoke_disk_read(self, disk_id: str) -> None:
        self._arm.call(parse_disk_id(disk_id)[0], write=True, what="revoke_disk_read")
        grants = self._storage.grants
        for url in [u for u, d in grants.items() if d.lower() == disk_id.lower()]:
            del grants[url]

    def _check_location(self, spec: ImageSpec) -> None:
        check_image_place(spec, self._storage.locations.get(spec.source_blob.account))

    def _settle(self, creation: _Creation) -> None:
        image = creation.image
        if image.provisioning_state is not ProvisioningState.CREATING:
            return
        if self._storage.now() < creation.ready_at:
            return
        code, message = creation.fail or self._source_problem(creation)
        state = ProvisioningState.FAILED if code else ProvisioningState.SUCCEEDED
        creation.image = replace(
            image, provisioning_state=state, error_code=code, error_message=message
        )
        stats = self._storage.stats
        if code:
            stats.images_failed += 1
        else:
            stats.images_succeeded += 1

    def _source_problem(self, creation: _Creation) -> tuple[str, str]:
        source = creation.image.source_blob
        try:
            props = self._storage.properties(source)
        except NotFound:
            return "InvalidSourceBlob", f"source blob '{source}' does not exist"
        if props.copy_status in _UNSETTLED:
            return "InvalidSourceBlob", (
                f"source blob '{source}' is incomplete: the copy into it is {props.copy_status.value}"
            )
        return "", ""


def _key(subscription: str, resource_group: str, name: str) -> tuple[str, str, str]:
    return subscription.lower(), resource_group.lower(), name.lower()
