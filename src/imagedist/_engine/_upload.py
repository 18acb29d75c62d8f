"""Upload the golden image into the job's tier-0 page blob: only non-zero pages, several writes in
flight, the MD5 of the whole disk from the same read pass, resumable without resending anything.

Nothing is called uploaded before it is verified: the file must not change while it is read
(same inode, size, times and footer before and after), the blob's last 512 bytes read back must
be the file's footer, and its Content-MD5 read back must be the one computed. A converted disk is
deleted from the work folder once its upload is verified, and converted again from the user's
file if a re-upload needs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .._domain import BlobRef, Job, JobState, SourceKind, SourceRow, SourceState
from .._domain.events import EventKind, LogLevel, Step
from .._exceptions import NotFound, OperationFailed, SourceChanged, SourceUnusable
from ..abc import BlobStore, DiskReading, FileSource
from ._context import EngineContext
from ._tasks import task_group

__all__ = [
    "SourceChanged",
    "SourceUnusable",
    "UploadMismatch",
    "UploadResult",
    "upload_file",
    "upload_tier0",
]

ProgressCallback = Callable[[int, int], None]  # (bytes sent, bytes to send at most)
Chunk = tuple[int, bytes]
SOURCE_KEY = "imagedist_source"  # blob metadata: the fingerprint of the file being uploaded
RETRY_CHANGED = "keep it unchanged (stop whatever writes to it) and retry the job"
RETRY_AFRESH = "the blob was deleted: retry the job to upload it afresh"


class UploadMismatch(OperationFailed):
    """The blob read back is not what was sent (its footer or its Content-MD5)."""


@dataclass(frozen=True)
class UploadResult:
    """What an upload did: bytes sent this time, bytes already there, the disk's MD5 and its
    last 512 bytes (the same in the file before and after, and in the blob)."""

    sent: int
    skipped: int
    md5: bytes | None  # None when not asked for
    footer: bytes = b""


async def upload_file(
    blobs: BlobStore,
    ref: BlobRef,
    disk: DiskReading,
    *,
    concurrency: int = 8,
    on_progress: ProgressCallback | None = None,
    content_md5: bool = True,
) -> UploadResult:
    """Write the disk's non-zero pages into the page blob ``ref``; resume if it exists.

    Pages the blob already holds (its page ranges) are not sent again, so an interrupted upload
    continues where it stopped. With ``content_md5``, the MD5 of the whole disk is computed
    beside the upload and stored as the blob's Content-MD5 (on a mostly empty disk, hashing its
    holes takes longer than sending its data: see docs/benchmarks.md).

    :raises SourceChanged: if the file changed while it was read (nothing sent can be trusted).
    :raises UploadMismatch: if the blob's last 512 bytes or its Content-MD5, read back, are
        not what was sent.
    """
    footer = await asyncio.to_thread(disk.footer)
    try:
        present = await _present_ranges(blobs, ref, disk.size, disk.fingerprint())
        sent, skipped, md5 = await _send(
            blobs, ref, disk, present, concurrency, on_progress, content_md5
        )
    except Exception as exc:
        # A failure of the file's own making (it shrank, say) is reported as what it is.
        if isinstance(exc, SourceChanged) or not disk.unchanged():
            raise SourceChanged(_changed(disk.name)) from exc
        raise
    after_footer = await asyncio.to_thread(disk.footer)
    if not disk.unchanged() or after_footer != footer:
        raise SourceChanged(_changed(disk.name))
    await _verify_blob(blobs, ref, disk.size, footer, md5)
    return UploadResult(sent=sent, skipped=skipped, md5=md5, footer=footer)


def _changed(name: str) -> str:
    return f"the file {name!r} changed while it was uploaded; {RETRY_CHANGED}"


def covered(ranges: list[tuple[int, int]], start: int, end: int) -> bool:
    """Whether ``[start, end)`` lies inside one of the sorted, merged ``ranges``."""
    return any(lo <= start and end <= hi for lo, hi in ranges)


async def _send(
    blobs: BlobStore,
    ref: BlobRef,
    disk: DiskReading,
    present: list[tuple[int, int]],
    concurrency: int,
    on_progress: ProgressCallback | None,
    content_md5: bool,
) -> tuple[int, int, bytes | None]:
    """Send the pages the blob lacks, hashing the whole file beside; (sent, skipped, MD5)."""
    queue: asyncio.Queue[Chunk | None] = asyncio.Queue(maxsize=2 * concurrency)
    sent = skipped = 0

    async def write() -> None:
        nonlocal sent
        while (item := await queue.get()) is not None:
            offset, data = item
            await blobs.write_pages(ref, offset, data)
            sent += len(data)
            if on_progress:
                on_progress(sent + skipped, disk.data_bytes)

    reads = _Reads(disk)
    try:
        async with task_group() as group:
            hashing = group.create_task(asyncio.to_thread(reads.md5)) if content_md5 else None
            writers = [group.create_task(write()) for _ in range(concurrency)]
            while (item := await asyncio.to_thread(reads.next_chunk)) is not None:
                if covered(present, item[0], item[0] + len(item[1])):
                    skipped += len(item[1])
                else:
                    await queue.put(item)  # a failed writer cancels us, so this cannot hang
            for _ in writers:
                await queue.put(None)
    finally:
        reads.stop()
    return sent, skipped, hashing.result() if hashing is not None else None


class _Reads:
    """The reads of one upload that run in threads: its chunks, and its hash beside them.

    Cancelling the task that awaits a thread does not stop the thread, and the file is closed
    right after the upload ends: :meth:`stop` makes both reads stop and waits for the one read
    that may be running, so that no thread reads a closed descriptor (whose number the next
    file opened would get) and the generator is not closed while it runs.
    """

    def __init__(self, disk: DiskReading) -> None:
        self._disk = disk
        self._chunks = disk.chunks()
        self._stop = threading.Event()
        self._chunk_lock = threading.Lock()
        self._hash_lock = threading.Lock()

    def next_chunk(self) -> Chunk | None:
        with self._chunk_lock:
            return None if self._stop.is_set() else next(self._chunks, None)

    def md5(self) -> bytes:
        with self._hash_lock:
            return self._disk.md5(self._stop)

    def stop(self) -> None:
        """Blocks for one read at most (a few milliseconds): called as the upload ends."""
        self._stop.set()
        with self._chunk_lock:
            self._chunks.close()
        with self._hash_lock:
            pass


async def _verify_blob(
    blobs: BlobStore, ref: BlobRef, size: int, footer: bytes, md5: bytes | None
) -> None:
    """Read back what proves the blob is the file: its last 512 bytes, and its Content-MD5."""
    if await blobs.read(ref, size - len(footer), len(footer)) != footer:
        raise UploadMismatch(
            f"the last {len(footer)} bytes of {ref} read back differ from the file's (a write"
            f" was lost, or the blob held pages of another version of the file); {RETRY_AFRESH}"
        )
    if md5 is None:
        return
    await blobs.set_content_md5(ref, md5)
    props = await blobs.get_properties(ref)
    if props.size != size or props.content_md5 != md5:
        stored = props.content_md5.hex() if props.content_md5 else "none"
        raise UploadMismatch(
            f"{ref} reads back as {props.size} bytes with Content-MD5 {stored}, not the"
            f" {size} bytes with MD5 {md5.hex()} sent; {RETRY_AFRESH}"
        )


async def _present_ranges(
    blobs: BlobStore, ref: BlobRef, size: int, fingerprint: str
) -> list[tuple[int, int]]:
    """The pages the blob already holds from an interrupted upload of this very file; a blob
    begun from another version of it (or of another size) starts again empty."""
    try:
        props = await blobs.get_properties(ref)
    except NotFound:
        props = None
    if props is None or props.size != size or props.metadata.get(SOURCE_KEY) != fingerprint:
        await blobs.create_page_blob(ref, size, overwrite=props is not None)
        await blobs.set_metadata(ref, {SOURCE_KEY: fingerprint})
        return []
    return await blobs.page_ranges(ref)


async def upload_tier0(
    ctx: EngineContext,
    job: Job,
    row: SourceRow,
    source: FileSource,
    on_progress: ProgressCallback | None = None,
) -> SourceRow:
    """Upload the job's file (read through ``source``) into its tier-0 blob; ``row`` must be
    leased by this worker.

    The row becomes ready only once the upload is verified, with the disk's MD5 (hex, "" when
    ``[upload] content_md5`` is off); on a re-upload that MD5 must be the first upload's. On any
    mismatch the row fails with the reason and its fix, and the blob is deleted so that a retry
    starts afresh. Progress is persisted at most once a second (with the lease renewed).
    """
    state, clock = ctx.backend.state, ctx.backend.clock
    await ctx.backend.blobs.ensure_container(row.blob.account, row.blob.container)
    row = await state.put_source(dataclasses.replace(row, state=SourceState.UPLOADING))
    holder: dict[str, Any] = {"row": row, "fraction": 0.0}

    def progress(done: int, total: int) -> None:
        holder["fraction"] = done / total if total else 1.0
        if on_progress:
            on_progress(done, total)

    saving = asyncio.Lock()

    async def save_progress() -> None:
        while True:
            await clock.sleep(1.0)
            async with saving:
                current = holder["row"]
                assert isinstance(current, SourceRow)
                holder["row"] = await state.put_source(
                    dataclasses.replace(
                        current,
                        progress_bytes=int(job.size_bytes * float(holder["fraction"])),
                        lease_until=ctx.lease_until(),
                    )
                )

    failure: OperationFailed | None = None
    async with task_group() as group:
        saver = group.create_task(save_progress())  # renews the lease through a re-conversion too
        try:
            result = await _upload_verified(ctx, job, row, source, progress)
        except (SourceChanged, UploadMismatch, SourceUnusable) as exc:
            failure = exc
        finally:
            async with saving:  # a save under way finishes first: the row we hold is the latest
                saver.cancel()
    if failure is not None:
        await _discard(ctx, row, failure)
        return await _fail(ctx, job, holder["row"], str(failure))
    final = holder["row"]
    assert isinstance(final, SourceRow)
    md5 = result.md5.hex() if result.md5 else ""
    final = await state.put_source(
        dataclasses.replace(
            final, state=SourceState.READY, progress_bytes=job.size_bytes, content_md5=md5
        )
    )
    await ctx.log(
        job.id,
        LogLevel.INFO,
        Step.UPLOAD,
        f"uploaded {job.size_bytes} bytes to {row.blob}: sent {result.sent} bytes of data"
        f" ({result.skipped} were already there), footer and"
        + (f" MD5 {md5} verified" if md5 else " size verified"),
    )
    ctx.emit(job.id, EventKind.UPLOAD_DONE, source=row.source_id)
    await _drop_converted(ctx, job, source)
    return final


async def _upload_verified(
    ctx: EngineContext, job: Job, row: SourceRow, source: FileSource, progress: ProgressCallback
) -> UploadResult:
    disk = await source.open()
    with disk:
        if source.converted_again:
            await ctx.log(
                job.id,
                LogLevel.INFO,
                Step.UPLOAD,
                f"converted {job.input_path!r} again to upload it",
            )
        await asyncio.to_thread(_check_footer, disk, job)
        result = await upload_file(
            ctx.backend.blobs,
            row.blob,
            disk,
            concurrency=ctx.settings.upload_concurrency,
            on_progress=progress,
            # A re-upload is hashed whatever the setting: it must be the disk uploaded first.
            content_md5=ctx.settings.content_md5 or bool(row.content_md5),
        )
    # What went up is the file as it was throughout (upload_file checked): judge that.
    problem = disk.footer_problem(result.footer)
    if problem is not None:
        raise SourceChanged(
            f"the file {disk.name!r} is no longer a fixed VHD ({problem}); resubmit it"
        )
    if row.content_md5 and result.md5 is not None and result.md5.hex() != row.content_md5:
        raise SourceChanged(
            f"the file {disk.name!r} changed since the job was submitted (its MD5 is"
            f" {result.md5.hex()}, the first upload's was {row.content_md5}); resubmit it"
        )
    return result


def _check_footer(disk: DiskReading, job: Job) -> None:
    """Before sending anything: the file still ends in the footer of a fixed VHD of its size."""
    problem = disk.footer_problem(disk.footer())
    if disk.size != job.size_bytes:
        problem = f"it is {disk.size} bytes, not the {job.size_bytes} bytes it had when submitted"
    if problem is not None:
        raise SourceUnusable(
            f"the file {disk.name!r} is no longer a fixed VHD ({problem}); resubmit it"
        )


async def _discard(ctx: EngineContext, row: SourceRow, why: Exception) -> None:
    """Delete a blob whose content cannot be trusted, so that a retry does not resume into it."""
    if isinstance(why, SourceUnusable):
        return  # found before anything was sent
    with contextlib.suppress(NotFound):
        await ctx.backend.blobs.delete_blob(row.blob)


async def _drop_converted(ctx: EngineContext, job: Job, source: FileSource) -> None:
    """Delete the converted copy of the user's file once its upload is verified: only a file we
    made in the work folder, and only if no other unfinished job was submitted from it."""
    copy = source.converted_copy()
    if copy is None or await _still_needed(ctx, job, copy):
        return
    if await asyncio.to_thread(source.delete_converted_copy):
        await ctx.log(job.id, LogLevel.INFO, Step.UPLOAD, f"deleted the converted copy {copy!r}")


async def _still_needed(ctx: EngineContext, job: Job, path: str) -> bool:
    """Whether another active job submitted from the same conversion has yet to upload it (a
    resubmission of the same file reuses its conversion)."""
    state = ctx.backend.state
    for other in await state.list_jobs():
        if other.id == job.id or other.state is not JobState.ACTIVE:
            continue
        if other.source_path != path:
            continue
        sources = await state.list_sources(other.id)
        if any(s.kind is SourceKind.TIER0 and s.state is not SourceState.READY for s in sources):
            return True
    return False


async def _fail(ctx: EngineContext, job: Job, row: SourceRow, reason: str) -> SourceRow:
    await ctx.log(job.id, LogLevel.ERROR, Step.UPLOAD, f"upload failed: {reason}")
    return await ctx.backend.state.put_source(
        dataclasses.replace(row, state=SourceState.FAILED, error=reason)
    )
