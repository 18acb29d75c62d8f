"""Contract of the GalleryService port: every implementation must pass these."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from imagedist._domain import BlobRef, OsType
from imagedist._domain.gallery import (
    DefinitionSpec,
    GalleryRef,
    GallerySharing,
    ImageVersion,
    ReplicationState,
    TargetRegion,
    VersionSource,
    VersionSpec,
)
from imagedist._exceptions import Conflict, NotFound, OperationFailed
from imagedist._vhd._footer import fixed_footer

from .conftest import GalleryHarness, MiB
from helpers import run

DEFINITION = "golden-linux"
REPLICATING = ReplicationState.REPLICATING
COMPLETED = ReplicationState.COMPLETED
FAILED = ReplicationState.FAILED


def upload_vhd(h: GalleryHarness, name: str, account: str | None = None) -> BlobRef:
    """A fixed VHD of 1 MiB with some data, as an upload leaves it."""
    ref = BlobRef(account or h.account, h.container, name)
    run(h.blobs.create_page_blob(ref, MiB + 512))
    run(h.blobs.write_pages(ref, 0, b"\x01" * 4096))
    run(h.blobs.write_pages(ref, MiB, fixed_footer(MiB).pack()))
    return ref


def definition(
    h: GalleryHarness, *, gallery: GalleryRef | None = None, **changes: object
) -> DefinitionSpec:
    fields: dict[str, object] = {
        "gallery": gallery or h.gallery,
        "name": DEFINITION,
        "region": h.region,
        "os_type": OsType.LINUX,
        "publisher": "contoso",
        "offer": "golden",
        "sku": "linux-22",
        "hyper_v_generation": "V2",
        "security_type": "TrustedLaunchSupported",
        "description": "the golden image",
    }
    fields.update(changes)
    return DefinitionSpec(**fields)  # type: ignore[arg-type]


def ready(h: GalleryHarness, gallery: GalleryRef | None = None) -> None:
    """The gallery and its definition exist."""
    run(h.service.ensure_gallery(gallery or h.gallery, h.region))
    run(h.service.ensure_definition(definition(h, gallery=gallery)))


def targets(*regions: str) -> tuple[TargetRegion, ...]:
    return tuple(TargetRegion(region) for region in regions)


def version_spec(
    h: GalleryHarness,
    source: BlobRef | str,
    name: str = "1.0.0",
    regions: tuple[str, ...] = ("westeurope", "northeurope"),
    **changes: object,
) -> VersionSpec:
    fields: dict[str, object] = {
        "gallery": h.gallery,
        "definition": DEFINITION,
        "name": name,
        "region": h.region,
        "source": VersionSource(blob=source)
        if isinstance(source, BlobRef)
        else VersionSource(version_id=source),
        "target_regions": targets(*regions),
        "tags": {"job": "j1"},
    }
    fields.update(changes)
    return VersionSpec(**fields)  # type: ignore[arg-type]


def get(h: GalleryHarness, name: str = "1.0.0", gallery: GalleryRef | None = None) -> ImageVersion:
    return run(h.service.get_version(gallery or h.gallery, DEFINITION, name))


def states(version: ImageVersion) -> dict[str, ReplicationState]:
    return {r.region: r.state for r in version.replication}


def replicated(
    h: GalleryHarness, name: str = "1.0.0", gallery: GalleryRef | None = None
) -> ImageVersion:
    """The version once every replication running now has ended."""
    get(h, name, gallery)  # its source is read when it is first looked at
    run(h.clock.sleep(h.replication_seconds))
    version = get(h, name, gallery)
    assert REPLICATING not in states(version).values(), version
    return version


def count(h: GalleryHarness, name: str = "1.0.0") -> int:
    return h.creation_count(h.gallery, DEFINITION, name)


# -- galleries and definitions -----------------------------------------------------------------------


def test_galleries_and_definitions_are_made_once(galleries: GalleryHarness) -> None:
    ready(galleries)
    ready(galleries)  # again, as after a crash: nothing changes

    assert run(galleries.service.get_definition(galleries.gallery, DEFINITION)) == definition(
        galleries
    )


def test_a_definition_s_mutable_properties_are_updated(galleries: GalleryHarness) -> None:
    ready(galleries)
    changed = definition(galleries, description="v2 of the image", end_of_life="2030-01-01")

    run(galleries.service.ensure_definition(changed))

    assert run(galleries.service.get_definition(galleries.gallery, DEFINITION)) == changed


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"sku": "linux-24"}, "sku"),
        ({"hyper_v_generation": "V1"}, "hyper_v_generation"),
        ({"security_type": "TrustedLaunch"}, "security_type"),
    ],
)
def test_other_immutable_properties_conflict_naming_them(
    galleries: GalleryHarness, changes: dict[str, Any], named: str
) -> None:
    ready(galleries)

    with pytest.raises(Conflict) as caught:
        run(galleries.service.ensure_definition(replace(definition(galleries), **changes)))

    assert named in str(caught.value)
    assert "another definition name" in str(caught.value)
    assert run(galleries.service.get_definition(galleries.gallery, DEFINITION)) == definition(
        galleries
    )


def test_a_definition_needs_its_gallery(galleries: GalleryHarness) -> None:
    with pytest.raises(NotFound, match="galmain"):
        run(galleries.service.ensure_definition(definition(galleries)))
    with pytest.raises(NotFound):
        run(galleries.service.get_definition(galleries.gallery, DEFINITION))


def test_a_version_needs_its_definition(galleries: GalleryHarness) -> None:
    run(galleries.service.ensure_gallery(galleries.gallery, galleries.region))
    source = upload_vhd(galleries, "golden.vhd")

    with pytest.raises(NotFound, match=DEFINITION):
        run(galleries.service.begin_create_version(version_spec(galleries, source)))


# -- a version's creation and replication ------------------------------------------------------------


def test_a_version_replicates_region_by_region_then_succeeds(galleries: GalleryHarness) -> None:
    ready(galleries)
    source = upload_vhd(galleries, "golden.vhd")
    run(galleries.service.begin_create_version(version_spec(galleries, source)))

    creating = get(galleries)
    assert creating.provisioning_state == "Creating"
    assert states(creating) == {"westeurope": REPLICATING, "northeurope": REPLICATING}
    assert all(r.progress < 100 for r in creating.replication)

    run(galleries.clock.sleep(galleries.replication_seconds / 2))
    halfway = get(galleries)
    running = [r for r in halfway.replication if r.state is REPLICATING]
    assert all(0 < r.progress < 100 for r in running)

    run(galleries.clock.sleep(galleries.replication_seconds))
    done = get(galleries)
    assert done.provisioning_state == "Succeeded", done.error_message
    assert states(done) == {"westeurope": COMPLETED, "northeurope": COMPLETED}
    assert [r.progress for r in done.replication] == [100, 100]
    assert (done.source, done.tags, done.region) == (
        VersionSource(blob=source),
        {"job": "j1"},
        galleries.region,
    )
    assert done.id.lower().endswith(f"/galleries/galmain/images/{DEFINITION}/versions/1.0.0")
    assert count(galleries) == 1


def test_a_version_outlives_the_adapter_that_created_it(galleries: GalleryHarness) -> None:
    ready(galleries)
    source = upload_vhd(galleries, "golden.vhd")
    run(galleries.service.begin_create_version(version_spec(galleries, source)))
    get(galleries)
    run(galleries.clock.sleep(galleries.replication_seconds))

    other = galleries.reopen()
    version = run(other.get_version(galleries.gallery, DEFINITION, "1.0.0"))

    assert version.provisioning_state == "Succeeded"


def test_creating_again_from_the_same_source_is_a_no_op(galleries: GalleryHarness) -> None:
    ready(galleries)
    source = upload_vhd(galleries, "golden.vhd")
    run(galleries.service.begin_create_version(version_spec(galleries, source)))
    run(galleries.service.begin_create_version(version_spec(galleries, source)))  # replicating
    assert replicated(galleries).provisioning_state == "Succeeded"

    run(galleries.service.begin_create_version(version_spec(galleries, source)))  # done

    assert get(galleries).provisioning_state == "Succeeded"
    assert count(galleries) == 1


def test_creating_again_from_another_source_conflicts(galleries: GalleryHarness) -> None:
    ready(galleries)
    first, second = upload_vhd(galleries, "golden.vhd"), upload_vhd(galleries, "other.vhd")
    run(galleries.service.begin_create_version(version_spec(galleries, first)))

    with pytest.raises(Conflict, match=r"other\.vhd"):
        run(galleries.service.begin_create_version(version_spec(galleries, second)))

    assert replicated(galleries).source == VersionSource(blob=first)
    assert count(galleries) == 1


def test_a_failing_region_fails_alone_and_is_retried_without_a_new_version(
    galleries: GalleryHarness,
) -> None:
    ready(galleries)
    source = upload_vhd(galleries, "golden.vhd")
    regions = ("westeurope", galleries.failing_region)
    run(galleries.service.begin_create_version(version_spec(galleries, source, regions=regions)))

    failed = replicated(galleries)
    assert states(failed) == {"westeurope": COMPLETED, galleries.failing_region: FAILED}
    assert failed.provisioning_state == "Failed"
    detail = failed.replication_of(galleries.failing_region)
    assert detail is not None and galleries.failing_region in detail.details

    healed = galleries.heal()
    run(
        healed.update_version(
            galleries.gallery, DEFINITION, "1.0.0", target_regions=targets(*regions)
        )
    )
    retrying = run(healed.get_version(galleries.gallery, DEFINITION, "1.0.0"))
    assert states(retrying) == {"westeurope": COMPLETED, galleries.failing_region: REPLICATING}
    assert retrying.provisioning_state == "Updating"

    run(galleries.clock.sleep(galleries.replication_seconds))
    done = run(healed.get_version(galleries.gallery, DEFINITION, "1.0.0"))
    assert states(done) == {"westeurope": COMPLETED, galleries.failing_region: COMPLETED}
    assert done.provisioning_state == "Succeeded"
    assert count(galleries) == 1  # retried, not made again


def test_a_region_added_later_replicates_and_one_removed_is_no_longer_reported(
    galleries: GalleryHarness,
) -> None:
    ready(galleries)
    source = upload_vhd(galleries, "golden.vhd")
    run(galleries.service.begin_create_version(version_spec(galleries, source)))
    replicated(galleries)

    wider = targets("westeurope", "northeurope", "uksouth")
    run(
        galleries.service.update_version(
            galleries.gallery, DEFINITION, "1.0.0", target_regions=wider
        )
    )
    adding = get(galleries)
    assert states(adding) == {
        "westeurope": COMPLETED,
        "northeurope": COMPLETED,
        "uksouth": REPLICATING,
    }
    assert adding.target_regions == wider
    run(galleries.clock.sleep(galleries.replication_seconds))
    assert set(states(get(galleries)).values()) == {COMPLETED}

    narrower = targets("westeurope", "uksouth")
    run(
        galleries.service.update_version(
            galleries.gallery, DEFINITION, "1.0.0", target_regions=narrower
        )
    )
    assert states(get(galleries)) == {"westeurope": COMPLETED, "uksouth": COMPLETED}
    assert count(galleries) == 1


def test_target_regions_must_keep_the_version_s_own_region(galleries: GalleryHarness) -> None:
    ready(galleries)
    run(
        galleries.service.begin_create_version(
            version_spec(galleries, upload_vhd(galleries, "g.vhd"))
        )
    )

    with pytest.raises(OperationFailed, match="westeurope") as caught:
        run(
            galleries.service.update_version(
                galleries.gallery, DEFINITION, "1.0.0", target_regions=targets("northeurope")
            )
        )

    assert caught.value.code == "InvalidParameter"
    assert set(states(get(galleries))) == {"westeurope", "northeurope"}


def test_exclude_from_latest_and_end_of_life_are_updated(galleries: GalleryHarness) -> None:
    ready(galleries)
    run(
        galleries.service.begin_create_version(
            version_spec(galleries, upload_vhd(galleries, "g.vhd"))
        )
    )
    before = replicated(galleries)
    assert (before.exclude_from_latest, before.end_of_life) == (False, "")

    run(
        galleries.service.update_version(
            galleries.gallery,
            DEFINITION,
            "1.0.0",
            exclude_from_latest=True,
            end_of_life="2031-06-30",
        )
    )

    after = get(galleries)
    assert (after.exclude_from_latest, after.end_of_life) == (True, "2031-06-30")
    assert after.provisioning_state == "Succeeded"
    assert states(after) == states(before)


def test_updating_a_missing_version_is_not_found(galleries: GalleryHarness) -> None:
    ready(galleries)
    with pytest.raises(NotFound):
        run(
            galleries.service.update_version(
                galleries.gallery, DEFINITION, "9.9.9", end_of_life="2030-01-01"
            )
        )


def test_list_versions_gives_every_version_of_the_definition(galleries: GalleryHarness) -> None:
    ready(galleries)
    assert run(galleries.service.list_versions(galleries.gallery, DEFINITION)) == []
    source = upload_vhd(galleries, "golden.vhd")
    for name in ("1.0.0", "1.0.1", "2.0.0"):
        run(galleries.service.begin_create_version(version_spec(galleries, source, name=name)))
    run(galleries.clock.sleep(galleries.replication_seconds))

    listed = run(galleries.service.list_versions(galleries.gallery, DEFINITION))

    assert sorted(v.name for v in listed) == ["1.0.0", "1.0.1", "2.0.0"]
    assert {v.provisioning_state for v in listed} == {"Succeeded"}


def test_deleting_a_version_is_idempotent(galleries: GalleryHarness) -> None:
    ready(galleries)
    run(
        galleries.service.begin_create_version(
            version_spec(galleries, upload_vhd(galleries, "g.vhd"))
        )
    )

    assert run(galleries.service.delete_version(galleries.gallery, DEFINITION, "1.0.0")) is True
    assert run(galleries.service.delete_version(galleries.gallery, DEFINITION, "1.0.0")) is False
    with pytest.raises(NotFound):
        get(galleries)
    assert run(galleries.service.list_versions(galleries.gallery, DEFINITION)) == []


# -- what Azure refuses --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["1.0", "v1.0.0", "1.0.0.0", "01.0.0", "1.0.2147483648"])
def test_a_bad_version_name_is_refused(galleries: GalleryHarness, name: str) -> None:
    ready(galleries)
    source = upload_vhd(galleries, "golden.vhd")

    with pytest.raises(OperationFailed, match=r"MAJOR\.MINOR\.PATCH") as caught:
        run(galleries.service.begin_create_version(version_spec(galleries, source, name=name)))

    assert caught.value.code == "InvalidParameter"
    assert run(galleries.service.list_versions(galleries.gallery, DEFINITION)) == []


@pytest.mark.parametrize("where", ["foreign_subscription_account", "foreign_region_account"])
def test_a_blob_outside_the_gallery_s_subscription_or_region_is_refused(
    galleries: GalleryHarness, where: str
) -> None:
    ready(galleries)
    source = upload_vhd(galleries, "golden.vhd", account=getattr(galleries, where))

    with pytest.raises(OperationFailed, match="storage account") as caught:
        run(galleries.service.begin_create_version(version_spec(galleries, source)))

    assert caught.value.code == "InvalidParameter"
    with pytest.raises(NotFound):
        get(galleries)


def test_a_version_outside_its_gallery_s_region_or_source_region_is_refused(
    galleries: GalleryHarness,
) -> None:
    ready(galleries)
    source = upload_vhd(galleries, "golden.vhd")

    with pytest.raises(OperationFailed, match="location") as elsewhere:
        run(
            galleries.service.begin_create_version(
                version_spec(galleries, source, region="northeurope")
            )
        )
    with pytest.raises(OperationFailed, match="must include") as untargeted:
        run(
            galleries.service.begin_create_version(
                version_spec(galleries, source, regions=("northeurope",))
            )
        )

    assert {elsewhere.value.code, untargeted.value.code} == {"InvalidParameter"}
    assert run(galleries.service.list_versions(galleries.gallery, DEFINITION)) == []


def _missing(h: GalleryHarness) -> BlobRef:
    return BlobRef(h.account, h.container, "missing.vhd")


def _not_whole_mib(h: GalleryHarness) -> BlobRef:
    ref = BlobRef(h.account, h.container, "odd.vhd")
    run(h.blobs.create_page_blob(ref, MiB + 1024))
    return ref


def _no_footer(h: GalleryHarness) -> BlobRef:
    ref = BlobRef(h.account, h.container, "raw.vhd")
    run(h.blobs.create_page_blob(ref, MiB + 512))
    run(h.blobs.write_pages(ref, 0, b"\x01" * 4096))
    return ref


def _pending_copy(h: GalleryHarness) -> BlobRef:
    ref = BlobRef(h.account, h.container, "copying.vhd")
    h.start_pending_copy(upload_vhd(h, "origin.vhd"), ref)
    return ref


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (_missing, "does not exist"),
        (_not_whole_mib, "whole number of MiB"),
        (_no_footer, "not a fixed VHD"),
        (_pending_copy, "copy into it is pending"),
    ],
    ids=["missing", "not-whole-mib", "no-footer", "pending-copy"],
)
def test_a_source_blob_the_creation_cannot_use_fails_the_version(
    galleries: GalleryHarness, make: object, says: str
) -> None:
    ready(galleries)
    source = make(galleries)  # type: ignore[operator]
    run(galleries.service.begin_create_version(version_spec(galleries, source)))

    failed = get(galleries)

    assert failed.provisioning_state == "Failed"
    assert failed.error_code == "InvalidParameter"
    assert says in failed.error_message and str(source) in failed.error_message
    assert set(states(failed).values()) == {FAILED}


def test_a_failed_creation_is_made_again_once_its_source_is_right(
    galleries: GalleryHarness,
) -> None:
    ready(galleries)
    missing = _missing(galleries)
    run(galleries.service.begin_create_version(version_spec(galleries, missing)))
    assert get(galleries).provisioning_state == "Failed"

    upload_vhd(galleries, missing.name)
    run(galleries.service.begin_create_version(version_spec(galleries, missing)))

    assert replicated(galleries).provisioning_state == "Succeeded"
    assert count(galleries) == 2


# -- a cross-subscription copy, and sharing ------------------------------------------------------------


def test_a_version_is_copied_from_a_succeeded_version_of_another_subscription(
    galleries: GalleryHarness,
) -> None:
    ready(galleries)
    ready(galleries, galleries.other_gallery)
    run(
        galleries.service.begin_create_version(
            version_spec(galleries, upload_vhd(galleries, "g.vhd"))
        )
    )
    central = replicated(galleries)

    copy = version_spec(
        galleries, central.id, gallery=galleries.other_gallery, regions=("westeurope",)
    )
    run(galleries.service.begin_create_version(copy))

    local = replicated(galleries, gallery=galleries.other_gallery)
    assert local.provisioning_state == "Succeeded", local.error_message
    assert local.source == VersionSource(version_id=central.id)
    assert local.id != central.id


@pytest.mark.parametrize("state", ["missing", "replicating"])
def test_a_copy_from_a_version_that_has_not_succeeded_fails(
    galleries: GalleryHarness, state: str
) -> None:
    ready(galleries)
    ready(galleries, galleries.other_gallery)
    run(
        galleries.service.begin_create_version(
            version_spec(galleries, upload_vhd(galleries, "g.vhd"))
        )
    )
    central = get(galleries)  # still replicating
    source_id = central.id if state == "replicating" else central.id.replace("1.0.0", "7.0.0")

    copy = version_spec(
        galleries, source_id, gallery=galleries.other_gallery, regions=("westeurope",)
    )
    run(galleries.service.begin_create_version(copy))

    failed = get(galleries, gallery=galleries.other_gallery)
    assert failed.provisioning_state == "Failed"
    assert failed.error_code == "InvalidParameter"
    assert source_id in failed.error_message


def test_sharing_adds_subscriptions_and_tenants_once(galleries: GalleryHarness) -> None:
    ready(galleries)
    assert run(galleries.service.get_sharing(galleries.gallery)) == GallerySharing()

    run(galleries.service.share(galleries.gallery, ["sub-b", "sub-c"], ["tenant-1"]))
    run(galleries.service.share(galleries.gallery, ["sub-c", "sub-d"], ["tenant-1"]))

    assert run(galleries.service.get_sharing(galleries.gallery)) == GallerySharing(
        ("sub-b", "sub-c", "sub-d"), ("tenant-1",)
    )


def test_sharing_a_missing_gallery_is_not_found(galleries: GalleryHarness) -> None:
    with pytest.raises(NotFound):
        run(galleries.service.share(galleries.gallery, ["sub-b"], []))
    with pytest.raises(NotFound):
        run(galleries.service.get_sharing(galleries.gallery))
