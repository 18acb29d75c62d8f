"""One target's pipeline: copy its blob, create its image, drop its blob.

Every transition is persisted *before* the effect it announces (intent first), and every effect is
checked against the platform on resume, so a worker killed at any instant neither loses the target
nor repeats an effect: a pending copy is adopted, an image already being created is polled.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib

from .._domain import (
    BlobRef,
    FailedPhase,
    Job,
    SourceKind,
    SourceRow,
    SourceState,
    TargetRow,
    TargetState,
)
from .._domain.events import COPIED_BY_COPY_BLOB, COPIED_BY_RANGES, EventKind, LogLevel, Step
from .._domain.regions import region_name
from .._exceptions import Conflict, NotFound, OperationFailed
from ..abc import (
    RANGED_COPY_UNSUPPORTED,
    BlobProperties,
    CopyStatus,
    Image,
    ImageSpec,
    ProvisioningState,
)
from ._context import EngineContext
from ._ranged import ParentStalled, copy_ranged
from ._rows import RANGED_COPY_ID
from ._verify import copy_problem

__all__ = ["JOB_TAG", "TargetDriver", "staging_name"]

JOB_TAG = "imagedist-job"
MAX_IMAGE_NAME = 80
#: A row we wrote with more of its lease left than this share is still ours: a claim of it
#: writes nothing (no other worker takes a row whose lease has not run out).
CLAIM_FRESH = 0.9


def staging_name(image_name: str, target: str) -> str:
    """Where target ``target``'s replacement image is built first.

    Unique per target, so two targets whose image names share a long prefix never build into
    (or delete) each other's, and still a valid Azure image name (at most 80 characters, ending
    in a letter or digit).
    """
    suffix = f".next-{hashlib.sha256(target.encode()).hexdigest()[:8]}"
    return image_name[: MAX_IMAGE_NAME - len(suffix)] + suffix


class TargetDriver:
    """Moves one leased target row forward, one persisted step at a time."""

    def __init__(
        self, ctx: EngineContext, job: Job, *, disk_md5: str = "", origin: BlobRef | None = None
    ) -> None:
        self.ctx = ctx
        self.job = job
        self.disk_md5 = disk_md5  # hex MD5 of the upload, which every copy must carry; "" if none
        # The upload, which holds every range: a copy from a copy still being made (pipelined)
        # plans its ranges from it, and follows the parent for the ranges it already holds.
        self.origin = origin
        # Images looked at an instant ago by begin_image (lower-case name -> image or None), for
        # the look that follows at once: taken once, then forgotten (issue 13: 4 of 5 GETs of a
        # fresh target were these looks, asked twice).
        self._just_seen: dict[str, Image | None] = {}
        # The staging name was free when this driver made the image under the target name
        # itself: no replacement of ours can be there to drop once it succeeded.
        self._made_directly = False

    async def put(self, row: TargetRow) -> TargetRow:
        """Persist the row (changed with :func:`dataclasses.replace`, so mypy checks the
        fields), renewing our lease; raises PreconditionFailed if we lost the row."""
        now = self.ctx.backend.clock.now()
        new = dataclasses.replace(row, lease_until=self.ctx.lease_until(), updated_at=now)
        return await self.ctx.backend.state.put_target(new)

    async def claim(self, row: TargetRow) -> TargetRow:
        """Right before an effect on the platform: a compare-and-set write that proves we still
        hold the target (raising PreconditionFailed if another worker took it while we waited
        for a slot or backed off) and gives us a whole lease to make the effect in.

        A row this worker wrote an instant ago (nearly its whole lease left) is held already,
        and the lease is whole: the write would prove nothing (one state write per target less).
        """
        left = row.lease_until - self.ctx.backend.clock.now()
        if (
            row.lease_owner == self.ctx.worker_id
            and left > CLAIM_FRESH * self.ctx.settings.lease_seconds
        ):
            return row
        return await self.put(row)

    async def keep(self, row: TargetRow) -> TargetRow:
        """Nothing changed: renew the lease only once half of it is gone (fewer writes)."""
        return row if self._lease_fresh(row) else await self.put(row)

    def _lease_fresh(self, row: TargetRow) -> bool:
        left = row.lease_until - self.ctx.backend.clock.now()
        return left > self.ctx.settings.lease_seconds / 2

    async def fail(self, row: TargetRow, phase: FailedPhase, reason: str) -> TargetRow:
        await self.ctx.log(self.job.id, LogLevel.ERROR, Step(phase.value), reason, row.target)
        self.ctx.emit(self.job.id, EventKind.FAILED, target=row.target, detail=reason)
        # The lease goes with the outcome: one write, not two.
        failed = dataclasses.replace(
            row, state=TargetState.FAILED, failed_phase=phase, error=reason, lease_owner=None
        )
        return await self.put(failed)

    # copy

    async def begin_copy(self, row: TargetRow, source: SourceRow) -> TargetRow:
        """PENDING -> COPYING: record the intent and the source, then start the copy."""
        intent = dataclasses.replace(
            row,
            state=TargetState.COPYING,
            source_id=source.source_id,
            copy_id="",
            attempts=row.attempts + 1,
            error="",
            failed_phase=None,
            blob_deleted=False,  # the copy makes the blob anew
        )
        row = await self.put(intent)
        await self.ctx.log(
            self.job.id,
            LogLevel.INFO,
            Step.COPY,
            f"copy started from {source.source_id}",
            row.target,
        )
        self.ctx.emit(
            self.job.id, EventKind.COPY_STARTED, target=row.target, source=source.source_id
        )
        return await self._start_copy(row, source)

    async def _start_copy(self, row: TargetRow, source: SourceRow) -> TargetRow:
        blobs = self.ctx.backend.blobs
        if _pipelined(source) and not (
            ranged_copies_possible(self.ctx) and self.ctx.ranged_slot_free()
        ):
            # A copy still being made can be followed by ranges only, which this store turned
            # out not to copy (Azurite answers 501), or which this worker has no room for now:
            # wait for a whole source instead.
            return await self.put(_wait_for_source(row))
        if self._ranged(source, row):
            self.ctx.ranged_running += 1  # taken now: the copy's first await lets others in
            return await self._ranged_copy(row, source, fresh=True)
        try:
            copy_id = await self._copy_into_container(source, row)
        except Conflict:
            # A copy into this blob is already pending: ours, started just before a crash.
            copy_id = (await blobs.get_properties(row.blob)).copy_id
        # Stored at once: a worker that resumes the target knows the copy by its id even once
        # its source is gone (adoption by source needs the source).
        return await self.put(dataclasses.replace(row, copy_id=copy_id))

    async def _copy_into_container(self, source: SourceRow, row: TargetRow) -> str:
        """Start the copy; the container is made only if it is missing. Setup made it, so a
        container write before every copy would be one wasted request per target."""
        blobs = self.ctx.backend.blobs
        try:
            return await blobs.start_copy(source.blob, row.blob)
        except NotFound:
            # No container (or no source: then the second try says so again, as before).
            await blobs.ensure_container(row.blob.account, row.blob.container)
            return await blobs.start_copy(source.blob, row.blob)

    async def poll_copy(self, row: TargetRow, source: SourceRow | None) -> TargetRow:
        """COPYING: one look at the copy; returns the row, moved on if the copy ended."""
        if row.copy_id == RANGED_COPY_ID:
            # A ranged copy a worker left part-way: resume it, copying only what is missing.
            if source is None:
                return await self.put(_wait_for_source(row))
            self.ctx.ranged_running += 1  # a ranged copy under way goes on by ranges
            return await self._ranged_copy(row, source, fresh=False, claim=True)
        try:
            props = await self.ctx.backend.blobs.get_properties(row.blob)
        except NotFound:
            props = None
        if props is None or not self._is_ours(row, props, source):
            return await self._restart_copy(row, source)
        if row.copy_id != props.copy_id:
            row = await self.put(dataclasses.replace(row, copy_id=props.copy_id))
        if props.copy_status is CopyStatus.PENDING:
            return await self.keep(row)  # still copying
        if props.copy_status is CopyStatus.SUCCESS:
            return await self._verify_copy(row, props)
        reason = props.copy_error or f"copy ended {props.copy_status.value}"
        return await self.fail(row, FailedPhase.COPY, f"copy from {row.source_id} failed: {reason}")

    async def _verify_copy(self, row: TargetRow, props: BlobProperties) -> TargetRow:
        """A finished copy counts only once it is the disk: its size, and the upload's MD5 it
        carries (or, when there is none, a valid footer for its size)."""
        footer = None
        if not self.disk_md5 and props.size >= 512:
            footer = await self.ctx.backend.blobs.read(row.blob, props.size - 512, 512)
        problem = copy_problem(props, self.job.size_bytes, self.disk_md5, footer)
        if problem:
            return await self.fail(
                row,
                FailedPhase.COPY,
                f"the copy from {row.source_id} is not the disk: {problem};"
                " `imagedist retry` copies it again",
            )
        await self.ctx.log(self.job.id, LogLevel.INFO, Step.COPY, "copy verified", row.target)
        # The detail names the method that moved it (the plan's critical path tells them).
        method = COPIED_BY_RANGES if row.copy_id == RANGED_COPY_ID else COPIED_BY_COPY_BLOB
        self.ctx.emit(self.job.id, EventKind.COPY_VERIFIED, target=row.target, detail=method)
        return await self.put(dataclasses.replace(row, state=TargetState.COPIED))

    def _is_ours(self, row: TargetRow, props: BlobProperties, source: SourceRow | None) -> bool:
        if row.copy_id:
            return props.copy_id == row.copy_id
        # Crashed between recording the intent and the copy id: adopt a copy of our source only.
        return (
            source is not None
            and props.copy_source == str(source.blob)
            and (props.copy_status in (CopyStatus.PENDING, CopyStatus.SUCCESS))
        )

    async def _restart_copy(self, row: TargetRow, source: SourceRow | None) -> TargetRow:
        if source is None:
            # Our source is gone (cleaned up or failed): wait for a new one.
            return await self.put(_wait_for_source(row))
        return await self._start_copy(await self.claim(row), source)

    # ranged copy (issue 13)

    def _ranged(self, source: SourceRow, row: TargetRow) -> bool:
        """Whether this copy moves by ranges: as configured, or on "auto" across accounts where
        the blob store says ranges are faster (a same-account copy is a metadata clone)."""
        if _pipelined(source):
            return True  # only ranges can be read from a blob still being written
        method = self.ctx.settings.copy_method
        if method != "auto":
            return method == "ranged"
        return (
            source.blob.account != row.blob.account
            and ranged_copies_possible(self.ctx)
            and self.ctx.ranged_slot_free()
        )

    async def _ranged_copy(
        self, row: TargetRow, source: SourceRow, *, fresh: bool, claim: bool = False
    ) -> TargetRow:
        """Copy by ranges in one of this worker's ranged-copy slots, taken by the caller and
        given back here whatever happens."""
        try:
            if claim:
                row = await self.claim(row)
            if fresh:
                # Its first write creates the blob: the container must exist (one request
                # beside a ranged copy's thousands).
                blobs = self.ctx.backend.blobs
                await blobs.ensure_container(row.blob.account, row.blob.container)
            return await self._ranged_copy_in_slot(row, source, fresh=fresh)
        finally:
            self.ctx.ranged_running -= 1

    async def _ranged_copy_in_slot(
        self, row: TargetRow, source: SourceRow, *, fresh: bool
    ) -> TargetRow:
        """Copy by ranges inside this task, holding the target's lease (renewed as ranges land,
        so no other worker copies into the blob meanwhile), then verify it like any copy."""
        row = await self.put(dataclasses.replace(row, copy_id=RANGED_COPY_ID))
        renewing = asyncio.Lock()
        current = row

        async def renew() -> None:
            nonlocal current
            if self._lease_fresh(current):
                return  # the common case, after most ranges: no lock to take
            async with renewing:  # ranges land together: one renewal at a time
                current = await self.keep(current)

        blobs = self.ctx.backend.blobs
        following = _pipelined(source) and self.origin is not None
        try:
            report = await copy_ranged(
                blobs,
                source.blob,
                row.blob,
                clock=self.ctx.backend.clock,
                account_rate=self.ctx.range_rate(row.blob.account),
                keep_alive=renew,
                fresh=fresh,
                origin=self.origin if following else None,
                stall_seconds=max(60.0, 2 * self.ctx.settings.lease_seconds),
            )
        except ParentStalled as exc:
            # The parent's copier failed or died: wait for a source that is whole or moving.
            await self.ctx.log(
                self.job.id, LogLevel.WARNING, Step.COPY, f"{exc}; copying again", row.target
            )
            return await self.put(_wait_for_source(current))
        except OperationFailed as exc:
            if exc.code != RANGED_COPY_UNSUPPORTED or self.ctx.settings.copy_method == "ranged":
                raise
            # "auto" on a service without Put Page From URL (Azurite): Copy Blob from now on.
            self.ctx.ranged_unsupported = True
            return await self._start_copy(dataclasses.replace(current, copy_id=""), source)
        row = current
        await self.ctx.log(
            self.job.id,
            LogLevel.INFO,
            Step.COPY,
            f"copied by ranges from {source.source_id}: {report.ranges} ranges of data,"
            f" {report.already} already there, {report.calls} calls, {report.busy} answered busy",
            row.target,
        )
        return await self._verify_copy(row, await blobs.get_properties(row.blob))

    # image

    def spec(self, row: TargetRow, name: str) -> ImageSpec:
        return ImageSpec(
            subscription=row.subscription,
            resource_group=row.resource_group,
            name=name,
            region=row.region,
            source_blob=row.blob,
            os_type=self.job.os_type,
            hyper_v_generation=self.job.hyper_v_generation.value,
            tags={JOB_TAG: self.job.id},
        )

    async def begin_image(self, row: TargetRow) -> TargetRow:
        """COPIED -> IMAGING: record the intent, then look before creating anything.

        A failed image of this job found now is an earlier attempt's (a retry brought the
        target back here): it is cleared so this attempt starts clean.
        """
        if row.blob_deleted:
            # Its copy was cleaned up since: an image needs it, so copy again.
            return await self.put(_wait_for_source(row))
        row = await self.put(
            dataclasses.replace(row, state=TargetState.IMAGING, error="", failed_phase=None)
        )
        names = (row.image_name, staging_name(row.image_name, row.target))
        # Asked together: an adapter may answer both with one listing of the resource group.
        looks = await asyncio.gather(*(self._get(row, name) for name in names))
        seen: dict[str, Image | None] = {}
        for name, stale in zip(names, looks, strict=True):
            seen[name.lower()] = stale
            if stale is not None and self._is_own(row, stale) and stale.provisioning_state.unusable:
                row = await self._delete(row, name)
                del seen[name.lower()]  # gone, or going: look again
        self._just_seen = seen
        try:
            return await self.poll_image(row)
        finally:
            self._just_seen = {}

    async def poll_image(self, row: TargetRow) -> TargetRow:
        """IMAGING: one look at the platform, and the one next effect it calls for.

        Every decision is taken from what exists, so a restart at any point repeats nothing.
        An image of an earlier job under the target name is replaced safely: ours is first
        made under a staging name, the old one is deleted only once that one succeeded, then
        ours is made under the target name and the staging one dropped.
        """
        final = await self._get(row, row.image_name)
        if final is None:
            return await self._create_unless_superseded(row)
        if final.provisioning_state.changing:
            return await self._wait_while_changing(row, final)
        if final.tags.get(JOB_TAG) == self.job.id:
            if not self._is_own(row, final):
                return await self._not_ours(row, final)
            return await self._follow_own(row, final)
        if await self._is_newer(final.tags.get(JOB_TAG, "")):
            return await self._superseded(row, final)
        return await self._replace(row, final)

    async def _create_unless_superseded(self, row: TargetRow) -> TargetRow:
        """No image under the name: create ours, unless a newer job's replacement is half-way
        (it deleted the old image and is about to create its own: ours would take its name)."""
        staging = await self._get(row, staging_name(row.image_name, row.target))
        if staging is not None and await self._is_newer(staging.tags.get(JOB_TAG, "")):
            return await self._superseded(row, staging)
        row = await self._create(row, row.image_name)
        self._made_directly = staging is None and row.state is TargetState.IMAGING
        return row

    async def _is_newer(self, other_id: str) -> bool:
        """Whether job ``other_id`` was submitted after ours (an unknown one counts as older:
        an image from before imagedist, or from a job since deleted)."""
        if not other_id:
            return False
        try:
            other = await self.ctx.backend.state.get_job(other_id)
        except NotFound:
            return False
        return (other.created_at, other.id) > (self.job.created_at, self.job.id)

    async def _superseded(self, row: TargetRow, newer: Image) -> TargetRow:
        """A newer job's image holds the name: ours must never replace it (two jobs of one
        image running at once would otherwise end with the older one's). Our staging image,
        if any, goes once it has settled."""
        staging = await self._get(row, staging_name(row.image_name, row.target))
        if staging is not None and self._is_own(row, staging):
            if staging.provisioning_state.changing:
                return await self._wait_while_changing(row, staging)
            if staging.provisioning_state is ProvisioningState.CREATING:
                return await self.keep(row)
            final = await self._get(row, row.image_name)
            if final is None or final.provisioning_state is not ProvisioningState.SUCCEEDED:
                # Ours may be the only usable image there is: it stays until the newer one is.
                return await self.keep(row)
            row = await self._delete(row, staging.name)
        return await self.fail(
            row,
            FailedPhase.IMAGE,
            f"job {newer.tags.get(JOB_TAG)!r}, submitted after this one, holds or is replacing"
            f" image {row.image_name!r}; a job never replaces a newer job's image, so there is"
            " nothing to retry here",
        )

    def _is_own(self, row: TargetRow, image: Image) -> bool:
        """Whether ``image`` is this target's: made by this job from this target's own blob, in
        its subscription and region (a job tag alone could be another target's image)."""
        return (
            image.tags.get(JOB_TAG) == self.job.id
            and image.source_blob == row.blob
            and image.subscription.lower() == row.subscription.lower()
            and region_name(image.region) == region_name(row.region)
        )

    async def _not_ours(self, row: TargetRow, image: Image) -> TargetRow:
        return await self.fail(
            row,
            FailedPhase.IMAGE,
            f"image {image.name!r} in resource group {row.resource_group!r} was made by this job"
            f" from blob {str(image.source_blob)!r}, not from this target's: two targets get the"
            " same image name; make [naming] image_template unique per target (add {region})",
        )

    async def _get(self, row: TargetRow, name: str) -> Image | None:
        if name.lower() in self._just_seen:
            image = self._just_seen.pop(name.lower())
        else:
            image = await self._look(row, name)
        if image is None or not image.provisioning_state.changing:
            self._forget_waits(row, name)
        return image

    async def _look(self, row: TargetRow, name: str) -> Image | None:
        try:
            image = await self.ctx.backend.images.get_image(
                row.subscription, row.resource_group, name
            )
        except NotFound:
            return None
        return image

    def _wait_key(self, row: TargetRow, name: str, state: str) -> tuple[str, str, str, str]:
        return (row.subscription.lower(), row.resource_group.lower(), name.lower(), state.lower())

    def _forget_waits(self, row: TargetRow, name: str) -> None:
        waits = self.ctx.image_waits
        for key in [k for k in waits if k[:3] == self._wait_key(row, name, "")[:3]]:
            del waits[key]

    async def _wait_while_changing(self, row: TargetRow, image: Image) -> TargetRow:
        """An image being updated or deleted by someone else (or in a state we cannot read):
        wait for it to settle or to go, never deleting it meanwhile; fail once it stayed so for
        longer than ``image_settle_seconds``."""
        state = image.provisioning_state
        now = self.ctx.backend.clock.now()
        since = self.ctx.image_waits.setdefault(self._wait_key(row, image.name, state), now)
        if now - since <= self.ctx.settings.image_settle_seconds:
            return await self.keep(row)
        self._forget_waits(row, image.name)
        # An unknown state: the adapter passes on the platform's own word for it.
        unknown = state is ProvisioningState.UNKNOWN and image.error_message
        shown = image.error_message if unknown else state.value
        return await self.fail(
            row,
            FailedPhase.IMAGE,
            f"image {image.name!r} in resource group {row.resource_group!r} stayed in state"
            f" {shown!r} for"
            f" {now - since:.0f} s; imagedist never touches an image another operation is"
            " changing: once it has settled or is gone, `imagedist retry` the job",
        )

    async def _create(self, row: TargetRow, name: str) -> TargetRow:
        images = self.ctx.backend.images
        row = await self.claim(row)
        try:
            await images.ensure_resource_group(row.subscription, row.resource_group, row.region)
            await images.begin_create_image(self.spec(row, name))
        except (OperationFailed, Conflict) as exc:
            return await self.fail(row, FailedPhase.IMAGE, f"image {name!r} refused: {exc}")
        await self.ctx.log(
            self.job.id, LogLevel.INFO, Step.IMAGE, f"creating image {name}", row.target
        )
        self.ctx.emit(self.job.id, EventKind.IMAGE_STARTED, target=row.target, detail=name)
        return row

    async def _delete(self, row: TargetRow, name: str) -> TargetRow:
        row = await self.claim(row)
        await self.ctx.backend.images.delete_image(row.subscription, row.resource_group, name)
        return row

    async def _follow_own(self, row: TargetRow, image: Image) -> TargetRow:
        if image.provisioning_state is ProvisioningState.CREATING:
            return await self.keep(row)
        if image.provisioning_state.changing:
            return await self._wait_while_changing(row, image)
        if image.provisioning_state.unusable:
            row = await self._delete(row, image.name)  # a failed image of ours replaces nothing
            outcome = (
                "failed" if image.provisioning_state is ProvisioningState.FAILED else "canceled"
            )
            return await self.fail(
                row,
                FailedPhase.IMAGE,
                f"image creation {outcome}: {image.error_code}: {image.error_message}",
            )
        staging = None
        if not self._made_directly:
            staging = await self._get(row, staging_name(row.image_name, row.target))
        if staging is not None and self._is_own(row, staging):
            if staging.provisioning_state.changing:
                # Being deleted already, or changed by someone: not ours to delete now.
                if staging.provisioning_state is not ProvisioningState.DELETING:
                    return await self._wait_while_changing(row, staging)
            else:
                row = await self._delete(row, staging.name)
        await self.ctx.log(self.job.id, LogLevel.INFO, Step.IMAGE, "image succeeded", row.target)
        self.ctx.emit(self.job.id, EventKind.IMAGE_SUCCEEDED, target=row.target)
        # The lease goes with the outcome: one write, not two.
        return await self.put(dataclasses.replace(row, state=TargetState.DONE, lease_owner=None))

    async def _replace(self, row: TargetRow, old: Image) -> TargetRow:
        name = staging_name(row.image_name, row.target)
        staging = await self._get(row, name)
        if staging is None:
            await self.ctx.log(
                self.job.id,
                LogLevel.INFO,
                Step.IMAGE,
                f"{row.image_name} holds job {old.tags.get(JOB_TAG)!r}'s image: building ours"
                f" as {name} first",
                row.target,
            )
            return await self._create(row, name)
        if not self._is_own(row, staging):
            return await self.fail(
                row,
                FailedPhase.IMAGE,
                f"image {name!r} exists and is not this target's replacement; delete it and"
                " `imagedist retry` the job",
            )
        if staging.provisioning_state is ProvisioningState.CREATING:
            return await self.keep(row)
        if staging.provisioning_state.changing:
            return await self._wait_while_changing(row, staging)
        if staging.provisioning_state.unusable:
            return await self._follow_own(row, staging)
        # Ours exists and succeeded: only now may the old image go.
        row = await self._delete(row, old.name)
        await self.ctx.log(
            self.job.id,
            LogLevel.INFO,
            Step.IMAGE,
            f"replaced the image of job {old.tags.get(JOB_TAG)!r}",
            row.target,
        )
        return await self._create(row, row.image_name)


def ranged_copies_possible(ctx: EngineContext) -> bool:
    """Whether target copies may move by ranges here (so a copy still being made by ranges may
    serve others): not with ``copy_method = "async"``, nor on a store without range copies."""
    blobs = ctx.backend.blobs
    if ctx.settings.copy_method == "async" or ctx.ranged_unsupported:
        return False
    return blobs.copy_range_bytes > 0 and (
        ctx.settings.copy_method == "ranged" or blobs.ranged_copy_faster
    )


def _pipelined(source: SourceRow) -> bool:
    """Whether ``source`` is a target's copy still being made by ranges (issue 13)."""
    return source.state is SourceState.COPYING and source.kind is SourceKind.TARGET


def _wait_for_source(row: TargetRow) -> TargetRow:
    """Back to waiting for a source: its own is gone, or its blob was cleaned up."""
    return dataclasses.replace(row, state=TargetState.PENDING, source_id=None, copy_id="")
