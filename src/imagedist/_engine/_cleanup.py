"""Cleanup of intermediate blobs, only once no unfinished target can need them."""

from __future__ import annotations

from .._domain import FailedPhase, Job, SourceRow, SourceState, TargetRow, TargetState
from .._exceptions import PreconditionFailed
from ._context import EngineContext

__all__ = ["drop_sources", "drop_sources_if_unneeded", "sources_needed"]

SETTLED_SOURCE_STATES = frozenset({SourceState.READY, SourceState.FAILED})


def sources_needed(sources: list[SourceRow], targets: list[TargetRow]) -> bool:
    """Whether a source may still be read: a copy waits or runs, or a failed copy may be retried."""
    for target in targets:
        if target.state in (TargetState.PENDING, TargetState.COPYING):
            return True
        if target.state is TargetState.FAILED and target.failed_phase is FailedPhase.COPY:
            return True
    return any(s.state not in SETTLED_SOURCE_STATES for s in sources)


async def drop_sources_if_unneeded(
    ctx: EngineContext, job: Job, sources: list[SourceRow], targets: list[TargetRow]
) -> None:
    """Delete the job's tier-0 and tier-1 blobs once every copy from them is finished."""
    if not sources_needed(sources, targets):
        await drop_sources(ctx, job, sources)


async def drop_sources(ctx: EngineContext, job: Job, sources: list[SourceRow]) -> int:
    """Delete the source blobs that still exist; returns how many were deleted."""
    dropped = 0
    for row in sources:
        if row.deleted:
            continue
        await ctx.backend.blobs.delete_blob(row.blob)
        try:
            await ctx.backend.state.put_source(row.replace(deleted=True))
        except PreconditionFailed:
            continue  # another worker cleaned it at the same moment
        dropped += 1
        await ctx.log(job.id, "info", "cleanup", f"deleted {row.source_id} blob {row.blob}")
    return dropped
