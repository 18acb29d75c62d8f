"""Upload the golden image into the job's tier-0 page blob: only non-zero pages, several writes in
flight, the MD5 of the whole disk from the same read pass, resumable without resending anything.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._domain import BlobRef, Job, SourceRow, SourceState
from .._exceptions import NotFound
from ..abc import BlobStore
from ._context import EngineContext
from ._pages import DiskScan, covered
from ._tasks import task_group

__all__ = ["UploadResult", "upload_file", "upload_tier0"]

ProgressCallback = Callable[[int, int], None]  # (bytes sent, bytes to send at most)
Chunk = tuple[int, bytes]


@dataclass(frozen=True)
class UploadResult:
    """What an upload did: bytes sent this time, bytes already there, and the disk's MD5."""

    sent: int
    skipped: int
    md5: bytes | None  # None when not asked for


async def upload_file(
    blobs: BlobStore,
    ref: BlobRef,
    path: Path,
    *,
    concurrency: int = 8,
    on_progress: ProgressCallback | None = None,
    content_md5: bool = True,
) -> UploadResult:
    """Write the file's non-zero pages into the page blob ``ref``; resume if it exists.

    Pages the blob already holds (its page ranges) are not sent again, so an interrupted upload
    continues where it stopped. With ``content_md5``, the MD5 of the whole file is computed
    beside the upload and stored as the blob's Content-MD5 (on a mostly empty disk, hashing its
    holes takes longer than sending its data: see docs/benchmarks.md).
    """
    scan = await asyncio.to_thread(DiskScan, path)
    present = await _present_ranges(blobs, ref, scan.size)
    queue: asyncio.Queue[Chunk | None] = asyncio.Queue(maxsize=2 * concurrency)
    sent = skipped = 0

    async def write() -> None:
        nonlocal sent
        while (item := await queue.get()) is not None:
            offset, data = item
            await blobs.write_pages(ref, offset, data)
            sent += len(data)
            if on_progress:
                on_progress(sent + skipped, scan.data_bytes)

    async with task_group() as group:
        hashing = group.create_task(asyncio.to_thread(scan.hash_all)) if content_md5 else None
        writers = [group.create_task(write()) for _ in range(concurrency)]
        chunks = scan.chunks()
        try:
            while (item := await asyncio.to_thread(_next, chunks)) is not None:
                if covered(present, item[0], item[0] + len(item[1])):
                    skipped += len(item[1])
                else:
                    await queue.put(item)  # a failed writer cancels us, so this cannot hang
        finally:
            chunks.close()
        for _ in writers:
            await queue.put(None)
    if hashing is None:
        return UploadResult(sent=sent, skipped=skipped, md5=None)
    md5 = hashing.result()
    await blobs.set_content_md5(ref, md5)
    return UploadResult(sent=sent, skipped=skipped, md5=md5)


def _next(chunks: Iterator[Chunk]) -> Chunk | None:
    return next(chunks, None)


async def _present_ranges(blobs: BlobStore, ref: BlobRef, size: int) -> list[tuple[int, int]]:
    try:
        props = await blobs.get_properties(ref)
    except NotFound:
        props = None
    if props is None or props.size != size:
        await blobs.create_page_blob(ref, size, overwrite=props is not None)
        return []
    return await blobs.page_ranges(ref)


async def upload_tier0(
    ctx: EngineContext, job: Job, row: SourceRow, on_progress: ProgressCallback | None = None
) -> SourceRow:
    """Upload the job's file into its tier-0 blob; ``row`` must be leased by this worker.

    Progress is persisted at most once a second (with the lease renewed), for `status`.
    """
    state, clock = ctx.backend.state, ctx.backend.clock
    path = Path(job.source_path)
    if not path.is_file():
        return await _fail(ctx, job, row, f"the source file {job.source_path!r} is gone")
    await ctx.backend.blobs.ensure_container(row.blob.account, row.blob.container)
    row = await state.put_source(row.replace(state=SourceState.UPLOADING))
    holder: dict[str, Any] = {"row": row, "fraction": 0.0}

    def progress(done: int, total: int) -> None:
        holder["fraction"] = done / total if total else 1.0
        if on_progress:
            on_progress(done, total)

    async def save_progress() -> None:
        while True:
            await clock.sleep(1.0)
            current = holder["row"]
            assert isinstance(current, SourceRow)
            holder["row"] = await state.put_source(
                current.replace(
                    progress_bytes=int(job.size_bytes * float(holder["fraction"])),
                    lease_until=ctx.lease_until(),
                )
            )

    async with task_group() as group:
        saver = group.create_task(save_progress())
        try:
            result = await upload_file(
                ctx.backend.blobs,
                row.blob,
                path,
                concurrency=ctx.config.upload.concurrency,
                on_progress=progress,
                content_md5=ctx.config.upload.content_md5,
            )
        finally:
            saver.cancel()
    final = holder["row"]
    assert isinstance(final, SourceRow)
    final = await state.put_source(
        final.replace(state=SourceState.READY, progress_bytes=job.size_bytes)
    )
    await ctx.log(
        job.id,
        "info",
        "upload",
        f"uploaded {job.size_bytes} bytes to {row.blob}: sent {result.sent} bytes of data"
        f" ({result.skipped} were already there)"
        + (f", MD5 {result.md5.hex()}" if result.md5 else ""),
    )
    return final


async def _fail(ctx: EngineContext, job: Job, row: SourceRow, reason: str) -> SourceRow:
    await ctx.log(job.id, "error", "upload", f"upload failed: {reason}; resubmit the image")
    return await ctx.backend.state.put_source(row.replace(state=SourceState.FAILED, error=reason))
