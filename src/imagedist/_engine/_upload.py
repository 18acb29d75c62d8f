"""Upload the golden image into the job's tier-0 page blob: only data chunks, resumable."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from .._domain import Job, SourceRow, SourceState
from .._exceptions import NotFound
from ._context import EngineContext

__all__ = ["data_chunks", "upload_tier0"]

CHUNK = 4 * 1024 * 1024  # Azure's largest Put Page
ProgressCallback = Callable[[int, int], None]


def data_chunks(path: Path, start: int = 0, chunk: int = CHUNK) -> Iterator[tuple[int, bytes]]:
    """Yield ``(offset, data)`` for every chunk from ``start`` that holds a non-zero byte.

    Holes are skipped with SEEK_DATA where the filesystem supports it, so a mostly-empty disk is
    read only where it has data.
    """
    with path.open("rb") as file:
        size = os.fstat(file.fileno()).st_size
        offset = start
        while offset < size:
            offset = _next_data(file.fileno(), offset, size, chunk)
            if offset >= size:
                return
            file.seek(offset)
            data = file.read(min(chunk, size - offset))
            if data.count(0) != len(data):
                yield offset, data
            offset += len(data)


def _next_data(fd: int, offset: int, size: int, chunk: int) -> int:
    if not hasattr(os, "SEEK_DATA"):
        return offset
    try:
        data_at = os.lseek(fd, offset, os.SEEK_DATA)
    except OSError:  # ENXIO: no data after offset
        return size
    return data_at - data_at % chunk


async def upload_tier0(
    ctx: EngineContext, job: Job, row: SourceRow, on_progress: ProgressCallback | None = None
) -> SourceRow:
    """Write the job's file into its tier-0 blob, resuming from the last recorded offset.

    ``row`` must be leased by this worker. Progress is persisted after every chunk, with the lease
    renewed, so a killed upload resumes without resending what is already there.
    """
    state, blobs = ctx.backend.state, ctx.backend.blobs
    path = Path(job.source_path)
    if not path.is_file():
        return await _fail(ctx, job, row, f"the source file {job.source_path!r} is gone")
    await blobs.ensure_container(row.blob.account, row.blob.container)
    try:
        await blobs.get_properties(row.blob)
    except NotFound:
        row = row.replace(progress_bytes=0)
    await blobs.create_page_blob(row.blob, job.size_bytes)
    row = await state.put_source(row.replace(state=SourceState.UPLOADING))
    start = row.progress_bytes - row.progress_bytes % CHUNK
    chunks = data_chunks(path, start)
    while (item := await asyncio.to_thread(next, chunks, None)) is not None:
        offset, data = item
        await blobs.write_pages(row.blob, offset, data)
        row = await state.put_source(
            row.replace(progress_bytes=offset + len(data), lease_until=ctx.lease_until())
        )
        if on_progress:
            on_progress(row.progress_bytes, job.size_bytes)
    row = await state.put_source(
        row.replace(state=SourceState.READY, progress_bytes=job.size_bytes)
    )
    if on_progress:
        on_progress(job.size_bytes, job.size_bytes)
    await ctx.log(job.id, "info", "upload", f"uploaded {job.size_bytes} bytes to {row.blob}")
    return row


async def _fail(ctx: EngineContext, job: Job, row: SourceRow, reason: str) -> SourceRow:
    await ctx.log(job.id, "error", "upload", f"upload failed: {reason}; resubmit the image")
    return await ctx.backend.state.put_source(row.replace(state=SourceState.FAILED, error=reason))
