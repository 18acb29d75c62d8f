"""Tier-1 copies: extra copies of the upload in the staging account, used only as copy sources."""

from __future__ import annotations

import contextlib
import dataclasses

from .._domain import Job, SourceRow, SourceState
from .._domain.events import EventKind, LogLevel, Step
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
            dataclasses.replace(row, state=SourceState.COPYING, parent_id=parent.source_id)
        )
        await _start(ctx, parent, row)
    parent = parent or await _parent_of(ctx, row)

    async def look(current: SourceRow) -> SourceRow:
        return await _poll(ctx, job, current, parent)

    return await ctx.poll_while(row, _copying, look)


def _copying(row: SourceRow) -> bool:
    return row.state is SourceState.COPYING


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
            orphan = dataclasses.replace(row, state=SourceState.PENDING, parent_id=None)
            return await state.put_source(orphan)
        # Written first: a compare-and-set that proves the row is still ours before we copy.
        row = await state.put_source(dataclasses.replace(row, lease_until=ctx.lease_until()))
        await _start(ctx, parent, row)
        return row
    if props.copy_status is CopyStatus.PENDING:
        return await state.put_source(
            dataclasses.replace(
                row, progress_bytes=props.copy_progress, lease_until=ctx.lease_until()
            )
        )
    if props.copy_status is CopyStatus.SUCCESS:
        message = f"{row.source_id} ready (from {row.parent_id})"
        await ctx.log(job.id, LogLevel.INFO, Step.TIER1, message)
        ctx.emit(job.id, EventKind.TIER1_READY, source=row.source_id)
        return await state.put_source(dataclasses.replace(row, state=SourceState.READY))
    reason = props.copy_error or f"copy ended {props.copy_status.value}"
    await ctx.log(job.id, LogLevel.ERROR, Step.TIER1, f"{row.source_id} failed: {reason}")
    ctx.emit(job.id, EventKind.FAILED, source=row.source_id, detail=reason)
    return await state.put_source(dataclasses.replace(row, state=SourceState.FAILED, error=reason))
