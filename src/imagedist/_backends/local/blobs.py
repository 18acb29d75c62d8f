"""Page blobs on the local filesystem, with Azure's asynchronous server-side copy.

Layout under ``root``::

    <account>/<container>/<blob name>              the data, a sparse file
    .meta/<account>/<container>/<blob name>.json   metadata and copy status (the sidecar)
    .meta/<account>/<container>/<blob name>.lock   flock'ed while the sidecar changes

A copy is only a record in the destination's sidecar. Whoever reads the destination's properties
next, in any process, advances it under the lock, so a copy outlives the process that started it.

A copy may also start from a URL, the way Azure copies a managed disk from its access SAS: the local
image service hands out ``local://<account>/<container>/<blob>?sig=<token>`` for a disk whose bytes
live in that blob, and ``grant_live`` (wired to the image service) says whether a token is granted.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import json
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..._domain import BlobRef, SecretUrl
from ..._exceptions import AuthFailed, Conflict, NotFound, OperationFailed
from ...abc import BlobProperties, BlobStore, Clock, CopyStatus
from .images import parse_local_url, token_digest

__all__ = ["LocalBlobStore"]

PAGE = 512
_CHUNK = 4 * 1024 * 1024
_META = ".meta"
# What an injected copy failure says (``[local] fail_copies_to_accounts``); tests replace it to
# plant text, such as a SAS, in the error the way a real platform's message might carry it.
INJECTED_COPY_FAILURE = "injected copy failure into account '{account}'"
# lseek(SEEK_DATA) fails with these where the filesystem cannot report holes.
_NO_SEEK_DATA = frozenset({errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP})

Sidecar = dict[str, Any]


class LocalBlobStore(BlobStore):
    """Page blobs as sparse files under ``root``; see the module docstring for the layout.

    :param root: folder holding every account.
    :param clock: the time source; copy bandwidth is measured in its seconds.
    :param copy_bandwidth: bytes per clock second a copy advances; ``0`` finishes it on one poll.
    :param fail_copies_to_accounts: copies into these accounts fail on their first poll.
    :param grant_live: whether the access whose token has a given SHA-256 is granted now to
        the disk held in a blob (the local image service's ``disk_grant_live``); None accepts
        any ``local://`` URL that carries a ``sig``. Asked when a copy from a URL starts, as
        Azure checks the SAS of a copy source, and each time the copy advances: like Azure's,
        a copy whose disk access is revoked while it runs fails.
    """

    def __init__(
        self,
        root: Path,
        clock: Clock,
        *,
        copy_bandwidth: float = 0.0,
        fail_copies_to_accounts: frozenset[str] = frozenset(),
        grant_live: Callable[[BlobRef, str], bool] | None = None,
    ) -> None:
        self._root = Path(root)
        self._clock = clock
        self._bandwidth = copy_bandwidth
        self._fail_accounts = fail_copies_to_accounts
        self._grant_live = grant_live

    def set_grant_check(self, grant_live: Callable[[BlobRef, str], bool] | None) -> None:
        """Set the ``grant_live`` hook after construction (the image service is built after the
        blob store, from it)."""
        self._grant_live = grant_live

    # -- the port ---------------------------------------------------------------------------------

    async def ensure_container(self, account: str, container: str) -> None:
        _check_names(account, container)
        for base in (self._root, self._root / _META):
            await asyncio.to_thread((base / account / container).mkdir, parents=True, exist_ok=True)

    async def container_exists(self, account: str, container: str) -> bool:
        def check() -> bool:
            if not (self._root / account).is_dir():
                raise NotFound(
                    f"Storage account {account!r} does not exist; run `imagedist setup`."
                )
            return (self._root / account / container).is_dir()

        return await asyncio.to_thread(check)

    async def create_page_blob(self, ref: BlobRef, size: int, *, overwrite: bool = False) -> None:
        await asyncio.to_thread(self._create, ref, size, overwrite)

    async def write_pages(self, ref: BlobRef, offset: int, data: bytes) -> None:
        await asyncio.to_thread(self._write, ref, offset, data)

    async def read(self, ref: BlobRef, offset: int, length: int) -> bytes:
        return await asyncio.to_thread(self._read, ref, offset, length)

    async def page_ranges(self, ref: BlobRef) -> list[tuple[int, int]]:
        return await asyncio.to_thread(self._page_ranges, ref)

    async def get_properties(self, ref: BlobRef) -> BlobProperties:
        return await asyncio.to_thread(self._properties, ref)

    async def set_metadata(self, ref: BlobRef, metadata: dict[str, str]) -> None:
        await asyncio.to_thread(self._set_metadata, ref, dict(metadata))

    async def set_content_md5(self, ref: BlobRef, md5: bytes) -> None:
        await asyncio.to_thread(self._set_content_md5, ref, md5)

    async def start_copy(self, source: BlobRef, dest: BlobRef) -> str:
        return await asyncio.to_thread(self._start_copy, source, dest)

    async def start_copy_from_url(self, source: SecretUrl, dest: BlobRef) -> str:
        return await asyncio.to_thread(self._start_copy_from_url, source, dest)

    #: Azure's Put Page From URL limit, kept so a local run makes the calls an Azure one makes.
    copy_range_bytes = _CHUNK

    async def copy_range(self, source: BlobRef, dest: BlobRef, offset: int, length: int) -> None:
        # One thread per call: the engine runs many at once, so ranges move with parallel I/O.
        await asyncio.to_thread(self._copy_range, source, dest, offset, length)

    async def abort_copy(self, dest: BlobRef, copy_id: str) -> None:
        await asyncio.to_thread(self._abort_copy, dest, copy_id)

    async def delete_blob(self, ref: BlobRef) -> bool:
        return await asyncio.to_thread(self._delete, ref)

    async def list_blobs(self, account: str, container: str, prefix: str = "") -> list[str]:
        return await asyncio.to_thread(self._list, account, container, prefix)

    # -- blocking implementations -----------------------------------------------------------------

    def _create(self, ref: BlobRef, size: int, overwrite: bool) -> None:
        if size <= 0 or size % PAGE:
            raise ValueError(f"page blob size must be a positive multiple of {PAGE}, not {size}")
        path = self._data(ref)
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._locked(ref):
            if path.is_file() and not overwrite:
                if path.stat().st_size == size:
                    return  # same size: keep the pages written so far, so an upload can resume
                raise Conflict(f"blob '{ref}' exists with size {path.stat().st_size}, not {size}")
            with open(path, "wb") as f:  # "wb" drops old data; truncate leaves one big hole
                f.truncate(size)
            self._save(ref, _new_sidecar())

    def _write(self, ref: BlobRef, offset: int, data: bytes) -> None:
        _check_range(offset, len(data), self._size(ref), aligned=True)
        with open(self._data(ref), "r+b") as f:
            f.seek(offset)
            f.write(data)

    def _read(self, ref: BlobRef, offset: int, length: int) -> bytes:
        _check_range(offset, length, self._size(ref), aligned=False)
        with open(self._data(ref), "rb") as f:
            f.seek(offset)
            return f.read(length)

    def _page_ranges(self, ref: BlobRef) -> list[tuple[int, int]]:
        size = self._size(ref)
        with open(self._data(ref), "rb") as f:
            return _extents(f.fileno(), size)

    def _properties(self, ref: BlobRef) -> BlobProperties:
        self._size(ref)
        side = self._load(ref)
        if _pending(side):
            with self._locked(ref):
                self._size(ref)  # it may have been deleted while we waited for the lock
                side = self._load(ref)
                if _pending(side):
                    self._advance(ref, side["copy"])
                    self._save(ref, side)
        return _to_properties(ref, self._size(ref), side)

    def _set_content_md5(self, ref: BlobRef, md5: bytes) -> None:
        with self._locked(ref):
            self._size(ref)
            side = self._load(ref)
            side["content_md5"] = md5.hex()
            self._save(ref, side)

    def _set_metadata(self, ref: BlobRef, metadata: dict[str, str]) -> None:
        with self._locked(ref):
            self._size(ref)
            side = self._load(ref)
            side["metadata"] = metadata
            self._save(ref, side)

    def _start_copy_from_url(self, source: SecretUrl, dest: BlobRef) -> str:
        # Messages name the destination only: the URL carries the token.
        url = source.reveal()
        parsed = parse_local_url(url)
        if parsed is None:
            raise OperationFailed(
                f"start a copy into blob '{dest}' failed: the copy source is not a local:// "
                "access URL with a sig",
                code="CannotVerifyCopySource",
            )
        blob, token = parsed
        grant = token_digest(token)
        if self._grant_live is not None and not self._grant_live(blob, grant):
            raise AuthFailed(
                f"start a copy into blob '{dest}' failed: the copy source's access was not "
                "granted, has expired or was revoked (CannotVerifyCopySource)"
            )
        try:
            self._size(blob)
        except (NotFound, ValueError):
            raise NotFound(
                f"start a copy into blob '{dest}' failed: the copy source does not exist"
            ) from None
        return self._start_copy(blob, dest, grant)

    def _start_copy(self, source: BlobRef, dest: BlobRef, grant: str = "") -> str:
        if source == dest:
            raise ValueError(f"cannot copy blob '{source}' onto itself")
        src_size = self._size(source)
        path = self._data(dest)
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._locked(dest):
            if path.is_file() and _pending(self._load(dest)):
                raise Conflict(f"a copy into blob '{dest}' is already pending")
            with open(self._data(source), "rb") as f:
                total = sum(end - start for start, end in _extents(f.fileno(), src_size))
            with open(path, "wb") as f:
                f.truncate(src_size)
            now = self._clock.now()
            copy = {
                "id": uuid.uuid4().hex,
                "status": CopyStatus.PENDING.value,
                "source": [source.account, source.container, source.name],
                "total": total,
                "progress": 0,
                "error": "",
                "started_at": now,
                "advanced_at": now,
                "grant": grant,  # the SHA-256 of the access token it copies with, if any
            }
            # Like Azure, the destination takes the source's metadata.
            # Like Azure's Copy Blob, the copy carries the source's metadata and Content-MD5.
            origin = self._load(source)
            self._save(
                dest,
                {
                    "metadata": origin["metadata"],
                    "copy": copy,
                    "content_md5": origin.get("content_md5"),
                },
            )
            return str(copy["id"])

    def _copy_range(self, source: BlobRef, dest: BlobRef, offset: int, length: int) -> None:
        if source == dest:
            raise ValueError(f"cannot copy blob '{source}' onto itself")
        if length > _CHUNK:
            raise ValueError(f"a range copy moves at most {_CHUNK} bytes, not {length}")
        _check_range(offset, length, self._size(source), aligned=True)
        _check_range(offset, length, self._size(dest), aligned=True)
        src_fd = os.open(self._data(source), os.O_RDONLY)
        try:
            data = os.pread(src_fd, length, offset)
        finally:
            os.close(src_fd)
        dst_fd = os.open(self._data(dest), os.O_WRONLY)
        try:
            # Written even when all zeros: the range is then listed as written, which is what
            # tells a resumed copy it landed (a hole would look missing forever).
            os.pwrite(dst_fd, data, offset)
        finally:
            os.close(dst_fd)

    def _advance(self, dest: BlobRef, copy: dict[str, Any]) -> None:
        """Copy the next slice of the source's data extents; the caller holds ``dest``'s lock."""
        if dest.account in self._fail_accounts:
            return _fail(copy, INJECTED_COPY_FAILURE.format(account=dest.account))
        source = BlobRef(*copy["source"])
        grant = copy.get("grant", "")
        if grant and self._grant_live is not None and not self._grant_live(source, grant):
            return _fail(
                copy, "the copy source's access was revoked or expired (CannotVerifyCopySource)"
            )
        now = self._clock.now()
        budget = None
        if self._bandwidth > 0:
            budget = int(self._bandwidth * max(0.0, now - copy["advanced_at"]))
        try:
            src, dst = self._data(source), self._data(dest)
            copied, done = _copy_extents(src, dst, copy["progress"], budget)
        except (FileNotFoundError, NotFound):
            return _fail(copy, f"copy source '{source}' was deleted before the copy completed")
        copy["progress"] += copied
        copy["advanced_at"] = now
        if done:
            copy["progress"] = copy["total"] = max(copy["total"], copy["progress"])
            copy["status"] = CopyStatus.SUCCESS.value

    def _abort_copy(self, dest: BlobRef, copy_id: str) -> None:
        with self._locked(dest):
            self._size(dest)
            side = self._load(dest)
            if not _pending(side) or side["copy"]["id"] != copy_id:
                raise NotFound(f"no pending copy '{copy_id}' into blob '{dest}'")
            side["copy"]["status"] = CopyStatus.ABORTED.value
            self._save(dest, side)

    def _delete(self, ref: BlobRef) -> bool:
        try:
            path = self._data(ref)
        except NotFound:
            return False  # no container, no blob
        with self._locked(ref):
            existed = path.is_file()
            path.unlink(missing_ok=True)
            self._sidecar(ref).unlink(missing_ok=True)
        # The lock file stays: unlinking it could let two processes lock two different inodes.
        return existed

    def _list(self, account: str, container: str, prefix: str) -> list[str]:
        _check_names(account, container)
        base = self._root / account / container
        if not base.is_dir():
            return []
        names = (p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file())
        return sorted(n for n in names if n.startswith(prefix))

    # -- files ------------------------------------------------------------------------------------

    def _data(self, ref: BlobRef) -> Path:
        _check_ref(ref)
        container = self._root / ref.account / ref.container
        if not container.is_dir():
            raise NotFound(f"container '{ref.account}/{ref.container}' does not exist")
        return container / ref.name

    def _sidecar(self, ref: BlobRef) -> Path:
        return self._root / _META / ref.account / ref.container / f"{ref.name}.json"

    def _size(self, ref: BlobRef) -> int:
        try:
            return self._data(ref).stat().st_size
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(f"blob '{ref}' does not exist") from None

    def _load(self, ref: BlobRef) -> Sidecar:
        try:
            side: Sidecar = json.loads(self._sidecar(ref).read_text())
        except FileNotFoundError:
            return _new_sidecar()
        return side

    def _save(self, ref: BlobRef, side: Sidecar) -> None:
        # Readers take no lock, so replace the file atomically. No fsync: surviving the death of a
        # process is the goal; the page cache outlives it.
        path = self._sidecar(ref)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.tmp")
        tmp.write_text(json.dumps(side))
        os.replace(tmp, path)

    @contextmanager
    def _locked(self, ref: BlobRef) -> Iterator[None]:
        path = self._sidecar(ref).with_suffix(".lock")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # released by the kernel if this process dies
            yield
        finally:
            os.close(fd)


# -- helpers --------------------------------------------------------------------------------------


def _new_sidecar() -> Sidecar:
    return {"metadata": {}, "copy": None}


def _pending(side: Sidecar) -> bool:
    copy = side.get("copy")
    return copy is not None and copy["status"] == CopyStatus.PENDING.value


def _fail(copy: dict[str, Any], error: str) -> None:
    copy["status"] = CopyStatus.FAILED.value
    copy["error"] = error


def _to_properties(ref: BlobRef, size: int, side: Sidecar) -> BlobProperties:
    copy = side.get("copy")
    md5 = bytes.fromhex(side["content_md5"]) if side.get("content_md5") else None
    if not copy:
        return BlobProperties(ref=ref, size=size, metadata=dict(side["metadata"]), content_md5=md5)
    return BlobProperties(
        ref=ref,
        size=size,
        copy_status=CopyStatus(copy["status"]),
        copy_id=copy["id"],
        copy_source=str(BlobRef(*copy["source"])),
        copy_progress=copy["progress"],
        copy_total=copy["total"],
        copy_error=copy["error"],
        metadata=dict(side["metadata"]),
        content_md5=md5,
    )


def _check_names(account: str, container: str) -> None:
    # A leading dot would reach the sidecar tree; a slash would escape the layout.
    for part in (account, container):
        if not part or part.startswith(".") or "/" in part:
            raise ValueError(f"invalid account or container name {part!r}")


def _check_ref(ref: BlobRef) -> None:
    _check_names(ref.account, ref.container)
    if any(seg in ("", ".", "..") for seg in ref.name.split("/")):
        raise ValueError(f"invalid blob name {ref.name!r}")


def _check_range(offset: int, length: int, size: int, *, aligned: bool) -> None:
    if aligned and (offset % PAGE or length % PAGE or length == 0):
        raise ValueError(f"offset {offset} and length {length} must be multiples of {PAGE} > 0")
    if offset < 0 or length < 0 or offset + length > size:
        raise ValueError(f"range {offset}+{length} is outside the blob of {size} bytes")


def _extents(fd: int, size: int) -> list[tuple[int, int]]:
    """The data extents of the file, page-aligned, merged and sorted."""
    try:
        raw = list(_seek_extents(fd, size))
    except OSError as exc:
        if exc.errno not in _NO_SEEK_DATA:
            raise
        raw = list(_nonzero_runs(fd, size))
    merged: list[tuple[int, int]] = []
    for start, end in raw:
        start, end = start // PAGE * PAGE, min(size, -(-end // PAGE) * PAGE)
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _seek_extents(fd: int, size: int) -> Iterator[tuple[int, int]]:
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # no data after pos
                return
            raise
        if start >= size:
            return
        pos = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        yield start, pos


def _nonzero_runs(fd: int, size: int) -> Iterator[tuple[int, int]]:
    for base in range(0, size, _CHUNK):
        chunk = os.pread(fd, min(_CHUNK, size - base), base)
        if chunk.count(0) == len(chunk):
            continue
        for off in range(0, len(chunk), PAGE):
            page = chunk[off : off + PAGE]
            if page.count(0) != len(page):
                yield base + off, base + off + len(page)


def _copy_extents(src: Path, dst: Path, skip: int, budget: int | None) -> tuple[int, bool]:
    """Copy up to ``budget`` bytes of ``src``'s data extents after the first ``skip`` bytes of them.

    Return the bytes copied and whether the extents are exhausted. Pages are written at the same
    offsets, so copying a slice twice (after a crash) is harmless.
    """
    copied = 0
    with open(src, "rb") as s, open(dst, "r+b") as d:
        for start, end in _extents(s.fileno(), os.fstat(s.fileno()).st_size):
            if skip >= end - start:
                skip -= end - start
                continue
            pos, skip = start + skip, 0
            while pos < end:
                n = min(end - pos, _CHUNK, _CHUNK if budget is None else budget - copied)
                if n <= 0:
                    return copied, False
                data = os.pread(s.fileno(), n, pos)
                if data.count(0) != len(data):  # keep all-zero slices as holes
                    os.pwrite(d.fileno(), data, pos)
                copied, pos = copied + n, pos + n
    return copied, True
