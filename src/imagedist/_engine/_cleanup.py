"""Cleanup of intermediate blobs, only once no unfinished target can need them."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from .._domain import (
    COPY_STATES,
    IN_FLIGHT_SOURCE_STATES,
    BlobRef,
    FailedPhase,
    Job,
    SourceRow,
    TargetRow,
    TargetState,
)
from .._domain.events import LogLevel, Step
from .._domain.publications import PublicationRow
from .._exceptions import PreconditionFailed
from ._context import EngineContext
from ._gallery import needs_upload

R = TypeVar("R", SourceRow, TargetRow)

__all__ = [
    "drop_every_target_blob",
    "drop_intermediates_if_unneeded",
    "drop_sources",
    "drop_target_blobs",
    "sources_needed",
]


def sources_needed(
    sources: list[SourceRow],
    targets: list[TargetRow],
    publications: Sequence[PublicationRow] = (),
) -> bool:
    """Whether the sources must stay: a copy waits or runs, a failed copy may be retried, a
    gallery version is still to be made from the upload, or a source is being made (deleting it
    under its own copy would fail that copy)."""
    if any(needs_upload(row) for row in publications):
        return True
    for target in targets:
        if target.state in COPY_STATES:
            return True
        if target.state is TargetState.FAILED and target.failed_phase is FailedPhase.COPY:
            return True
    return any(s.state in IN_FLIGHT_SOURCE_STATES and not s.deleted for s in sources)


async def drop_intermediates_if_unneeded(
    ctx: EngineContext,
    job: Job,
    sources: list[SourceRow],
    targets: list[TargetRow],
    publications: Sequence[PublicationRow] = (),
) -> int:
    """Once no copy runs or waits, delete the tier-0 and tier-1 blobs, and the blob of every
    target whose image exists (finished copies serve as sources until then); returns how many
    blobs went. Every deletion is recorded on its row, so the engine knows it is gone."""
    if sources_needed(sources, targets, publications):
        return 0
    return await drop_sources(ctx, job, sources) + await drop_target_blobs(ctx, job, targets)


async def drop_target_blobs(ctx: EngineContext, job: Job, targets: list[TargetRow]) -> int:
    """Delete the blobs of the targets whose image exists (the image holds its own copy)."""

    async def drop(row: TargetRow) -> bool:
        deleted = dataclasses.replace(row, blob_deleted=True)
        return await _delete_then_record(
            ctx, row.blob, lambda: ctx.backend.state.put_target(deleted)
        )

    done = [row for row in targets if row.state is TargetState.DONE and not row.blob_deleted]
    dropped = await _together(drop, done)
    if dropped:
        await ctx.log(job.id, LogLevel.INFO, Step.CLEANUP, f"deleted {dropped} target blobs")
    return dropped


async def drop_every_target_blob(ctx: EngineContext, targets: list[TargetRow]) -> int:
    """Delete every target's blob not yet deleted (the caller made sure none is in flight) and
    record it on its row; returns how many blobs existed.

    :raises PreconditionFailed: another worker wrote a row meanwhile (after the others of its
        batch are done and recorded).
    """

    async def drop(row: TargetRow) -> bool:
        existed = await ctx.backend.blobs.delete_blob(row.blob)
        await ctx.backend.state.put_target(dataclasses.replace(row, blob_deleted=True))
        return existed

    return await _together(drop, [row for row in targets if not row.blob_deleted])


async def drop_sources(ctx: EngineContext, job: Job, sources: list[SourceRow]) -> int:
    """Delete the source blobs that still exist; returns how many were deleted."""

    async def drop(row: SourceRow) -> bool:
        deleted = dataclasses.replace(row, deleted=True)
        if not await _delete_then_record(
            ctx, row.blob, lambda: ctx.backend.state.put_source(deleted)
        ):
            return False
        await ctx.log(
            job.id, LogLevel.INFO, Step.CLEANUP, f"deleted {row.source_id} blob {row.blob}"
        )
        return True

    return await _together(drop, [row for row in sources if not row.deleted])


async def _delete_then_record(
    ctx: EngineContext, blob: BlobRef, record: Callable[[], Awaitable[object]]
) -> bool:
    """Delete ``blob``, then ``record`` it gone on its row; False if another worker's write won
    the row first (it cleaned the same blob at the same moment)."""
    await ctx.backend.blobs.delete_blob(blob)
    try:
        await record()
    except PreconditionFailed:
        return False
    return True


#: Deletions sent at once. One after the other, each row's write went to the state store alone
#: (a store that gathers the writes arriving together, as the Azure one does, had none to
#: gather): a table transaction per deleted blob. At once, they share transactions of up to 100.
CLEANUP_AT_ONCE = 100


async def _together(drop: Callable[[R], Awaitable[bool]], rows: list[R]) -> int:
    """``drop`` every row, :data:`CLEANUP_AT_ONCE` at a time; how many returned True. Every
    row of a batch is tried before the first failure, if any, is raised."""
    dropped = 0
    for start in range(0, len(rows), CLEANUP_AT_ONCE):
        batch = rows[start : start + CLEANUP_AT_ONCE]
        outcomes = await asyncio.gather(*map(drop, batch), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        dropped += sum(1 for outcome in outcomes if outcome is True)
    return dropped
