"""One target's pipeline: copy its blob, create its image, drop its blob.

Every transition is persisted *before* the effect it announces (intent first), and every effect is
checked against the platform on resume, so a worker killed at any instant neither loses the target
nor repeats an effect: a pending copy is adopted, an image already being created is polled.
"""

from __future__ import annotations

from .._domain import FailedPhase, Job, SourceRow, TargetRow, TargetState
from .._exceptions import Conflict, NotFound, OperationFailed
from ..abc import BlobProperties, CopyStatus, ImageSpec, ProvisioningState
from ._context import EngineContext

__all__ = ["TargetDriver"]

JOB_TAG = "imagedist-job"


class TargetDriver:
    """Moves one leased target row forward, one persisted step at a time."""

    def __init__(self, ctx: EngineContext, job: Job) -> None:
        self.ctx = ctx
        self.job = job

    async def put(self, row: TargetRow, **changes: object) -> TargetRow:
        """Persist a change, renewing our lease; raises PreconditionFailed if we lost the row."""
        now = self.ctx.backend.clock.now()
        new = row.replace(**changes, lease_until=self.ctx.lease_until(), updated_at=now)
        return await self.ctx.backend.state.put_target(new)

    async def fail(self, row: TargetRow, phase: FailedPhase, reason: str) -> TargetRow:
        await self.ctx.log(self.job.id, "error", phase.value, reason, target=row.target)
        return await self.put(row, state=TargetState.FAILED, failed_phase=phase, error=reason)

    # copy

    async def begin_copy(self, row: TargetRow, source: SourceRow) -> TargetRow:
        """PENDING -> COPYING: record the intent and the source, then start the copy."""
        row = await self.put(
            row,
            state=TargetState.COPYING,
            source_id=source.source_id,
            copy_id="",
            attempts=row.attempts + 1,
            error="",
            failed_phase=None,
        )
        await self.ctx.log(
            self.job.id, "info", "copy", f"copy started from {source.source_id}", target=row.target
        )
        return await self._start_copy(row, source)

    async def _start_copy(self, row: TargetRow, source: SourceRow) -> TargetRow:
        blobs = self.ctx.backend.blobs
        await blobs.ensure_container(row.blob.account, row.blob.container)
        try:
            copy_id = await blobs.start_copy(source.blob, row.blob)
        except Conflict:
            # A copy into this blob is already pending: ours, started just before a crash.
            copy_id = (await blobs.get_properties(row.blob)).copy_id
        return await self.put(row, copy_id=copy_id)

    async def poll_copy(self, row: TargetRow, source: SourceRow | None) -> TargetRow:
        """COPYING: one look at the copy; returns the row, moved on if the copy ended."""
        try:
            props = await self.ctx.backend.blobs.get_properties(row.blob)
        except NotFound:
            props = None
        if props is None or not self._is_ours(row, props, source):
            return await self._restart_copy(row, source)
        if row.copy_id != props.copy_id:
            row = await self.put(row, copy_id=props.copy_id)
        if props.copy_status is CopyStatus.PENDING:
            return await self.put(row)  # renews the lease while we wait
        if props.copy_status is CopyStatus.SUCCESS and props.size == self.job.size_bytes:
            await self.ctx.log(self.job.id, "info", "copy", "copy verified", target=row.target)
            return await self.put(row, state=TargetState.COPIED)
        reason = props.copy_error or f"copy ended {props.copy_status.value}"
        return await self.fail(row, FailedPhase.COPY, f"copy from {row.source_id} failed: {reason}")

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
            return await self.put(row, state=TargetState.PENDING, source_id=None, copy_id="")
        return await self._start_copy(row, source)

    # image

    def spec(self, row: TargetRow) -> ImageSpec:
        return ImageSpec(
            subscription=row.subscription,
            resource_group=row.resource_group,
            name=row.image_name,
            region=row.region,
            source_blob=row.blob,
            os_type=self.job.os_type,
            tags={JOB_TAG: self.job.id},
        )

    async def begin_image(self, row: TargetRow) -> TargetRow:
        """COPIED -> IMAGING: record the intent, then ask for the image."""
        row = await self.put(row, state=TargetState.IMAGING, error="", failed_phase=None)
        return await self._create_image(row)

    async def _create_image(self, row: TargetRow) -> TargetRow:
        images = self.ctx.backend.images
        try:
            await images.ensure_resource_group(row.subscription, row.resource_group, row.region)
            await images.begin_create_image(self.spec(row))
        except OperationFailed as exc:
            return await self.fail(row, FailedPhase.IMAGE, f"image creation refused: {exc}")
        except Conflict as exc:
            return await self.fail(row, FailedPhase.IMAGE, str(exc))
        await self.ctx.log(
            self.job.id, "info", "image", f"creating image {row.image_name}", target=row.target
        )
        return await self.put(row)

    async def poll_image(self, row: TargetRow) -> TargetRow:
        """IMAGING: one look at the image; creates it if the request never reached the platform."""
        try:
            image = await self.ctx.backend.images.get_image(
                row.subscription, row.resource_group, row.image_name
            )
        except NotFound:
            return await self._create_image(row)
        if image.tags.get(JOB_TAG) != self.job.id:
            reason = (
                f"image {row.image_name!r} already exists from job {image.tags.get(JOB_TAG)!r};"
                " delete it or choose another --image-name"
            )
            return await self.fail(row, FailedPhase.IMAGE, reason)
        if image.provisioning_state is ProvisioningState.CREATING:
            return await self.put(row)
        if image.provisioning_state is ProvisioningState.SUCCEEDED:
            await self.ctx.log(self.job.id, "info", "image", "image succeeded", target=row.target)
            return await self.put(row, state=TargetState.DONE)
        reason = f"image creation failed: {image.error_code}: {image.error_message}"
        await self.ctx.backend.images.delete_image(
            row.subscription, row.resource_group, row.image_name
        )  # a failed image of our own job is no replacement for anything; clear it for a retry
        return await self.fail(row, FailedPhase.IMAGE, reason)

    async def drop_blob(self, row: TargetRow) -> TargetRow:
        """DONE: the image holds its own copy of the data, so the target's blob can go."""
        await self.ctx.backend.blobs.delete_blob(row.blob)
        await self.ctx.log(self.job.id, "info", "cleanup", "target blob deleted", target=row.target)
        return await self.put(row, blob_deleted=True)
