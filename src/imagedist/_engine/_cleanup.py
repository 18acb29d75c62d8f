"""Cleanup of intermediate blobs, only once no unfinished target can need them."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from .._domain import (
    COPY_STATES,
    IN_FLIGHT_SOURCE_STATES,
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

__all__ = [
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
    dropped = 0
    for row in targets:
        if row.state is TargetState.DONE and not row.blob_deleted:
            await ctx.backend.blobs.delete_blob(row.blob)
            try:
                await ctx.backend.state.put_target(dataclasses.replace(row, blob_deleted=True))
            except PreconditionFailed:
                continue
            dropped += 1
    if dropped:
        await ctx.log(job.id, LogLevel.INFO, Step.CLEANUP, f"deleted {dropped} target blobs")
    return dropped


async def drop_sources(ctx: EngineContext, job: Job, sources: list[SourceRow]) -> int:
    """Delete the source blobs that still exist; returns how many were deleted."""
    dropped = 0
    for row in sources:
        if row.deleted:
            continue
        await ctx.backend.blobs.delete_blob(row.blob)
        try:
            await ctx.backend.state.put_source(dataclasses.replace(row, deleted=True))
        except PreconditionFailed:
            continue  # another worker cleaned it at the same moment
        dropped += 1
        await ctx.log(
            job.id, LogLevel.INFO, Step.CLEANUP, f"deleted {row.source_id} blob {row.blob}"
        )
    return dropped
