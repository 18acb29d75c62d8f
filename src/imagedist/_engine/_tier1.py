"""Tier-1 copies: extra copies of the upload in the staging account, used only as copy sources."""

from __future__ import annotations

import contextlib

from .._domain import Job, SourceRow, SourceState
from .._exceptions import Conflict, NotFound
from ..abc import CopyStatus
from ._context import EngineContext

__all__ = ["drive_tier1"]


async def drive_tier1(
    ctx: EngineContext, job: Job, row: SourceRow, parent: SourceRow | None
) -> SourceRow:
    """Copy ``parent`` into the tier-1 blob and wait until it is verified; ``row`` is leased."""
    state = ctx.backend.state
    if row.state is SourceState.PENDING:
        if parent is None:
            return row
        row = await state.put_source(
            row.replace(state=SourceState.COPYING, parent_id=parent.source_id)
        )
        await _start(ctx, parent, row)
    parent = parent or await _parent_of(ctx, row)
    while row.state is SourceState.COPYING:
        row = await _poll(ctx, job, row, parent)
        if row.state is SourceState.COPYING:
            await ctx.backend.clock.sleep(ctx.config.concurrency.poll_interval_seconds)
    return row


async def _parent_of(ctx: EngineContext, row: SourceRow) -> SourceRow | None:
    for source in await ctx.backend.state.list_sources(row.job_id):
        if source.source_id == row.parent_id and source.state is SourceState.READY:
            return None if source.deleted else source
    return None


async def _start(ctx: EngineContext, parent: SourceRow, row: SourceRow) -> None:
    # Conflict: a copy is already pending, ours, started just before a crash.
    with contextlib.suppress(Conflict):
        await ctx.backend.blobs.start_copy(parent.blob, row.blob)


async def _poll(
    ctx: EngineContext, job: Job, row: SourceRow, parent: SourceRow | None
) -> SourceRow:
    state = ctx.backend.state
    try:
        props = await ctx.backend.blobs.get_properties(row.blob)
    except NotFound:
        props = None
    if props is None or (parent and props.copy_source != str(parent.blob)):
        if parent is None:
            return await state.put_source(row.replace(state=SourceState.PENDING, parent_id=None))
        await _start(ctx, parent, row)
        return await state.put_source(row.replace(lease_until=ctx.lease_until()))
    if props.copy_status is CopyStatus.PENDING:
        return await state.put_source(
            row.replace(progress_bytes=props.copy_progress, lease_until=ctx.lease_until())
        )
    if props.copy_status is CopyStatus.SUCCESS:
        await ctx.log(job.id, "info", "tier1", f"{row.source_id} ready (from {row.parent_id})")
        return await state.put_source(row.replace(state=SourceState.READY))
    reason = props.copy_error or f"copy ended {props.copy_status.value}"
    await ctx.log(job.id, "error", "tier1", f"{row.source_id} failed: {reason}")
    return await state.put_source(row.replace(state=SourceState.FAILED, error=reason))
