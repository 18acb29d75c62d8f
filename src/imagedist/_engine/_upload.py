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
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._domain import BlobRef, Job, JobState, SourceKind, SourceRow, SourceState
from .._domain.events import EventKind, LogLevel, Step
from .._exceptions import InvalidInput, NotFound, OperationFailed
from .._vhd import fixed_footer_problem
from ..abc import BlobStore
from ._context import EngineContext
from ._pages import DiskScan, SourceChanged, covered
from ._prepare import converted_path, prepare_image
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
FOOTER = 512
SOURCE_KEY = "imagedist_source"  # blob metadata: the fingerprint of the file being uploaded
RETRY_CHANGED = "keep it unchanged (stop whatever writes to it) and retry the job"
RETRY_AFRESH = "the blob was deleted: retry the job to upload it afresh"


class UploadMismatch(OperationFailed):
    """The blob read back is not what was sent (its footer or its Content-MD5)."""


class SourceUnusable(OperationFailed):
    """The job's file cannot be uploaded (gone, changed since submission, not a fixed VHD);
    found before anything was sent."""


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

    :raises SourceUnusable: if the file is gone, unreadable or not a regular file.
    :raises SourceChanged: if the file changed while it was read (nothing sent can be trusted).
    :raises UploadMismatch: if the blob's last 512 bytes or its Content-MD5, read back, are
        not what was sent.
    """
    with _opened(path) as fd:
        before = _identity(path, fd)
        scan = await asyncio.to_thread(DiskScan, path, fd)
        footer = await asyncio.to_thread(_tail, fd, scan.size)
        try:
            present = await _present_ranges(blobs, ref, scan.size, _fingerprint(fd))
            sent, skipped, md5 = await _send(
                blobs, ref, scan, present, concurrency, on_progress, content_md5
            )
        except Exception as exc:
            # A failure of the file's own making (it shrank, say) is reported as what it is.
            if isinstance(exc, SourceChanged) or _identity(path, fd) != before:
                raise SourceChanged(_changed(path)) from exc
            raise
        after_footer = await asyncio.to_thread(_tail, fd, scan.size)
        if _identity(path, fd) != before or after_footer != footer:
            raise SourceChanged(_changed(path))
    await _verify_blob(blobs, ref, scan.size, footer, md5)
    return UploadResult(sent=sent, skipped=skipped, md5=md5, footer=footer)


@contextlib.contextmanager
def _opened(path: Path) -> Iterator[int]:
    """The file, open for reading: a regular file (opened without blocking, so a FIFO put in its
    place cannot hang the upload)."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise SourceUnusable(f"the source file {str(path)!r} is gone; resubmit the image") from None
    except OSError as exc:
        raise SourceUnusable(
            f"the file {str(path)!r} cannot be read ({exc.strerror}); make it readable and retry"
            " the job"
        ) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise SourceUnusable(f"{str(path)!r} is no longer a regular file; resubmit the image")
        yield fd
    finally:
        os.close(fd)


def _identity(path: Path, fd: int) -> tuple[object, ...]:
    """What changes when the file is written to (size, times) or replaced (device, inode):
    of the file we hold open, and of whatever the path names now (``None`` if nothing)."""

    def key(st: os.stat_result) -> tuple[int, ...]:
        return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns

    try:
        named: tuple[int, ...] | None = key(os.stat(path))
    except OSError:
        named = None
    return key(os.fstat(fd)), named


def _tail(fd: int, size: int) -> bytes:
    length = min(FOOTER, size)
    return os.pread(fd, length, size - length)


def _changed(path: Path) -> str:
    return f"the file {str(path)!r} changed while it was uploaded; {RETRY_CHANGED}"


async def _send(
    blobs: BlobStore,
    ref: BlobRef,
    scan: DiskScan,
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
    return sent, skipped, hashing.result() if hashing is not None else None


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


def _next(chunks: Iterator[Chunk]) -> Chunk | None:
    return next(chunks, None)


def _fingerprint(fd: int) -> str:
    """Names the file's version: an upload resumes only into a blob begun from the same one."""
    st = os.fstat(fd)
    return f"{st.st_dev}-{st.st_ino}-{st.st_size}-{st.st_mtime_ns}"


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
    ctx: EngineContext, job: Job, row: SourceRow, on_progress: ProgressCallback | None = None
) -> SourceRow:
    """Upload the job's file into its tier-0 blob; ``row`` must be leased by this worker.

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
            path, result = await _upload_verified(ctx, job, row, progress)
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
    await _drop_converted(ctx, job, path)
    return final


async def _upload_verified(
    ctx: EngineContext, job: Job, row: SourceRow, progress: ProgressCallback
) -> tuple[Path, UploadResult]:
    path = await _source_file(ctx, job)
    await asyncio.to_thread(_check_footer, path, job)
    result = await upload_file(
        ctx.backend.blobs,
        row.blob,
        path,
        concurrency=ctx.settings.upload_concurrency,
        on_progress=progress,
        # A re-upload is hashed whatever the setting: it must be the disk uploaded first.
        content_md5=ctx.settings.content_md5 or bool(row.content_md5),
    )
    # What went up is the file as it was throughout (upload_file checked): judge that.
    problem = fixed_footer_problem(result.footer, job.size_bytes)
    if problem is not None:
        raise SourceChanged(
            f"the file {str(path)!r} is no longer a fixed VHD ({problem}); resubmit it"
        )
    if row.content_md5 and result.md5 is not None and result.md5.hex() != row.content_md5:
        raise SourceChanged(
            f"the file {str(path)!r} changed since the job was submitted (its MD5 is"
            f" {result.md5.hex()}, the first upload's was {row.content_md5}); resubmit it"
        )
    return path, result


def _check_footer(path: Path, job: Job) -> None:
    """Before sending anything: the file still ends in the footer of a fixed VHD of its size."""
    with _opened(path) as fd:
        size = os.fstat(fd).st_size
        problem = fixed_footer_problem(_tail(fd, size), size)
    if size != job.size_bytes:
        problem = f"it is {size} bytes, not the {job.size_bytes} bytes it had when submitted"
    if problem is not None:
        raise SourceUnusable(
            f"the file {str(path)!r} is no longer a fixed VHD ({problem}); resubmit it"
        )


async def _source_file(ctx: EngineContext, job: Job) -> Path:
    """The fixed VHD to upload: the job's file, or the user's file converted again when the
    converted one was deleted after an earlier upload."""
    path = Path(job.source_path)
    if path.is_file():
        return path
    original = Path(job.input_path) if job.input_path else None
    if original is None or not original.is_file():
        gone = job.input_path or job.source_path
        raise SourceUnusable(f"the source file {gone!r} is gone; resubmit the image")
    work_dir = ctx.config.work_dir()
    # The converted file's name holds the original's identity (path, size, modification time).
    if converted_path(original, work_dir).name != path.name:
        raise SourceUnusable(
            f"the file {job.input_path!r} changed since the job was submitted; resubmit it"
        )
    try:
        prepared = await asyncio.to_thread(prepare_image, original, work_dir)
    except InvalidInput as exc:
        raise SourceUnusable(f"converting it again failed: {str(exc).rstrip('.')}") from exc
    await ctx.log(
        job.id, LogLevel.INFO, Step.UPLOAD, f"converted {job.input_path!r} again to upload it"
    )
    return prepared.path


async def _discard(ctx: EngineContext, row: SourceRow, why: Exception) -> None:
    """Delete a blob whose content cannot be trusted, so that a retry does not resume into it."""
    if isinstance(why, SourceUnusable):
        return  # found before anything was sent
    with contextlib.suppress(NotFound):
        await ctx.backend.blobs.delete_blob(row.blob)


async def _drop_converted(ctx: EngineContext, job: Job, path: Path) -> None:
    """Delete the converted copy of the user's file once its upload is verified: only a file we
    made in the work folder, and only if no other unfinished job was submitted from it."""
    if not job.input_path or path == Path(job.input_path):
        return
    if path.parent.resolve() != ctx.config.work_dir().resolve():
        return
    if await _still_needed(ctx, job, path):
        return
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
        await ctx.log(
            job.id, LogLevel.INFO, Step.UPLOAD, f"deleted the converted copy {str(path)!r}"
        )


async def _still_needed(ctx: EngineContext, job: Job, path: Path) -> bool:
    """Whether another active job submitted from the same conversion has yet to upload it (a
    resubmission of the same file reuses its conversion)."""
    state = ctx.backend.state
    for other in await state.list_jobs():
        if other.id == job.id or other.state is not JobState.ACTIVE:
            continue
        if other.source_path != str(path):
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
