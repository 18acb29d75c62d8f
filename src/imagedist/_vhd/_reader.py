"""Readers giving a virtual disk's bytes and its data extents: raw files, fixed and dynamic VHDs.

The readers trust their inputs: :mod:`._inspect` validates a file before building one.
:meth:`DiskImage.read` uses positioned reads only, so it may be called from several threads.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from ._footer import BAT_UNUSED, SECTOR, DynamicHeader, Footer, bitmap_size

__all__ = ["CHUNK", "DiskImage", "DynamicVhd", "FixedVhd", "RawDisk", "allocated_ranges"]

MiB = 1024 * 1024
CHUNK = 4 * MiB  # read size when scanning and copying
GRAIN = 64 * 1024  # the finest granularity of the zero detection
_ZEROS = memoryview(bytes(CHUNK))

Mapping = tuple[int, int, int]  # (virtual offset, length, file offset)


def allocated_ranges(fd: int, start: int, end: int) -> Iterator[tuple[int, int]]:
    """(offset, length) of the file's data in [start, end), from SEEK_DATA/SEEK_HOLE.

    Where the system or file system cannot tell, the whole range counts as data.
    """
    if not hasattr(os, "SEEK_DATA"):
        yield start, end - start
        return
    pos = start
    while pos < end:
        try:
            data = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # nothing but a hole up to the end of the file
                return
            if pos == start:  # not supported here
                yield start, end - start
                return
            raise
        if data >= end:
            return
        hole = min(os.lseek(fd, data, os.SEEK_HOLE), end)
        yield data, hole - data
        pos = hole


def pread_exact(fd: int, length: int, offset: int) -> bytes:
    """``length`` bytes at ``offset``; zeros past the end of the file."""
    data = os.pread(fd, length, offset)
    while len(data) < length:
        more = os.pread(fd, length - len(data), offset + len(data))
        if not more:
            return data + bytes(length - len(data))
        data += more
    return data


def _pread_into(fd: int, view: memoryview, offset: int) -> None:
    done = 0
    while done < len(view):
        if hasattr(os, "preadv"):
            n = os.preadv(fd, [view[done:]], offset + done)
        else:  # pragma: no cover - macOS before 11
            data = os.pread(fd, len(view) - done, offset + done)
            n = len(data)
            view[done : done + n] = data
        if n == 0:
            view[done:] = _ZEROS[: len(view) - done]
            return
        done += n


def nonzero_runs(buf: bytearray, length: int) -> Iterator[tuple[int, int]]:
    """(start, end) of the runs of GRAIN-sized pieces of ``buf[:length]`` holding a non-zero byte."""
    if buf.startswith(_ZEROS[:length]):
        return
    run_start = -1
    for at in range(0, length, GRAIN):
        size = min(GRAIN, length - at)
        if buf.startswith(_ZEROS[:size], at):
            if run_start >= 0:
                yield run_start, at
                run_start = -1
        elif run_start < 0:
            run_start = at
    if run_start >= 0:
        yield run_start, length


class DiskImage:
    """A virtual disk: its size, its bytes, and where its data is.

    :ivar format: ``"raw"`` or ``"vhd"``.
    :ivar disk_type: ``None`` for raw, else ``"fixed"`` or ``"dynamic"``.
    :ivar virtual_size: the size of the disk the guest sees, in bytes.
    """

    format = "raw"
    disk_type: str | None = None

    def __init__(self, path: Path, virtual_size: int) -> None:
        self.path = path
        self.virtual_size = virtual_size
        self._fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))

    def fileno(self) -> int:
        return self._fd

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> DiskImage:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def read(self, offset: int, length: int) -> bytes:
        """``length`` bytes of the virtual disk at ``offset`` (zeros where nothing is stored)."""
        if offset < 0 or length < 0 or offset + length > self.virtual_size:
            raise ValueError(
                f"read of {length} at {offset} is outside the {self.virtual_size}-byte disk"
            )
        return self._read(offset, length) if length else b""

    def _read(self, offset: int, length: int) -> bytes:
        return pread_exact(self._fd, length, offset)

    def mappings(self) -> Iterator[Mapping]:
        """(virtual offset, length, file offset) of each stored range, in disk order."""
        for offset, length in allocated_ranges(self._fd, 0, self.virtual_size):
            yield offset, length, offset

    def allocated_bytes(self) -> int:
        """Bytes of the virtual disk that the file stores (zeros included)."""
        return sum(length for _, length, _ in self.mappings())

    def iter_data(self) -> Iterator[tuple[int, memoryview]]:
        """(offset, bytes) of the disk's non-zero data, in order, in pieces of at most 4 MiB.

        The view is only valid until the next item: copy it to keep it.
        """
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        for virtual, length, at in self.mappings():
            for done in range(0, length, CHUNK):
                size = min(CHUNK, length - done)
                _pread_into(self._fd, view[:size], at + done)
                for start, end in nonzero_runs(buf, size):
                    yield virtual + done + start, view[start:end]

    def iter_data_extents(self) -> Iterator[tuple[int, int]]:
        """(offset, length) of each range of non-zero data, merged, in order."""
        current: tuple[int, int] | None = None
        for offset, data in self.iter_data():
            if current is not None and current[0] + current[1] == offset:
                current = (current[0], current[1] + len(data))
                continue
            if current is not None:
                yield current
            current = (offset, len(data))
        if current is not None:
            yield current


class RawDisk(DiskImage):
    """A raw disk image: the file is the disk."""


class FixedVhd(DiskImage):
    """A fixed VHD: the disk's bytes, then the 512-byte footer."""

    format = "vhd"
    disk_type = "fixed"

    def __init__(self, path: Path, footer: Footer) -> None:
        super().__init__(path, footer.current_size)
        self.footer = footer


class DynamicVhd(DiskImage):
    """A dynamic VHD: blocks stored where the BAT says, each behind its sector bitmap."""

    format = "vhd"
    disk_type = "dynamic"

    def __init__(
        self, path: Path, footer: Footer, header: DynamicHeader, bat: tuple[int, ...]
    ) -> None:
        super().__init__(path, footer.current_size)
        self.footer = footer
        self.header = header
        self.bat = bat
        self.block_size = header.block_size
        self._bitmap_size = bitmap_size(header.block_size)

    def _block_mappings(self, index: int) -> Iterator[Mapping]:
        entry = self.bat[index]
        start = index * self.block_size
        if entry == BAT_UNUSED or start >= self.virtual_size:
            return
        sectors = min(self.block_size, self.virtual_size - start) // SECTOR
        data_at = entry * SECTOR + self._bitmap_size
        bitmap = pread_exact(self._fd, -(-sectors // 8), entry * SECTOR)
        if bitmap.count(0xFF) * 8 >= sectors:
            yield start, sectors * SECTOR, data_at
            return
        bits = bin(int.from_bytes(bitmap, "big") | 1 << len(bitmap) * 8)[3 : 3 + sectors]
        for run in re.finditer("1+", bits):  # bit 7 of byte 0 is the block's first sector
            yield (
                start + run.start() * SECTOR,
                (run.end() - run.start()) * SECTOR,
                data_at + run.start() * SECTOR,
            )

    def mappings(self) -> Iterator[Mapping]:
        for index in range(len(self.bat)):
            yield from self._block_mappings(index)

    def _read(self, offset: int, length: int) -> bytes:
        out = bytearray(length)
        end = offset + length
        for index in range(offset // self.block_size, (end - 1) // self.block_size + 1):
            for virtual, size, at in self._block_mappings(index):
                lo, hi = max(virtual, offset), min(virtual + size, end)
                if lo < hi:
                    out[lo - offset : hi - offset] = pread_exact(
                        self._fd, hi - lo, at + lo - virtual
                    )
        return bytes(out)
