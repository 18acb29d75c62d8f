"""Contract of the ImageService port: every implementation must pass these."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from imagedist._domain import BlobRef, OsType
from imagedist._exceptions import Conflict, NotFound, OperationFailed
from imagedist._vhd._footer import fixed_footer
from imagedist.abc import Image, ImageSpec, ProvisioningState

from .conftest import ImageHarness, MiB
from helpers import run


def upload(h: ImageHarness, name: str, account: str | None = None) -> BlobRef:
    """A fixed VHD of 2 MiB (data, then its footer), the only kind Azure makes an image of."""
    ref = BlobRef(account or h.account, h.container, name)
    run(h.blobs.create_page_blob(ref, 2 * MiB + 512))
    run(h.blobs.write_pages(ref, 0, b"\x01" * MiB))
    run(h.blobs.write_pages(ref, 2 * MiB, fixed_footer(2 * MiB).pack()))
    return ref


def spec(h: ImageHarness, name: str, source: BlobRef, **changes: object) -> ImageSpec:
    fields: dict[str, object] = {
        "subscription": h.subscription,
        "resource_group": h.resource_group,
        "name": name,
        "region": h.region,
        "source_blob": source,
        "os_type": OsType.LINUX,
        "tags": {"job": "j1"},
    }
    fields.update(changes)
    return ImageSpec(**fields)  # type: ignore[arg-type]


def get(h: ImageHarness, name: str, subscription: str | None = None) -> Image:
    return run(h.service.get_image(subscription or h.subscription, h.resource_group, name))


def settled(h: ImageHarness, name: str, subscription: str | None = None) -> Image:
    """Poll until the image leaves Creating."""
    for _ in range(100):
        image = get(h, name, subscription)
        if image.provisioning_state != ProvisioningState.CREATING:
            return image
        run(h.clock.sleep(h.poll_seconds))
    raise AssertionError(f"image {name} still creating")


def count(h: ImageHarness, name: str, subscription: str | None = None) -> int:
    if h.creation_count is None:
        pytest.skip(f"{h.kind} cannot count creations")
    return h.creation_count(subscription or h.subscription, h.resource_group, name)


def failing_once(h: ImageHarness, name: str) -> tuple[BlobRef, Callable[[], object]]:
    """A source whose next creation fails, and what makes a creation from it succeed after."""
    if h.fail_next_creation is not None:
        source = upload(h, name)
        h.fail_next_creation()
        return source, lambda: None
    if h.checks_source_blob:  # a blob that is not there yet: upload it to repair
        return BlobRef(h.account, h.container, name), lambda: upload(h, name)
    pytest.skip(f"{h.kind} cannot make a creation fail once")


def test_an_image_is_creating_then_succeeds(images: ImageHarness) -> None:
    source = upload(images, "golden.vhd")
    run(images.service.begin_create_image(spec(images, "img-1", source)))

    if images.create_seconds > 0:
        assert get(images, "img-1").provisioning_state == ProvisioningState.CREATING
    image = settled(images, "img-1")

    assert image.provisioning_state == ProvisioningState.SUCCEEDED, image.error_message
    assert (image.name, image.region, image.source_blob) == ("img-1", images.region, source)
    assert (image.os_type, image.tags, image.error_code) == (OsType.LINUX, {"job": "j1"}, "")
    assert count(images, "img-1") == 1


@pytest.mark.parametrize("generation", ["V1", "V2"])
def test_an_image_is_made_as_the_generation_asked(images: ImageHarness, generation: str) -> None:
    """The spec's Hyper-V generation reaches the platform (a Gen2 disk made V1 boots no VM)."""
    source = upload(images, "golden.vhd")
    run(
        images.service.begin_create_image(
            spec(images, "img-1", source, hyper_v_generation=generation)
        )
    )
    assert settled(images, "img-1").hyper_v_generation == generation


def test_creating_again_with_the_same_source_is_a_no_op(images: ImageHarness) -> None:
    source = upload(images, "golden.vhd")
    run(images.service.begin_create_image(spec(images, "img-1", source)))
    run(images.service.begin_create_image(spec(images, "img-1", source)))  # while creating
    assert settled(images, "img-1").provisioning_state == ProvisioningState.SUCCEEDED

    run(images.service.begin_create_image(spec(images, "img-1", source)))  # once it exists

    assert get(images, "img-1").provisioning_state == ProvisioningState.SUCCEEDED
    assert count(images, "img-1") == 1


def test_creating_again_with_another_source_conflicts(images: ImageHarness) -> None:
    first, second = upload(images, "golden.vhd"), upload(images, "other.vhd")
    run(images.service.begin_create_image(spec(images, "img-1", first)))

    with pytest.raises(Conflict):
        run(images.service.begin_create_image(spec(images, "img-1", second)))

    assert settled(images, "img-1").source_blob == first


@pytest.mark.parametrize("where", ["foreign_region_account", "foreign_subscription_account"])
def test_a_blob_from_another_subscription_or_region_is_refused(
    images: ImageHarness, where: str
) -> None:
    source = upload(images, "golden.vhd", account=getattr(images, where))

    with pytest.raises(OperationFailed) as caught:
        run(images.service.begin_create_image(spec(images, "img-1", source)))

    assert "region" in str(caught.value).lower()
    with pytest.raises(NotFound):
        get(images, "img-1")
    assert caught.value.code == "InvalidParameter"


def test_a_missing_resource_group_is_not_found(images: ImageHarness) -> None:
    source = upload(images, "golden.vhd")
    with pytest.raises(NotFound, match="rg-missing"):
        run(
            images.service.begin_create_image(
                spec(images, "img-1", source, resource_group="rg-missing")
            )
        )


def test_an_injected_failure_fails_the_image(images: ImageHarness) -> None:
    if images.failing is None:
        pytest.skip(f"{images.kind} cannot inject image failures")
    subscription, region, account = images.failing
    run(images.service.ensure_resource_group(subscription, images.resource_group, region))
    source = upload(images, "golden.vhd", account=account)
    run(
        images.service.begin_create_image(
            spec(images, "img-1", source, subscription=subscription, region=region)
        )
    )

    image = settled(images, "img-1", subscription)

    assert image.provisioning_state == ProvisioningState.FAILED
    assert image.error_code == "InjectedFailure"
    assert image.error_message


def test_a_missing_source_blob_fails_the_image(images: ImageHarness) -> None:
    # The port promises only that such a creation does not succeed: the platform may refuse the
    # request (OperationFailed) or accept it and fail the image; either names the blob.
    if not images.checks_source_blob:
        pytest.skip(f"{images.kind}: this platform does not read source blobs")
    source = BlobRef(images.account, images.container, "never-uploaded.vhd")
    try:
        run(images.service.begin_create_image(spec(images, "img-1", source)))
    except OperationFailed as refused:
        assert refused.code
        assert source.name in str(refused)
        return

    image = settled(images, "img-1")

    assert image.provisioning_state == ProvisioningState.FAILED
    assert image.error_code  # "InvalidSourceBlob" locally; Azure has its own code
    assert source.name in image.error_message


def test_creating_a_failed_image_again_runs_the_creation_again(images: ImageHarness) -> None:
    source, repair = failing_once(images, "late.vhd")
    run(images.service.begin_create_image(spec(images, "img-1", source)))
    assert settled(images, "img-1").provisioning_state == ProvisioningState.FAILED

    repair()
    run(images.service.begin_create_image(spec(images, "img-1", source)))

    assert settled(images, "img-1").provisioning_state == ProvisioningState.SUCCEEDED
    assert count(images, "img-1") == 2


def test_delete_is_idempotent(images: ImageHarness) -> None:
    source = upload(images, "golden.vhd")
    run(images.service.begin_create_image(spec(images, "img-1", source)))
    settled(images, "img-1")

    assert run(images.service.delete_image(images.subscription, images.resource_group, "img-1"))
    assert not run(images.service.delete_image(images.subscription, images.resource_group, "img-1"))
    assert run(images.service.list_images(images.subscription, images.resource_group)) == []
    with pytest.raises(NotFound):
        get(images, "img-1")


def test_an_image_deleted_by_another_process_is_not_found(images: ImageHarness) -> None:
    source = upload(images, "golden.vhd")
    run(images.service.begin_create_image(spec(images, "img-1", source)))
    settled(images, "img-1")

    # Not the same scenario as above on Azure: this adapter instance has a poller for "img-1".
    other = images.reopen()
    try:
        assert run(other.delete_image(images.subscription, images.resource_group, "img-1"))
    finally:
        run(other.aclose())

    with pytest.raises(NotFound):
        get(images, "img-1")


def test_list_images_is_sorted_by_name(images: ImageHarness) -> None:
    source = upload(images, "golden.vhd")
    for name in ("img-c", "img-a", "img-b"):
        run(images.service.begin_create_image(spec(images, name, source)))
    run(images.clock.sleep(images.create_seconds + images.poll_seconds))

    listed = run(images.service.list_images(images.subscription, images.resource_group))

    assert [i.name for i in listed] == ["img-a", "img-b", "img-c"]
    assert {i.provisioning_state for i in listed} == {ProvisioningState.SUCCEEDED}
    run(images.service.ensure_resource_group(images.subscription, "rg-empty", images.region))
    assert run(images.service.list_images(images.subscription, "rg-empty")) == []


# -- states besides Creating/Succeeded/Failed: someone else updates, deletes or cancels an image


def _settled_image(images: ImageHarness, name: str) -> None:
    if images.set_state is None:
        pytest.skip(f"{images.kind} cannot put an image in another state")
    source = upload(images, f"{name}.vhd")
    run(images.service.begin_create_image(spec(images, name, source)))
    assert settled(images, name).provisioning_state == ProvisioningState.SUCCEEDED


@pytest.mark.parametrize(
    ("reported", "state"),
    [
        ("Updating", ProvisioningState.UPDATING),
        ("Deleting", ProvisioningState.DELETING),
        ("Canceled", ProvisioningState.CANCELED),
        ("Migrating", ProvisioningState.UNKNOWN),  # a state this version does not know
    ],
)
def test_every_provisioning_state_is_reported_as_such(
    images: ImageHarness, reported: str, state: ProvisioningState
) -> None:
    _settled_image(images, "img-1")
    assert images.set_state is not None
    images.set_state("img-1", reported)

    assert get(images, "img-1").provisioning_state is state
    listed = run(images.service.list_images(images.subscription, images.resource_group))
    assert [i.provisioning_state for i in listed] == [state]


def test_a_canceled_image_is_made_again_by_a_new_creation(images: ImageHarness) -> None:
    _settled_image(images, "img-1")
    assert images.set_state is not None
    images.set_state("img-1", "Canceled")
    source = BlobRef(images.account, images.container, "img-1.vhd")

    run(images.service.begin_create_image(spec(images, "img-1", source)))

    assert settled(images, "img-1").provisioning_state == ProvisioningState.SUCCEEDED
    assert count(images, "img-1") == 2
