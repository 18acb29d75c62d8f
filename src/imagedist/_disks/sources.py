"""The disk-source adapters: a job's disk file on this machine, or an Azure managed disk.

The engine reads neither itself (issue 9): it asks the job's :class:`~imagedist.abc.DiskSource`
for what the tier-0 step needs. A file is read through one descriptor opened without blocking
(a FIFO put in its place cannot hang the upload), so the upload reads one file from start to end
even if its path is replaced or removed meanwhile; a managed disk is read through an access URL
the image service grants.
"""

from __future__ import annotations

import asyncio
import os
import stat
import threading
from collections.abc import Generator
from pathlib import Path

from .._domain import Job, SecretUrl
from .._exceptions import InvalidInput, SourceUnusable
from .._vhd import converted_path, fixed_footer_problem, prepare_image
from ..abc import CopySource, DiskReading, DiskSource, DiskSources, FileSource, ImageService
from .pages import DiskScan

__all__ = [
    "LocalDiskReading",
    "LocalFileSource",
    "ManagedDiskSource",
    "disk_sources",
    "open_disk_file",
]

FOOTER = 512


def disk_sources(images: ImageService, work_dir: Path) -> DiskSources:
    """The one factory of tier-0 sources: a job from a managed disk copies it, any other job
    uploads its file (converted again into ``work_dir`` if need be)."""

    def source_of(job: Job) -> DiskSource:
        if job.source_disk:
            return ManagedDiskSource(images, job.source_disk)
        return LocalFileSource(Path(job.source_path), job.input_path, work_dir)

    return source_of


class ManagedDiskSource(CopySource):
    """An Azure managed disk, through the image service's grant and revocation of read access."""

    def __init__(self, images: ImageService, disk_id: str) -> None:
        self._images = images
        self._disk_id = disk_id

    async def grant_read(self, seconds: int) -> SecretUrl:
        return await self._images.grant_disk_read(self._disk_id, seconds)

    async def revoke(self) -> None:
        await self._images.revoke_disk_read(self._disk_id)


class LocalFileSource(FileSource):
    """The job's fixed VHD on this machine; when it was a converted copy of the user's file and
    has been deleted since an earlier upload, the user's file is converted again into
    ``work_dir``."""

    def __init__(self, path: Path, original: str, work_dir: Path) -> None:
        self._path = path
        self._original_name = original  # "" when the user's file is the one uploaded
        self._original = Path(original) if original else None
        self._work_dir = work_dir
        self._read: Path | None = None  # the file open() read
        self._converted_again = False

    @property
    def converted_again(self) -> bool:
        return self._converted_again

    async def open(self) -> DiskReading:
        path = await self._locate()
        self._read = path
        return await asyncio.to_thread(open_disk_file, path)

    async def _locate(self) -> Path:
        if self._path.is_file():
            return self._path
        original = self._original
        if original is None or not original.is_file():
            gone = self._original_name or str(self._path)
            raise SourceUnusable(f"the source file {gone!r} is gone; resubmit the image")
        # The converted file's name holds the original's identity (path, size, modification time).
        if converted_path(original, self._work_dir).name != self._path.name:
            raise SourceUnusable(
                f"the file {self._original_name!r} changed since the job was submitted; resubmit it"
            )
        try:
            prepared = await asyncio.to_thread(prepare_image, original, self._work_dir)
        except InvalidInput as exc:
            raise SourceUnusable(f"converting it again failed: {str(exc).rstrip('.')}") from exc
        self._converted_again = True
        return prepared.path

    def converted_copy(self) -> str | None:
        path = self._read
        if path is None or self._original is None or path == self._original:
            return None
        if path.parent.resolve() != self._work_dir.resolve():
            return None  # not a file this tool made
        return str(path)

    def delete_converted_copy(self) -> bool:
        copy = self.converted_copy()
        if copy is None:
            return False
        try:
            Path(copy).unlink()
        except FileNotFoundError:
            return False
        return True


def open_disk_file(path: Path) -> LocalDiskReading:
    """``path``, open for one upload and scanned for its data. Blocking.

    :raises SourceUnusable: if it is gone, unreadable or not a regular file.
    """
    fd = _open_regular(path)
    try:
        return LocalDiskReading(path, fd)
    except BaseException:
        os.close(fd)
        raise


class LocalDiskReading(DiskReading):
    """A file read through one descriptor (owned here): its data extents, non-zero runs and MD5
    come from :class:`~imagedist._disks.pages.DiskScan`."""

    def __init__(self, path: Path, fd: int) -> None:
        self.name = str(path)
        self._path = path
        self._fd = fd
        self._opened_as = _identity(path, fd)
        self._scan = DiskScan(path, fd)
        self.size = self._scan.size
        self.data_bytes = self._scan.data_bytes

    def fingerprint(self) -> str:
        st = os.fstat(self._fd)
        return f"{st.st_dev}-{st.st_ino}-{st.st_size}-{st.st_mtime_ns}"

    def footer(self) -> bytes:
        length = min(FOOTER, self.size)
        return os.pread(self._fd, length, self.size - length)

    def footer_problem(self, footer: bytes) -> str | None:
        return fixed_footer_problem(footer, self.size)

    def chunks(self) -> Generator[tuple[int, bytes], None, None]:
        return self._scan.chunks()

    def md5(self, stop: threading.Event | None = None) -> bytes:
        return self._scan.hash_all(stop)

    def unchanged(self) -> bool:
        return _identity(self._path, self._fd) == self._opened_as

    def close(self) -> None:
        os.close(self._fd)


def _open_regular(path: Path) -> int:
    """A descriptor of ``path``, a regular file, opened without blocking."""
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
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise SourceUnusable(f"{str(path)!r} is no longer a regular file; resubmit the image")
    return fd


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
