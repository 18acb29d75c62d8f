"""Tier 0 from an Azure managed disk: grant read access, copy server-side, revoke in every case."""

from __future__ import annotations

import contextlib
import dataclasses

from .._domain import Job, SourceRow, SourceState
from .._domain.access import copy_access_lifetime
from .._domain.events import EventKind, LogLevel, Step
from .._domain.names import parse_disk_id
from .._exceptions import Conflict, NotFound, OperationFailed
from ..abc import CopySource, CopyStatus
from ._context import EngineContext

__all__ = ["VHD_FOOTER", "access_seconds", "check_disk_id", "copy_from_disk", "give_up_disk"]

VHD_FOOTER = 512  # a disk exported through its access URL is a fixed VHD: the disk plus a footer


def check_disk_id(disk_id: str) -> str:
    """:raises InvalidInput: unless ``disk_id`` is a managed disk's resource id."""
    parse_disk_id(disk_id)
    return disk_id


def access_seconds(size: int) -> int:
    """How long the disk's read access must last, by the same rule as a blob's read SAS."""
    return int(copy_access_lifetime(size).total_seconds())


async def copy_from_disk(
    ctx: EngineContext, job: Job, row: SourceRow, source: CopySource
) -> SourceRow:
    """Fill the job's tier-0 blob from its managed disk (``source``); ``row`` is leased by this
    worker.

    A copy already pending (a worker died while it ran) is waited for, never started twice. The
    access is revoked once the copy ended, whatever the outcome, and only then: revoking it
    while the copy runs would abort the copy. So an interruption that leaves the copy running
    (a transient error, a lost lease, a stopped worker) leaves the access to whoever resumes
    it; a copy that failed, or that the worker gives up, has it revoked by the worker's
    give-up (:func:`give_up_disk`). The access URL is never logged.
    """
    blobs, state = ctx.backend.blobs, ctx.backend.state
    await blobs.ensure_container(row.blob.account, row.blob.container)
    row = await state.put_source(dataclasses.replace(row, state=SourceState.UPLOADING))
    status = await _copy_status(ctx, row)
    if status not in (CopyStatus.PENDING, CopyStatus.SUCCESS):
        url = await source.grant_read(access_seconds(job.size_bytes))
        await ctx.log(job.id, LogLevel.INFO, Step.UPLOAD, "read access to the disk granted")
        with contextlib.suppress(Conflict):  # pending already: adopt it
            await blobs.start_copy_from_url(url, row.blob)
    row = await _wait_for_copy(ctx, job, row)
    await _revoke(ctx, job, source)
    await ctx.log(job.id, LogLevel.INFO, Step.UPLOAD, f"copied the disk to {row.blob}")
    ctx.emit(job.id, EventKind.UPLOAD_DONE, source=row.source_id)
    return row


async def give_up_disk(ctx: EngineContext, job: Job) -> None:
    """The disk copy failed, or the worker gave it up (too many transient errors, say): the
    disk's read access goes, if the job copies from a disk."""
    source = ctx.disk_source(job)
    if isinstance(source, CopySource):
        await _revoke(ctx, job, source)


async def _revoke(ctx: EngineContext, job: Job, source: CopySource) -> None:
    await source.revoke()
    await ctx.log(job.id, LogLevel.INFO, Step.UPLOAD, "read access to the disk revoked")


async def _copy_status(ctx: EngineContext, row: SourceRow) -> CopyStatus | None:
    try:
        return (await ctx.backend.blobs.get_properties(row.blob)).copy_status
    except NotFound:
        return None


async def _wait_for_copy(ctx: EngineContext, job: Job, row: SourceRow) -> SourceRow:
    async def look(current: SourceRow) -> SourceRow:
        return await _look_at_copy(ctx, job, current)

    return await ctx.poll_while(row, _uploading, look)


def _uploading(row: SourceRow) -> bool:
    return row.state is SourceState.UPLOADING


async def _look_at_copy(ctx: EngineContext, job: Job, row: SourceRow) -> SourceRow:
    """One look at the disk's copy: ready once it succeeded, progress (and the lease) renewed
    while it runs.

    :raises OperationFailed: if the copy ended otherwise.
    """
    state = ctx.backend.state
    props = await ctx.backend.blobs.get_properties(row.blob)
    if props.copy_status is CopyStatus.SUCCESS:
        return await state.put_source(
            dataclasses.replace(row, state=SourceState.READY, progress_bytes=job.size_bytes)
        )
    if props.copy_status is not CopyStatus.PENDING:
        raise OperationFailed(
            f"the copy of the disk failed: {props.copy_error or props.copy_status.value}"
        )
    done = props.copy_progress * job.size_bytes // max(props.copy_total, 1)
    return await state.put_source(
        dataclasses.replace(row, progress_bytes=done, lease_until=ctx.lease_until())
    )
