"""The upload: only non-zero pages, the whole disk's MD5 as Content-MD5, and resumption that
sends only what is missing."""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
import time
from collections.abc import Generator
from pathlib import Path

import pytest

from imagedist._backends.local.blobs import LocalBlobStore
from imagedist._disks import open_disk_file
from imagedist._disks.pages import CHUNK, DiskScan
from imagedist._domain import BlobRef
from imagedist._engine._upload import UploadResult, upload_file
from imagedist.abc import BlobProperties, BlobStore, DiskReading, SystemClock

MIB = 1024 * 1024


class Killed(Exception):
    """Stands for the process dying: no part of imagedist handles it."""


class CountingStore(LocalBlobStore):
    """Counts the bytes written, and dies (like a killed process) after ``die_after`` writes."""

    def __init__(self, root: Path, die_after: int | None = None) -> None:
        super().__init__(root, SystemClock())
        self.sent = 0
        self.writes = 0
        self.die_after = die_after

    async def write_pages(self, ref: BlobRef, offset: int, data: bytes) -> None:
        if self.die_after is not None and self.writes >= self.die_after:
            raise Killed
        self.writes += 1
        await super().write_pages(ref, offset, data)
        self.sent += len(data)


def _disk(path: Path, size_mib: int, data_at_mib: list[int]) -> bytes:
    with path.open("wb") as file:
        file.truncate(size_mib * MIB)
        for at in data_at_mib:
            file.seek(at * MIB)
            file.write(os.urandom(MIB))
            file.write(bytes(MIB))  # a zero MiB inside the extent: must not be sent either
    return path.read_bytes()


async def _ready(store: BlobStore, ref: BlobRef) -> None:
    await store.ensure_container(ref.account, ref.container)


async def _upload(store: BlobStore, ref: BlobRef, path: Path, concurrency: int) -> UploadResult:
    with open_disk_file(path) as disk:
        return await upload_file(store, ref, disk, concurrency=concurrency)


def test_only_non_zero_pages_are_sent_and_md5_covers_the_disk(tmp_path: Path) -> None:
    content = _disk(tmp_path / "disk.raw", 64, [0, 20, 40, 62])
    store = CountingStore(tmp_path / "blobs")
    ref = BlobRef("acct", "c", "disk.vhd")

    async def main() -> tuple[int, bytes | None, bytes]:
        await _ready(store, ref)
        result = await _upload(store, ref, tmp_path / "disk.raw", 4)
        props = await store.get_properties(ref)
        assert result.md5 == props.content_md5
        return result.sent, props.content_md5, await store.read(ref, 0, len(content))

    sent, md5, stored = asyncio.run(main())
    assert sent == 4 * MIB  # 4 MiB of data; 60 MiB of holes and zeros never sent
    assert md5 == hashlib.md5(content).digest()
    assert stored == content


@pytest.mark.parametrize("die_after", [1, 5, 9])
def test_a_killed_upload_resumes_sending_only_what_is_missing(
    tmp_path: Path, die_after: int
) -> None:
    content = _disk(tmp_path / "disk.raw", 48, list(range(0, 46, 4)))  # 12 MiB of data
    ref = BlobRef("acct", "c", "disk.vhd")
    first = CountingStore(tmp_path / "blobs", die_after=die_after)

    async def interrupted() -> None:
        await _ready(first, ref)
        await _upload(first, ref, tmp_path / "disk.raw", 3)

    with pytest.raises(Killed):
        asyncio.run(interrupted())
    assert first.writes == die_after and first.sent <= die_after * MIB  # 1 MiB per data run
    second = CountingStore(tmp_path / "blobs")

    async def resumed() -> tuple[UploadResult, BlobProperties, bytes]:
        result = await _upload(second, ref, tmp_path / "disk.raw", 3)
        return result, await second.get_properties(ref), await second.read(ref, 0, len(content))

    result, props, stored = asyncio.run(resumed())
    assert result.skipped >= first.sent  # what the first run wrote was not sent again
    assert result.skipped > 0 or die_after <= 3  # (up to 3 writes were in flight at the kill)
    assert second.sent + result.skipped == 12 * MIB
    assert second.sent <= 12 * MIB - first.sent
    assert props.content_md5 == hashlib.md5(content).digest()
    assert stored == content


def test_scan_without_seek_data_finds_the_same_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    content = _disk(tmp_path / "disk.raw", 16, [3, 9])
    with_holes = [(offset, len(data)) for offset, data in DiskScan(tmp_path / "disk.raw").chunks()]
    monkeypatch.delattr(os, "SEEK_DATA")
    scan = DiskScan(tmp_path / "disk.raw")
    without = [(offset, len(data)) for offset, data in scan.chunks()]
    assert scan.hash_all() == hashlib.md5(content).digest()
    assert {o // CHUNK for o, _ in without} == {o // CHUNK for o, _ in with_holes}
    assert sum(n for _, n in without) <= 2 * CHUNK


class SlowDisk(DiskReading):
    """A disk in memory whose every read takes a while, in the thread it runs in; it counts the
    reads made (or still running) once it was closed, which a closed descriptor would make."""

    def __init__(self, data: bytes) -> None:
        self.name = "slow"
        self.size = self.data_bytes = len(data)
        self.data = data
        self.reads = 0
        self.reads_after_close = 0
        self.closed = False

    def _read(self, offset: int) -> bytes:
        self.reads += 1
        time.sleep(0.02)
        if self.closed:
            self.reads_after_close += 1
        return self.data[offset : offset + MIB]

    def fingerprint(self) -> str:
        return "slow"

    def footer(self) -> bytes:
        return self.data[-512:]

    def footer_problem(self, footer: bytes) -> str | None:
        return None

    def chunks(self) -> Generator[tuple[int, bytes], None, None]:
        for offset in range(0, self.size, MIB):
            yield offset, self._read(offset)

    def md5(self, stop: threading.Event | None = None) -> bytes:
        digest = hashlib.md5()
        for offset in range(0, self.size, MIB):
            if stop is not None and stop.is_set():
                return b""
            digest.update(self._read(offset))
        return digest.digest()

    def unchanged(self) -> bool:
        return True

    def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize("content_md5", [True, False])
def test_a_cancelled_upload_ends_cancelled_and_stops_reading_the_file(
    tmp_path: Path, content_md5: bool
) -> None:
    """A worker stopped half-way through an upload (Ctrl-C, a lost lease) ends with the
    cancellation itself, not an error about the reads it interrupted, and once it has returned
    no thread reads the file any more: it is closed next."""
    disk = SlowDisk(os.urandom(64 * MIB))
    store = LocalBlobStore(tmp_path / "blobs", SystemClock())
    ref = BlobRef("acct", "c", "disk.vhd")

    async def main() -> None:
        await _ready(store, ref)
        upload = asyncio.create_task(upload_file(store, ref, disk, content_md5=content_md5))
        while disk.reads < 4:
            await asyncio.sleep(0.005)
        upload.cancel()
        try:
            await upload
        finally:
            disk.close()

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(main())
    reads = disk.reads
    time.sleep(0.2)  # a thread left reading would make ten more reads meanwhile
    assert disk.reads == reads
    assert disk.reads_after_close == 0
    assert reads < 64  # it stopped, and did not read to the end first
