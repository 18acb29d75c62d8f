"""Contract of the DiskSource port, seen from the engine: tier 0 is filled from whatever source
the job's factory gives, never from the file or the disk behind the engine's back.

Each test plugs a fake source into ``Imagedist(..., disk_sources=...)`` and runs the engine's
tier-0 step (``Imagedist.upload``): an upload sends the fake's bytes (the file the job was
submitted from is gone by then), verifies them and keeps their MD5; a change the fake reports
fails the upload and deletes the blob; a managed disk is granted once and revoked once.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Generator
from pathlib import Path

from imagedist import Imagedist, OsType
from imagedist._backends.local.images import LocalImageService
from imagedist._config import load_config
from imagedist._disks import ManagedDiskSource, open_disk_file
from imagedist._domain import BlobRef, Job, SecretUrl, SourceKind, SourceRow, SourceState
from imagedist._engine._upload import upload_file
from imagedist._vhd import convert_to_fixed_vhd, fixed_footer_problem
from imagedist.abc import CopySource, DiskReading, DiskSource, DiskSources, FileSource

from helpers import make_disk, run, write_config

MIB = 1024 * 1024
DISK_ID = "/subscriptions/sub-a/resourceGroups/disks/providers/Microsoft.Compute/disks/golden"
DISK_BLOB = BlobRef("diskstore", "disks", "golden.vhd")


class MemoryDisk(DiskReading):
    """A disk held in memory; ``changes`` makes it report a change after the upload."""

    def __init__(self, data: bytes, *, changes: bool = False) -> None:
        self.name = "memory"
        self.size = self.data_bytes = len(data)
        self.data = data
        self.changes = changes
        self.closed = False

    def fingerprint(self) -> str:
        return hashlib.md5(self.data).hexdigest()

    def footer(self) -> bytes:
        return self.data[-512:]

    def footer_problem(self, footer: bytes) -> str | None:
        return fixed_footer_problem(footer, self.size)

    def chunks(self) -> Generator[tuple[int, bytes], None, None]:
        for offset in range(0, self.size, MIB):
            piece = self.data[offset : offset + MIB]
            if piece.strip(b"\0"):
                yield offset, piece

    def md5(self, stop: threading.Event | None = None) -> bytes:
        return b"" if stop is not None and stop.is_set() else hashlib.md5(self.data).digest()

    def unchanged(self) -> bool:
        return not self.changes

    def close(self) -> None:
        self.closed = True


class MemorySource(FileSource):
    def __init__(self, disk: MemoryDisk) -> None:
        self.disk = disk

    @property
    def converted_again(self) -> bool:
        return False

    async def open(self) -> DiskReading:
        return self.disk

    def converted_copy(self) -> str | None:
        return None

    def delete_converted_copy(self) -> bool:
        return False


class CountingDiskSource(CopySource):
    """A managed disk through the real adapter, counting its grants and revocations."""

    def __init__(self, inner: ManagedDiskSource) -> None:
        self.inner = inner
        self.grants = self.revokes = 0

    async def grant_read(self, seconds: int) -> SecretUrl:
        self.grants += 1
        return await self.inner.grant_read(seconds)

    async def revoke(self) -> None:
        self.revokes += 1
        await self.inner.revoke()


def _fixed_vhd(tmp_path: Path) -> Path:
    vhd = tmp_path / "golden.vhd"
    convert_to_fixed_vhd(make_disk(tmp_path / "golden.raw"), vhd)
    return vhd


def _only(source: DiskSource) -> DiskSources:
    def source_of(job: Job) -> DiskSource:
        return source

    return source_of


async def _tier0(app: Imagedist, job: Job) -> SourceRow:
    sources = await app.ctx.backend.state.list_sources(job.id)
    return next(s for s in sources if s.kind is SourceKind.TIER0)


def _upload_from(tmp_path: Path, *, changes: bool) -> tuple[MemoryDisk, SourceRow, bytes | None]:
    """Submit a real file, delete it, and upload tier 0 from a fake disk of its size holding
    other data: (the fake, the tier-0 row, the blob's bytes or None if it is gone)."""
    vhd = _fixed_vhd(tmp_path)
    data = bytearray(vhd.read_bytes())
    data[:4] = b"fake"  # not what the submitted file holds
    disk = MemoryDisk(bytes(data), changes=changes)
    config = load_config(write_config(tmp_path))

    async def body() -> tuple[SourceRow, bytes | None]:
        async with Imagedist(config, disk_sources=_only(MemorySource(disk))) as app:
            job = await app.submit(vhd, "golden", OsType.LINUX)
            vhd.unlink()  # the engine must not need it
            row = await app.upload(job.id)
            blobs = app.ctx.backend.blobs
            names = await blobs.list_blobs(row.blob.account, row.blob.container)
            if row.blob.name not in names:
                return row, None
            return row, await blobs.read(row.blob, 0, disk.size)

    return disk, *run(body())


def test_an_upload_sends_the_sources_bytes_verified(tmp_path: Path) -> None:
    disk, row, stored = _upload_from(tmp_path, changes=False)
    assert row.state is SourceState.READY, row.error
    assert stored == disk.data
    assert row.content_md5 == hashlib.md5(disk.data).hexdigest()
    assert disk.closed


def test_a_change_the_source_reports_fails_the_upload_and_drops_the_blob(tmp_path: Path) -> None:
    _, row, stored = _upload_from(tmp_path, changes=True)
    assert row.state is SourceState.FAILED
    assert "changed while it was uploaded" in row.error
    assert stored is None


def test_a_managed_disk_is_granted_once_and_revoked_once(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path))
    vhd = _fixed_vhd(tmp_path)
    counting: list[CountingDiskSource] = []

    def sources(images: LocalImageService) -> DiskSources:
        def source_of(job: Job) -> DiskSource:
            counting.append(CountingDiskSource(ManagedDiskSource(images, job.source_disk)))
            return counting[-1]

        return source_of

    async def body() -> SourceRow:
        async with Imagedist(config) as app:
            images = app.ctx.backend.images
            assert isinstance(images, LocalImageService)
            blobs = app.ctx.backend.blobs
            await blobs.ensure_container(DISK_BLOB.account, DISK_BLOB.container)
            with open_disk_file(vhd) as disk:
                await upload_file(blobs, DISK_BLOB, disk)
            images.register_disk(DISK_ID, DISK_BLOB, vhd.stat().st_size - 512)
            job = await app.submit_disk(DISK_ID, "golden", OsType.LINUX)
            app.ctx.disk_sources = sources(images)
            return await app.upload(job.id)

    row = run(body())
    assert row.state is SourceState.READY, row.error
    assert [(c.grants, c.revokes) for c in counting] == [(1, 1)]
