"""The Azure image service answers looks at several images of one resource group, asked
together, with one listing of the group (issue 13: ARM reads are throttled per subscription)."""

from __future__ import annotations

import asyncio
from typing import Any

from armserver.credentials import AsyncStaticTokenCredential
from armserver.process import ArmServerProcess
from imagedist._backends.azure.images import AzureImageService
from imagedist._domain import BlobRef, OsType
from imagedist._exceptions import ImagedistError, NotFound
from imagedist.abc import Image, ProvisioningState

from helpers import run

GROUP = "rg-looks"


def _service(arm: ArmServerProcess) -> AzureImageService:
    return AzureImageService(
        AsyncStaticTokenCredential(),
        arm_endpoint=arm.url,
        blob_url=lambda ref: f"https://{ref.account}.blob.core.windows.net/{ref.container}/x",
        client_kwargs={"connection_verify": arm.ca_file, "retry_total": 2},
    )


def _group_with_an_image(arm: ArmServerProcess) -> None:
    service = _service(arm)

    async def main() -> None:
        try:
            await service.ensure_resource_group("sub-0", GROUP, "westeurope")
        finally:
            await service.aclose()

    run(main())
    arm.set_image_state("sub-0", GROUP, "golden.westeurope", "Succeeded", region="westeurope")


def _look(arm: ArmServerProcess, *names: str, group: str = GROUP) -> list[Image | BaseException]:
    service = _service(arm)

    async def main() -> list[Image | BaseException]:
        try:
            looks = (service.get_image("sub-0", group, name) for name in names)
            return list(await asyncio.gather(*looks, return_exceptions=True))
        finally:
            await service.aclose()

    return run(main())


def _requests(arm: ArmServerProcess) -> dict[str, int]:
    return {k: int(v) for k, v in arm.counters()["requests"].items()}


def test_looks_asked_together_share_one_listing_and_say_what_a_get_says(
    arm: ArmServerProcess,
) -> None:
    _group_with_an_image(arm)
    found, missing = _look(arm, "GOLDEN.westeurope", "golden.next-1")
    assert isinstance(found, Image), found
    assert found.name == "golden.westeurope"
    assert found.provisioning_state is ProvisioningState.SUCCEEDED
    assert found.source_blob != BlobRef("", "", "")
    assert isinstance(missing, NotFound), missing
    requests = _requests(arm)
    assert requests.get("image_list") == 1
    assert requests.get("image_get", 0) == 0


def test_a_look_alone_is_one_get(arm: ArmServerProcess) -> None:
    _group_with_an_image(arm)
    [found] = _look(arm, "golden.westeurope")
    assert isinstance(found, Image) and found.name == "golden.westeurope"
    requests = _requests(arm)
    assert requests.get("image_get") == 1
    assert requests.get("image_list", 0) == 0


def test_looks_in_a_group_that_does_not_exist_are_not_found(arm: ArmServerProcess) -> None:
    looks = _look(arm, "a", "b", group="rg-nowhere")
    assert all(isinstance(look, NotFound) for look in looks), looks


def test_images_of_one_group_starting_together_look_at_the_group_once(
    arm: ArmServerProcess,
) -> None:
    """Every image of a resource group asks that its group exist before it starts; asked
    together, they share one look (and one creation), and each caller hears the outcome."""
    service = _service(arm)

    async def main() -> None:
        try:
            asks = (
                service.ensure_resource_group("sub-0", "rg-new", "westeurope") for _ in range(8)
            )
            await asyncio.gather(*asks)
            await service.ensure_resource_group("sub-0", "RG-NEW", "westeurope")  # known now
        finally:
            await service.aclose()

    run(main())
    requests = _requests(arm)
    assert requests.get("rg_head") == 1
    assert requests.get("rg_put") == 1


def test_a_failed_look_at_a_group_fails_every_caller_and_is_tried_again(
    arm: ArmServerProcess,
) -> None:
    """ARM refuses the name (400 InvalidResourceGroup): every caller asking together hears it,
    and the next ask looks again rather than remember a failure."""
    service = _service(arm)
    heads: list[int] = []

    async def ask_together() -> list[BaseException | None]:
        asks = (service.ensure_resource_group("sub-0", "bad name!", "westeurope") for _ in range(3))
        outcomes = list(await asyncio.gather(*asks, return_exceptions=True))
        heads.append(_requests(arm).get("rg_head", 0))
        return outcomes

    async def main() -> list[list[BaseException | None]]:
        try:
            return [await ask_together(), await ask_together()]
        finally:
            await service.aclose()

    for outcomes in run(main()):
        assert all(isinstance(outcome, ImagedistError) for outcome in outcomes), outcomes
        assert "HTTP 400" in str(outcomes[0])  # a HEAD answer has no body to quote
    assert heads[1] > heads[0] > 0


def test_a_get_a_shared_listing_and_list_images_read_an_image_alike(
    arm: ArmServerProcess,
) -> None:
    """The three ways of reading an image parse ARM's JSON into the same Image, every field."""
    _group_with_an_image(arm)
    seed: dict[str, Any] = {
        "region": "northeurope",
        "tags": {"imagedist-job": "j-1", "owner": "team a"},
        "os_type": "Windows",
        "blob_uri": "https://acct.blob.core.windows.net/vhds/dir/golden%20a.vhd",
    }
    arm.set_image_state("sub-0", GROUP, "win.northeurope", "Succeeded", **seed)
    (alone,) = _look(arm, "win.northeurope")
    shared, _ = _look(arm, "win.northeurope", "golden.westeurope")
    service = _service(arm)

    async def listed() -> list[Image]:
        try:
            return await service.list_images("sub-0", GROUP)
        finally:
            await service.aclose()

    in_list = [image for image in run(listed()) if image.name == "win.northeurope"]
    assert in_list == [alone] and shared == alone
    assert isinstance(alone, Image)
    assert (alone.region, alone.tags, alone.os_type) == (
        "northeurope",
        seed["tags"],
        OsType.WINDOWS,
    )
    assert alone.source_blob == BlobRef("acct", "vhds", "dir/golden a.vhd")
    assert (alone.hyper_v_generation, alone.error_code) == ("V1", "")
