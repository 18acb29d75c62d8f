"""Reading a disk file for upload: where its data is, the data itself, and the MD5 of it all.

Holes are found with SEEK_DATA/SEEK_HOLE where the filesystem supports it (never read), and
all-zero runs inside data extents are recognised with a memcmp against a zero buffer. The MD5
covers the whole disk, holes included, computed beside the upload in the same read of the data
(Add-AzVhd read the whole file a second time just for it).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .._exceptions import SourceChanged

__all__ = ["CHUNK", "DiskScan", "data_extents"]

CHUNK = 4 * 1024 * 1024  # Azure's largest Put Page
ZEROS = bytes(CHUNK)
# Zeros inside data are skipped at this granularity (freed blocks of a used disk).
GRAIN = 64 * 1024
# Extents closer than this are read as one: a few KiB of zeros cost less than another request.
COALESCE = 64 * 1024


def _pread_exact(fd: int, length: int, offset: int) -> bytes:
    """``length`` bytes at ``offset``; a short read means the file shrank while we read it."""
    data = os.pread(fd, length, offset)
    while len(data) < length:
        more = os.pread(fd, length - len(data), offset + len(data))
        if not more:
            raise SourceChanged(
                f"the file ended at {offset + len(data)} bytes, before the {length} bytes at"
                f" offset {offset} it held when the upload started"
            )
        data += more
    return data


def data_extents(fd: int, size: int) -> list[tuple[int, int]]:
    """``(start, end)`` of the regions that may hold data; the whole file without SEEK_DATA."""
    if not hasattr(os, "SEEK_DATA"):
        return [(0, size)] if size else []
    extents: list[tuple[int, int]] = []
    offset = 0
    while offset < size:
        try:
            start = os.lseek(fd, offset, os.SEEK_DATA)
        except OSError:  # ENXIO: nothing but a hole from here
            break
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        if extents and start - extents[-1][1] <= COALESCE:
            extents[-1] = (extents[-1][0], end)
        else:
            extents.append((start, end))
        offset = end
    return extents


def _non_zero_runs(offset: int, data: bytes) -> Iterator[tuple[int, bytes]]:
    """The runs of ``data`` that hold a non-zero byte, at :data:`GRAIN` granularity."""
    view, start = memoryview(data), None
    zero = ZEROS[:GRAIN]
    for at in range(0, len(data), GRAIN):
        empty = view[at : at + GRAIN] == zero[: min(GRAIN, len(data) - at)]
        if empty and start is not None:
            yield offset + start, data[start:at]
            start = None
        elif not empty and start is None:
            start = at
    if start is not None:
        yield offset + start, data[start:]


@dataclass
class DiskScan:
    """A file's data extents, its non-zero runs (:meth:`chunks`) and its MD5 (:meth:`hash_all`).

    Given ``fd`` (owned by the caller), every read goes through it: the upload then reads one
    file from start to end even if the path is replaced or removed meanwhile.
    """

    path: Path
    fd: int | None = None
    size: int = 0
    data_bytes: int = 0  # bytes inside data extents (an upper bound of what will be sent)
    md5: hashlib._Hash = field(default_factory=hashlib.md5)
    _extents: list[tuple[int, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        with self._reading() as fd:
            self.size = os.fstat(fd).st_size
            self._extents = data_extents(fd, self.size)
        self.data_bytes = sum(end - start for start, end in self._extents)

    @contextlib.contextmanager
    def _reading(self) -> Iterator[int]:
        if self.fd is not None:
            yield self.fd
            return
        with self.path.open("rb", buffering=0) as file:
            yield file.fileno()

    def chunks(self) -> Generator[tuple[int, bytes], None, None]:
        """``(offset, data)`` of every run holding a non-zero byte, in order."""
        with self._reading() as fd:
            for start, end in self._extents:
                for offset in range(start - start % CHUNK, end, CHUNK):
                    lo, hi = max(offset, start), min(offset + CHUNK, end)
                    data = _pread_exact(fd, hi - lo, lo)
                    if data != ZEROS[: len(data)]:
                        yield from _non_zero_runs(lo, data)

    def hash_all(self, stop: threading.Event | None = None) -> bytes:
        """The MD5 of the whole file: data read from the extents, holes hashed as zeros; ``b""``
        if ``stop`` was set first (it is looked at before every read).

        Meant for its own thread, beside :meth:`chunks`: hashing is the slowest part of an
        upload (an 8 GiB disk is 8 GiB to hash whatever it holds), so it must not hold back
        the data on its way out. The second read of the data comes from the page cache.
        """
        stop = stop or threading.Event()
        hashed = 0
        with self._reading() as fd:
            for start, end in self._extents:
                if not self._hash_zeros(start - hashed, stop):
                    return b""
                for offset in range(start, end, CHUNK):
                    if stop.is_set():
                        return b""
                    self.md5.update(_pread_exact(fd, min(CHUNK, end - offset), offset))
                hashed = end
        if not self._hash_zeros(self.size - hashed, stop):
            return b""
        return self.md5.digest()

    def _hash_zeros(self, length: int, stop: threading.Event) -> bool:
        """Hash ``length`` zero bytes; False if stopped first."""
        view = memoryview(ZEROS)
        while length > 0:
            if stop.is_set():
                return False
            step = min(length, CHUNK)
            self.md5.update(view[:step])
            length -= step
        return True
