"""The job operations behind the library API: submit, status, retry, cleanup, switches."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path

from .._domain import (
    ACTIVE_TARGET_STATES,
    IN_FLIGHT_SOURCE_STATES,
    IN_FLIGHT_TARGET_STATES,
    NEEDS_BLOB_STATES,
    BlobRef,
    FailedPhase,
    HyperVGeneration,
    Job,
    JobState,
    OsType,
    SourceKind,
    SourceRow,
    SourceState,
    Target,
    TargetRow,
    TargetState,
)
from .._domain.events import LogLevel, Step
from .._domain.names import IMAGE_NAME
from .._domain.publications import PublicationRow, PublicationState
from .._exceptions import InvalidInput, NotFound, PreconditionFailed
from .._vhd import Firmware, disk_firmware
from ..abc import CopyStatus
from ._cleanup import drop_every_target_blob, drop_sources
from ._context import EngineContext
from ._disk import VHD_FOOTER, check_disk_id
from ._publish import (
    plan_publications,
    resolve_destinations,
    retried_publication,
    wanted_regions,
)
from ._sources import clone_name
from ._status import PUBLICATION_ACTIVE_STATES, get_job, job_status
from ._worker import revive_source, target_enablement

__all__ = [
    "cleanup_job",
    "get_job",
    "job_status",
    "retry_job",
    "select_targets",
    "submit_disk_job",
    "submit_job",
    "validate_image_name",
]


def validate_image_name(name: str) -> str:
    """:raises InvalidInput: if Azure would refuse ``name`` as a managed image name."""
    return IMAGE_NAME.check(name)


def _new_job_id(ctx: EngineContext, now: float) -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime(now)) + "-" + ctx.random_suffix()


def _image_name_for(ctx: EngineContext, image: str, target: Target) -> str:
    name = ctx.config.naming.image_template.format(
        image=image, region=target.region, subscription=target.subscription, target=target.name
    )
    return validate_image_name(name)


async def submit_job(
    ctx: EngineContext,
    path: Path,
    image_name: str,
    os_type: OsType,
    description: str = "",
    *,
    convert: bool = True,
    hyper_v_generation: HyperVGeneration | None = None,
    publish: Sequence[str] | None = None,
    version: str | None = None,
) -> Job:
    """Validate the input, convert the image if needed, and register the job with all its items;
    nothing is uploaded yet.

    The job publishes to ``publish`` ("images", "gallery"; default ``[publish] to``); a gallery
    version is named ``version``, else the next patch after the highest existing.

    The images' Hyper-V generation is ``hyper_v_generation``, else ``[azure]
    hyper_v_generation``, else what the disk's partition table calls for (V2 for a disk that
    boots only with UEFI, V1 otherwise).

    :raises InvalidInput: if the file, the image name or a derived image name is invalid, the
        image needs converting and ``convert`` is false, or V1 is asked for a disk that boots
        only with UEFI; no job is registered then.
    """
    # The converters (and qemu-img's helpers) load with the first submission, not with every
    # command that reads a job's status.
    from .._vhd import converted_path, prepare_image

    names = _image_names(ctx, image_name)
    # Checked before anything is written where we read the format ourselves; a format read
    # only once converted is checked on its conversion, which goes if it is refused.
    firmware = await asyncio.to_thread(disk_firmware, path)
    if firmware is not None:
        generation = _generation(ctx, hyper_v_generation, firmware, image_name, publish)
    work_dir = ctx.config.work_dir()
    conversion_existed = converted_path(path, work_dir).exists()
    prepared = await asyncio.to_thread(prepare_image, path, work_dir, convert=convert)
    if firmware is None:
        try:
            converted = await asyncio.to_thread(disk_firmware, prepared.path)
            firmware = converted or Firmware.UNKNOWN
            generation = _generation(ctx, hyper_v_generation, firmware, image_name, publish)
        except InvalidInput:
            if prepared.converted_from is not None and not conversion_existed:
                prepared.path.unlink(missing_ok=True)
            raise
    try:
        where = await resolve_destinations(
            ctx, image_name, os_type, generation.value, publish, version
        )
    except InvalidInput:
        if prepared.converted_from is not None and not conversion_existed:
            prepared.path.unlink(missing_ok=True)
        raise
    now = ctx.backend.clock.now()
    job = Job(
        _new_job_id(ctx, now),
        image_name,
        os_type,
        str(prepared.path.resolve()),
        prepared.size,
        now,
        description,
        input_path=str(path.resolve()) if prepared.converted_from is not None else "",
        hyper_v_generation=generation,
        publish=where.publish,
        gallery_version=where.gallery_version,
    )
    note = None
    if prepared.converted_from is not None:
        note = (
            f"converted {str(prepared.converted_from)!r} to a fixed VHD of {job.size_bytes} bytes"
        )
    return await _register(ctx, job, names, note)


def _generation(
    ctx: EngineContext,
    asked: HyperVGeneration | None,
    firmware: Firmware,
    image_name: str,
    publish: Sequence[str] | None,
) -> HyperVGeneration:
    """The job's generation: asked, else the config's, else its gallery definition's (when it
    publishes to one), else what the disk's firmware calls for."""
    default = ctx.config.azure.hyper_v_generation or _definition_generation(
        ctx, image_name, publish
    )
    chosen = asked or (HyperVGeneration(default) if default else None)
    if chosen is None:
        return HyperVGeneration.V2 if firmware is Firmware.UEFI else HyperVGeneration.V1
    if firmware.refuses(chosen):
        raise InvalidInput(
            "The disk boots only with UEFI (a GPT disk with an EFI system partition and no BIOS"
            " boot partition), so no VM would boot from a V1 image of it; submit it with"
            ' --hyper-v-generation V2 (or set [azure] hyper_v_generation = "V2").'
        )
    return chosen


def _definition_generation(
    ctx: EngineContext, image_name: str, publish: Sequence[str] | None
) -> str | None:
    gallery = ctx.config.gallery
    if gallery is None or "gallery" not in (publish or ctx.config.publish.to):
        return None
    definition = gallery.definitions.get(image_name)
    return definition.hyper_v_generation if definition is not None else None


async def submit_disk_job(
    ctx: EngineContext,
    disk_id: str,
    image_name: str,
    os_type: OsType,
    description: str = "",
    *,
    hyper_v_generation: HyperVGeneration | None = None,
    publish: Sequence[str] | None = None,
    version: str | None = None,
) -> Job:
    """Register a job whose golden image is an Azure managed disk; a worker copies it. Its
    images are made as ``hyper_v_generation``, else ``[azure] hyper_v_generation``, else V1;
    ``publish`` and ``version`` as for :func:`submit_job`.

    :raises InvalidInput: if the disk id or an image name is invalid, or there is no such disk.
    """
    names = _image_names(ctx, image_name)
    check_disk_id(disk_id)
    try:
        size = await ctx.backend.images.disk_size(disk_id) + VHD_FOOTER
    except NotFound as exc:
        raise InvalidInput(f"{exc} Check the disk's resource id and your access to it.") from None
    default = ctx.config.azure.hyper_v_generation or _definition_generation(
        ctx, image_name, publish
    )
    generation = hyper_v_generation or HyperVGeneration(default or "V1")
    where = await resolve_destinations(ctx, image_name, os_type, generation.value, publish, version)
    now = ctx.backend.clock.now()
    job = Job(
        _new_job_id(ctx, now),
        image_name,
        os_type,
        "",
        size,
        now,
        description,
        source_disk=disk_id,
        hyper_v_generation=generation,
        publish=where.publish,
        gallery_version=where.gallery_version,
    )
    return await _register(ctx, job, names, f"the image comes from managed disk {disk_id}")


def _region_clones(ctx: EngineContext, job: Job, fleet: list[Target]) -> list[SourceRow]:
    """Clone sources for each region: in the account of one designated target (the first by
    name), made from its copy once it lands, so the rest of the region copies in one round."""
    by_region: dict[str, list[Target]] = {}
    for target in fleet:
        by_region.setdefault(target.region, []).append(target)
    rows = []
    for region, members in sorted(by_region.items()):
        seed = min(members, key=lambda t: t.name)
        for i in range(1, ctx.config.fanout.region_clone_count(len(members)) + 1):
            name = clone_name(region, i)
            # Under sources/: no image name holds a '/', so no target's blob can be this one.
            blob = BlobRef(seed.account, seed.container, f"jobs/{job.id}/sources/{name}.vhd")
            # Its parent from the start: the designated seed (the fan-out seeds it first).
            parent = f"target:{seed.name}"
            rows.append(SourceRow(job.id, name, SourceKind.CLONE, blob, parent_id=parent))
    return rows


def _image_names(ctx: EngineContext, image_name: str) -> dict[str, str]:
    validate_image_name(image_name)
    # Two targets never share an image: the config refuses a template that would do that.
    return {t.name: _image_name_for(ctx, image_name, t) for t in ctx.config.fleet_targets()}


async def _register(ctx: EngineContext, job: Job, names: dict[str, str], note: str | None) -> Job:
    """Create the job's sources and targets (disabled targets skipped) in one go."""
    enabled = await target_enablement(ctx)
    fleet = ctx.config.fleet_targets()
    staging = ctx.config.staging
    prefix = f"jobs/{job.id}"

    def staged(name: str) -> BlobRef:
        # The upload is named after the image; the other sources live under sources/, a name
        # no image can take (an image named "tier1-001" must not be its own tier-1 copy).
        return BlobRef(staging.account, staging.container, f"{prefix}/{name}.vhd")

    images = "images" in job.publish
    sources = [SourceRow(job.id, "tier0", SourceKind.TIER0, staged(job.image_name))]
    tier1 = ctx.config.fanout.tier1_count(len({t.region for t in fleet})) if images else 0
    sources += [
        SourceRow(job.id, f"tier1-{i:03d}", SourceKind.TIER1, staged(f"sources/tier1-{i:03d}"))
        for i in range(1, tier1 + 1)
    ]
    if images:
        sources += _region_clones(ctx, job, [t for t in fleet if enabled.get(t.name, True)])
    targets = [
        TargetRow(
            job_id=job.id,
            target=t.name,
            subscription=t.subscription,
            region=t.region,
            blob=BlobRef(t.account, t.container, f"{prefix}/{job.image_name}.vhd"),
            resource_group=t.resource_group,
            image_name=names[t.name],
            state=TargetState.PENDING if enabled.get(t.name, True) else TargetState.SKIPPED,
            updated_at=job.created_at,
        )
        for t in fleet
        if images
    ]
    regions: dict[str, list[str]] = {}
    for t in fleet:
        if enabled.get(t.name, True):
            regions.setdefault(t.subscription, []).append(t.region)
    publications = plan_publications(ctx.config, job, regions)
    await ctx.backend.state.create_job(job, sources, targets, publications)
    if note:
        await ctx.log(job.id, LogLevel.INFO, Step.SUBMIT, note)
    skipped = sum(1 for t in targets if t.state is TargetState.SKIPPED)
    gallery = f"version {job.gallery_version} in gallery" if publications else ""
    where = f"{len(targets) - skipped} targets" if images else ""
    await ctx.log(
        job.id,
        LogLevel.INFO,
        Step.SUBMIT,
        f"job submitted: {job.image_name} ({job.size_bytes} bytes) to"
        f" {' and '.join(w for w in (where, gallery) if w)}"
        + (f", {skipped} disabled and skipped" if skipped else ""),
    )
    return job


async def retry_job(
    ctx: EngineContext,
    job_id: str,
    *,
    failed_only: bool = False,
    targets: Sequence[str] = (),
    phase: FailedPhase | None = None,
) -> list[str]:
    """Put unfinished targets back to work; finished ones are never touched.

    By default every failed target resumes in the phase it failed in and every skipped target
    that is now enabled starts; ``failed_only`` leaves skipped ones alone; ``phase`` forces where
    failed targets restart (``copy`` copies again, ``image`` only recreates the image). A target
    whose blob is gone (cleaned up) copies again whatever the phase: an image needs its blob.

    :return: the names of the targets put back to work.
    :raises InvalidInput: on an unknown job or target name.
    """
    job = await get_job(ctx.backend.state, job_id)
    state = ctx.backend.state
    rows = await state.list_targets(job.id)
    _check_names(targets, rows)
    enabled = await target_enablement(ctx)
    planned = [
        (row, new_state)
        for row in rows
        if not targets or row.target in targets
        if (new_state := _retry_state(row, failed_only, phase, enabled.get(row.target, True)))
    ]
    versions = await _retried_publications(ctx, job, enabled, failed_only, targets, phase)
    if not planned and not versions:
        publications = await state.list_publications(job.id) if "gallery" in job.publish else []
        if _work_left(job, rows, publications):
            await _reactivate(ctx, job)  # an earlier retry stopped half-way: finish its work
        return []
    # Active (with a new revision) before the first row changes and again after the last: a
    # worker that looked at the rows in between cannot record an outcome over this retry, and
    # a retry that stops half-way (an error, a kill) leaves an active job, never work unowned.
    await _reactivate(ctx, job)
    reset: list[str] = []
    try:
        if any(new_state is TargetState.PENDING for _, new_state in planned):
            await _revive_failed_sources(ctx, job)  # before the targets wait on them
        for row, new_state in planned:
            await _put_back(ctx, row, new_state)
            reset.append(row.target)
        if any(v.state is PublicationState.PENDING for v in versions):
            await _revive_failed_sources(ctx, job)  # a version to make needs the upload
        for version in versions:
            await state.put_publication(version)
            reset.append(f"gallery/{version.key}")
    finally:
        await _reactivate(ctx, job)
    await ctx.log(job.id, LogLevel.INFO, Step.JOB, f"retry: {len(reset)} targets put back to work")
    return reset


async def _put_back(ctx: EngineContext, row: TargetRow, new_state: TargetState) -> None:
    if new_state is TargetState.COPIED and not await _blob_present(ctx, row):
        new_state = TargetState.PENDING
        row = dataclasses.replace(row, blob_deleted=True)
    await ctx.backend.state.put_target(
        dataclasses.replace(
            row,
            state=new_state,
            failed_phase=None,
            error="",
            lease_owner=None,
            lease_until=0.0,
            source_id=None if new_state is TargetState.PENDING else row.source_id,
        )
    )


def _work_left(
    job: Job, rows: list[TargetRow], publications: Sequence[PublicationRow] = ()
) -> bool:
    return job.state is not JobState.ACTIVE and (
        any(row.state in ACTIVE_TARGET_STATES for row in rows)
        or any(p.state in PUBLICATION_ACTIVE_STATES for p in publications)
    )


async def _retried_publications(
    ctx: EngineContext,
    job: Job,
    enabled: dict[str, bool],
    failed_only: bool,
    targets: Sequence[str],
    phase: FailedPhase | None,
) -> list[PublicationRow]:
    """The job's gallery versions a retry puts back (none when it names targets or a phase:
    those are the managed images')."""
    if "gallery" not in job.publish or targets or phase is not None:
        return []
    rows = await ctx.backend.state.list_publications(job.id)
    retried = [
        retried_publication(row, wanted_regions(ctx.config, row, enabled), failed_only=failed_only)
        for row in rows
    ]
    return [row for row in retried if row is not None]


async def _reactivate(ctx: EngineContext, job: Job) -> None:
    for _attempt in range(3):
        current = await ctx.backend.state.get_job(job.id)
        active = dataclasses.replace(
            current, state=JobState.ACTIVE, finished_at=None, revision=current.revision + 1
        )
        try:
            await ctx.backend.state.update_job(active, expected_revision=current.revision)
            return
        except PreconditionFailed:
            continue  # another retry at the same moment: read the revision again
    raise PreconditionFailed(f"Job {job.id!r} kept changing; run the retry again.")


async def _blob_present(ctx: EngineContext, row: TargetRow) -> bool:
    """Whether the target's copy still exists, complete, to make an image from."""
    if row.blob_deleted:
        return False
    try:
        props = await ctx.backend.blobs.get_properties(row.blob)
    except NotFound:
        return False
    return props.copy_status in (CopyStatus.SUCCESS, CopyStatus.NONE)


def _check_names(names: Sequence[str], rows: list[TargetRow]) -> None:
    known = {row.target for row in rows}
    for name in names:
        if name not in known:
            raise InvalidInput(
                f"Target {name!r} is not part of this job; `imagedist status JOB` lists them."
            )


def _retry_state(
    row: TargetRow, failed_only: bool, phase: FailedPhase | None, enabled: bool
) -> TargetState | None:
    if row.state is TargetState.SKIPPED:
        return TargetState.PENDING if enabled and not failed_only and phase is None else None
    if row.state is not TargetState.FAILED:
        return None
    restart = phase or row.failed_phase or FailedPhase.COPY
    if restart is FailedPhase.IMAGE and row.failed_phase is FailedPhase.COPY:
        return None  # there is no verified copy to make an image from
    return TargetState.COPIED if restart is FailedPhase.IMAGE else TargetState.PENDING


async def _revive_failed_sources(ctx: EngineContext, job: Job) -> None:
    """Targets about to copy again may need the upload: a failed one is tried again (the user
    retries after fixing its cause). Deleted ones are the worker's to bring back, only when
    no other copy of the disk is left to copy from."""
    state = ctx.backend.state
    for row in await state.list_sources(job.id):
        if row.state is SourceState.FAILED:
            await state.put_source(revive_source(row))


async def cleanup_job(ctx: EngineContext, job_id: str, *, force: bool = False) -> int:
    """Delete every intermediate blob of the job now; returns how many were deleted.

    Refuses while a copy or an image creation is in flight, and, unless ``force``, while an
    enabled target is not done (it still needs a blob). With ``force`` the unfinished targets
    fail with a reason saying how to bring them back, and every deletion is recorded on its row,
    so a later ``retry`` copies (and if need be uploads) again instead of waiting on a blob that
    is gone.

    :raises InvalidInput: if there is no such job, something is in flight, or (without
        ``force``) an enabled target is not done.
    """
    job = await get_job(ctx.backend.state, job_id)
    state = ctx.backend.state
    targets = await state.list_targets(job.id)
    sources = await state.list_sources(job.id)
    _refuse_in_flight(job, sources, targets)
    enabled = await target_enablement(ctx)
    unfinished = [
        t for t in targets if t.state in NEEDS_BLOB_STATES and enabled.get(t.target, True)
    ]
    if unfinished and not force:
        raise InvalidInput(
            f"Job {job.id!r} still needs its blobs: {_some(unfinished)} not done; let"
            " `imagedist worker` finish (`imagedist retry` for failed ones), or add --force to"
            " delete them anyway."
        )
    try:
        await _fail_for_cleanup(ctx, job, unfinished)
        dropped = await drop_sources(ctx, job, sources)
        dropped += await drop_every_target_blob(ctx, await state.list_targets(job.id))
    except PreconditionFailed:
        raise InvalidInput(
            f"A worker changed job {job.id!r} while it was being cleaned up; run the cleanup again."
        ) from None
    await ctx.log(job.id, LogLevel.INFO, Step.CLEANUP, f"manual cleanup deleted {dropped} blobs")
    return dropped


def _refuse_in_flight(job: Job, sources: list[SourceRow], targets: list[TargetRow]) -> None:
    busy = [t.target for t in targets if t.state in IN_FLIGHT_TARGET_STATES]
    busy += [s.source_id for s in sources if s.state in IN_FLIGHT_SOURCE_STATES and not s.deleted]
    if busy:
        raise InvalidInput(
            f"Job {job.id!r} has copies or image creations in flight ({', '.join(busy[:5])}"
            f"{', ...' if len(busy) > 5 else ''}); let `imagedist worker` finish them, then"
            " clean up."
        )


def _some(rows: list[TargetRow]) -> str:
    names = ", ".join(row.target for row in rows[:5]) + (", ..." if len(rows) > 5 else "")
    return f"{len(rows)} target{'s are' if len(rows) > 1 else ' is'} ({names})"


async def _fail_for_cleanup(ctx: EngineContext, job: Job, unfinished: list[TargetRow]) -> None:
    reason = (
        "`imagedist cleanup --force` deleted the blobs it needed; `imagedist retry` copies it again"
    )
    for row in unfinished:
        if row.state is TargetState.FAILED:
            continue  # it keeps its own reason; its blob is recorded as gone below
        await ctx.backend.state.put_target(
            dataclasses.replace(
                row,
                state=TargetState.FAILED,
                failed_phase=FailedPhase.COPY,
                error=reason,
                lease_owner=None,
                lease_until=0.0,
            )
        )
        await ctx.log(job.id, LogLevel.ERROR, Step.CLEANUP, reason, target=row.target)


def select_targets(
    fleet: list[Target],
    *,
    regions: Sequence[str] = (),
    subscriptions: Sequence[str] = (),
    names: Sequence[str] = (),
) -> list[str]:
    """Names of the fleet targets matching any of the given regions, subscriptions or names.

    :raises InvalidInput: if nothing was given, or a value matches no target.
    """
    if not (regions or subscriptions or names):
        raise InvalidInput("Say which targets: give --region, --subscription or --name.")
    chosen: list[str] = []
    for attr, values in (("region", regions), ("subscription", subscriptions), ("name", names)):
        for value in values:
            matched = [t.name for t in fleet if getattr(t, attr) == value]
            if not matched:
                raise InvalidInput(
                    f"No target has {attr} {value!r}; `imagedist targets list` shows the fleet."
                )
            chosen += [name for name in matched if name not in chosen]
    return chosen
