"""What Azure Compute Gallery refuses and reports, shared by the local and sim gallery adapters.

Placement rules for a version made from a VHD, as Azure documents them:

- the version's location is its gallery's location (a child resource lives where its parent does);
- the target regions include the version's location ("you need to replicate to the source
  region", *Create an image definition and an image version*), and each is an Azure region;
- the source blob's storage account is in the gallery's subscription and in the version's region
  (the portal: "the source must be in the same region where the image is created"; a blob in
  another region gives "does not belong to the same region");
- the version name is ``MAJOR.MINOR.PATCH``, 32-bit integers.

Azure refuses these at once with 400 ``InvalidParameter``; the source's content (the blob is
there, a fixed VHD, no copy pending into it; a source version that succeeded) is read by the
long-running creation, which fails with the same code.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from .._domain import BlobRef
from .._domain.gallery import (
    GalleryRef,
    ImageVersion,
    RegionReplication,
    ReplicationState,
    TargetRegion,
    VersionSource,
    VersionSpec,
    parse_version,
)
from .._domain.regions import REGIONS, region_name
from .._exceptions import OperationFailed
from .._vhd import fixed_footer_problem
from ..abc import CopyStatus

__all__ = [
    "FOOTER",
    "INVALID",
    "REPLICATION_FAILURE",
    "RegionRecord",
    "VersionRecord",
    "blob_problem",
    "check_targets",
    "check_version_request",
    "effective_targets",
    "new_record",
    "parse_version_id",
    "progress",
    "provisioning_state",
    "retarget",
    "same_source",
    "settle",
    "source_checked",
    "source_version_problem",
    "to_version",
    "version_id",
]

INVALID = "InvalidParameter"  # Azure's code for every refusal here
FOOTER = 512
MIB = 1024 * 1024
# What a region whose replication was made to fail reports (``[local] fail_gallery_regions``, the
# sim's faults), worded like Azure's replication error details.
REPLICATION_FAILURE = (
    "Replication to region '{region}' failed: the regional copy of the image could not be"
    " created (injected failure, code ReplicationJobFailed). Update the version's target regions"
    " to replicate it again."
)

_VERSION_ID = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/"
    r"Microsoft\.Compute/galleries/(?P<gallery>[^/]+)/images/(?P<definition>[^/]+)/"
    r"versions/(?P<name>[^/]+)$",
    re.IGNORECASE,
)


def version_id(gallery: GalleryRef, definition: str, name: str) -> str:
    """The ARM id of a gallery image version."""
    return (
        f"/subscriptions/{gallery.subscription}/resourceGroups/{gallery.resource_group}"
        f"/providers/Microsoft.Compute/galleries/{gallery.name}/images/{definition}"
        f"/versions/{name}"
    )


def parse_version_id(arm_id: str) -> tuple[GalleryRef, str, str] | None:
    """(gallery, definition, version) of a version's ARM id; None if it is not one."""
    match = _VERSION_ID.match(arm_id)
    if match is None:
        return None
    gallery = GalleryRef(match["sub"], match["rg"], match["gallery"])
    return gallery, match["definition"], match["name"]


def same_source(a: VersionSource, b: VersionSource) -> bool:
    """Whether two sources are the same blob, or the same version (ARM ids ignore case)."""
    if a.blob is not None or b.blob is not None:
        return a.blob == b.blob
    return a.version_id.lower() == b.version_id.lower()


def effective_targets(spec: VersionSpec) -> tuple[TargetRegion, ...]:
    """The spec's target regions; Azure's default when none is given: the version's region."""
    return spec.target_regions or (TargetRegion(spec.region),)


def _refuse(message: str) -> OperationFailed:
    return OperationFailed(message, code=INVALID)


def check_version_request(
    spec: VersionSpec, gallery_region: str, account_place: tuple[str, str] | None
) -> None:
    """Refuse, as Azure's 400 does, a version Azure would not accept.

    :param gallery_region: the location of the version's gallery.
    :param account_place: (subscription, region) of the source blob's storage account; None
        if the account is unknown (or the source is not a blob).
    :raises OperationFailed: code ``InvalidParameter``, naming the rule and the fix.
    """
    try:
        parse_version(spec.name)
    except ValueError as exc:
        raise _refuse(f"Gallery image version name is invalid: {exc}.") from None
    where = region_name(spec.region)
    if where != region_name(gallery_region):
        raise _refuse(
            f"Gallery image version '{spec.name}' must be created in its gallery's location"
            f" '{gallery_region}', not '{spec.region}'."
        )
    check_targets(spec.name, spec.region, effective_targets(spec))
    source = spec.source
    if source.blob is None and not source.version_id:
        raise _refuse(
            f"Gallery image version '{spec.name}' has no source; give a blob or a version."
        )
    if source.blob is not None:
        _check_blob_place(spec, account_place)
    elif parse_version_id(source.version_id) is None:
        raise _refuse(
            f"Source '{source.version_id}' of gallery image version '{spec.name}' is not the"
            " resource id of a gallery image version."
        )


def check_targets(name: str, location: str, targets: tuple[TargetRegion, ...]) -> None:
    """Each target is a region, once, with a replica; the version's own region is one."""
    for target in targets:
        if region_name(target.name) not in REGIONS:
            raise _refuse(f"Target region '{target.name}' of version '{name}' is not a region.")
        if target.replicas < 1:
            raise _refuse(
                f"Target region '{target.name}' of version '{name}' asks for"
                f" {target.replicas} replicas; give at least 1."
            )
    names = [region_name(t.name) for t in targets]
    if len(set(names)) != len(names):
        raise _refuse(f"The target regions of version '{name}' name a region twice.")
    if region_name(location) not in names:
        raise _refuse(
            f"The target regions of gallery image version '{name}' must include its source"
            f" region '{location}'; add it to the target regions."
        )


def _check_blob_place(spec: VersionSpec, account_place: tuple[str, str] | None) -> None:
    blob = spec.source.blob
    assert blob is not None
    subscription, region = account_place or ("", "")
    wanted = (spec.gallery.subscription.lower(), region_name(spec.region))
    if (subscription.lower(), region_name(region)) != wanted:
        raise _refuse(
            f"Source blob '{blob}' must be in a storage account in the gallery's subscription"
            f" '{spec.gallery.subscription}' and in the version's region '{spec.region}';"
            f" storage account '{blob.account}' is not. Copy the VHD into such an account first."
        )


def blob_problem(
    blob: BlobRef, size: int | None, copy_status: CopyStatus, footer: bytes
) -> str | None:
    """Why the blob cannot be a version's source, as the creation reports it; None if it can.

    :param size: the blob's size, None if it does not exist.
    :param footer: its last 512 bytes.
    """
    if size is None:
        return (
            f"The source blob '{blob}' does not exist; upload the VHD before creating the version."
        )
    if copy_status in (CopyStatus.PENDING, CopyStatus.FAILED, CopyStatus.ABORTED):
        return (
            f"The source blob '{blob}' is not complete: the copy into it is {copy_status.value};"
            " wait for the copy to succeed."
        )
    if size < FOOTER + MIB or (size - FOOTER) % MIB:
        return (
            f"The source blob '{blob}' has {size} bytes: a fixed VHD's size is a whole number of"
            " MiB plus its 512-byte footer; convert the disk to a fixed VHD."
        )
    problem = fixed_footer_problem(footer, size)
    if problem is not None:
        return f"The source blob '{blob}' is not a fixed VHD: {problem}; upload a fixed VHD."
    return None


def progress(now: float, started_at: float, ready_at: float) -> int:
    """Percent of a replication running from ``started_at`` to ``ready_at`` (99 at most until it
    has ended)."""
    if ready_at <= started_at:
        return 99 if now < ready_at else 100
    done = (now - started_at) / (ready_at - started_at)
    return max(0, min(99, math.floor(done * 100)))


def provisioning_state(states: list[ReplicationState], *, updating: bool) -> str:
    """The version's provisioning state from its regions': Creating (or Updating, after a
    PATCH) while one replicates, then Failed if one failed, else Succeeded."""
    if ReplicationState.REPLICATING in states:
        return "Updating" if updating else "Creating"
    if ReplicationState.FAILED in states:
        return "Failed"
    return "Succeeded"


# -- a version's life, as plain records both adapters keep (in SQLite, in memory) ----------------


@dataclass
class RegionRecord:
    """One target region's replication: it runs from ``started_at`` to ``ready_at`` and then
    ends ``Completed``, or ``Failed`` if ``fails`` (decided when it started)."""

    region: str
    state: ReplicationState
    started_at: float
    ready_at: float
    fails: bool = False
    details: str = ""


@dataclass
class VersionRecord:
    """A version as a gallery holds it: what was asked, and where its creation is."""

    spec: VersionSpec
    created_at: float
    operation: int  # which creation this is: a failed one made again counts up
    source_checked: bool = False
    error_code: str = ""  # the creation's own failure (its source), "" if none
    error_message: str = ""
    updating: bool = False  # a PATCH of the target regions is replicating
    regions: dict[str, RegionRecord] = field(default_factory=dict)  # by region_name


Durations = Callable[[str], float]  # seconds a replication to the region takes
Fails = Callable[[str], bool]  # whether a replication to the region starting now fails


def new_record(
    spec: VersionSpec, now: float, operation: int, duration: Durations, fails: Fails
) -> VersionRecord:
    """A version just accepted: Creating, each target region replicating from now."""
    record = VersionRecord(replace(spec, target_regions=effective_targets(spec)), now, operation)
    for target in record.spec.target_regions:
        _start_region(record, target.name, now, duration, fails)
    return record


def _start_region(
    record: VersionRecord, name: str, now: float, duration: Durations, fails: Fails
) -> None:
    region = region_name(name)
    if record.error_code:  # nothing to replicate: the creation itself failed
        record.regions[region] = RegionRecord(
            region, ReplicationState.FAILED, now, now, details=record.error_message
        )
        return
    record.regions[region] = RegionRecord(
        region, ReplicationState.REPLICATING, now, now + duration(region), fails(region)
    )


def source_checked(record: VersionRecord, problem: str | None) -> None:
    """The creation read its source: a problem fails the version and every region with it."""
    record.source_checked = True
    if problem is None:
        return
    record.error_code, record.error_message = INVALID, problem
    for region in record.regions.values():
        region.state, region.details, region.ready_at = ReplicationState.FAILED, problem, 0.0


def settle(record: VersionRecord, now: float) -> bool:
    """End the replications due by ``now``; whether anything changed. Nothing ends before the
    source was checked."""
    if not record.source_checked:
        return False
    changed = False
    for region in record.regions.values():
        if region.state is ReplicationState.REPLICATING and now >= region.ready_at:
            if region.fails:
                region.state = ReplicationState.FAILED
                region.details = REPLICATION_FAILURE.format(region=region.region)
            else:
                region.state = ReplicationState.COMPLETED
            changed = True
    return changed


def retarget(
    record: VersionRecord,
    targets: tuple[TargetRegion, ...],
    now: float,
    duration: Durations,
    fails: Fails,
) -> None:
    """A PATCH of the target regions: new regions start replicating, failed ones replicate
    again, completed and running ones go on, and those left out are dropped."""
    wanted = {region_name(t.name) for t in targets}
    for region in [r for r in record.regions if r not in wanted]:
        del record.regions[region]
    for target in targets:
        current = record.regions.get(region_name(target.name))
        if current is None or current.state is ReplicationState.FAILED:
            _start_region(record, target.name, now, duration, fails)
            record.updating = True
    record.spec = replace(record.spec, target_regions=targets)


def to_version(record: VersionRecord, now: float) -> ImageVersion:
    """What the gallery reports: provisioning state, and each region's state and progress."""
    spec = record.spec
    replication = tuple(
        RegionReplication(
            region.region,
            region.state,
            progress(now, region.started_at, region.ready_at)
            if region.state is ReplicationState.REPLICATING
            else (100 if region.state is ReplicationState.COMPLETED else 0),
            region.details,
        )
        for region in sorted(record.regions.values(), key=lambda r: r.region)
    )
    states = [r.state for r in replication]
    if record.error_code:
        state, code, message = "Failed", record.error_code, record.error_message
    elif not record.source_checked:
        state, code, message = "Creating", "", ""
    else:
        state = provisioning_state(states, updating=record.updating)
        failed = [r for r in replication if r.state is ReplicationState.FAILED]
        code = "ReplicationFailed" if state == "Failed" else ""
        message = " ".join(r.details for r in failed) if state == "Failed" else ""
    return ImageVersion(
        gallery=spec.gallery,
        definition=spec.definition,
        name=spec.name,
        region=spec.region,
        provisioning_state=state,
        source=spec.source,
        target_regions=spec.target_regions,
        replication=replication,
        exclude_from_latest=spec.exclude_from_latest,
        end_of_life=spec.end_of_life,
        published_at=record.created_at,
        tags=dict(spec.tags),
        error_code=code,
        error_message=message,
        id=version_id(spec.gallery, spec.definition, spec.name),
    )


def source_version_problem(source: ImageVersion | None, arm_id: str, region: str) -> str | None:
    """Why a version cannot be copied from ``source`` (None: it does not exist) into ``region``;
    None if it can."""
    if source is None:
        return f"The source gallery image version '{arm_id}' does not exist."
    if source.provisioning_state != "Succeeded":
        return (
            f"The source gallery image version '{arm_id}' is {source.provisioning_state}, not"
            " Succeeded; wait until it has replicated."
        )
    replica = source.replication_of(region)
    if replica is None or replica.state is not ReplicationState.COMPLETED:
        return (
            f"The source gallery image version '{arm_id}' has no replica in region '{region}';"
            " add the region to its target regions first."
        )
    return None
