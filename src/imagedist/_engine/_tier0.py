"""Tier 0, from whichever source the job has: the one place the engine tells the two apart."""

from __future__ import annotations

from .._domain import Job, SourceRow
from ..abc import CopySource, FileSource
from ._context import EngineContext
from ._disk import copy_from_disk
from ._upload import ProgressCallback, upload_tier0

__all__ = ["fill_tier0"]


async def fill_tier0(
    ctx: EngineContext, job: Job, row: SourceRow, on_progress: ProgressCallback | None = None
) -> SourceRow:
    """Fill the job's tier-0 blob from its disk source (``ctx.disk_source``): copied
    server-side from a managed disk, uploaded from a file; ``row`` is leased by this worker.

    ``on_progress`` follows an upload only (a server-side copy reports through its row).
    """
    source = ctx.disk_source(job)
    if isinstance(source, CopySource):
        return await copy_from_disk(ctx, job, row, source)
    if isinstance(source, FileSource):
        return await upload_tier0(ctx, job, row, source, on_progress)
    raise TypeError(f"a disk source is a FileSource or a CopySource, not {type(source).__name__}")
