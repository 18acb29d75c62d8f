"""Simulated storage accounts: page blobs as sizes and occupied ranges, copies as flows.

A blob holds no data by default: ``write_pages`` only records which ranges are occupied, ``read``
returns zeros, and a copy moves the occupied byte count at its fair-share rate. With
``keep_data=True`` (the contract suite) written pages are kept, so reads return what was written.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..._domain import BlobRef
from ..._exceptions import Conflict, NotFound
from ...abc import BlobProperties, Clock, CopyStatus, looks_until
from .copies import CopyEngine, SimCopy
from .model import SimFaults, SimModel, SimStats

__all__ = ["PAGE", "SimBlob", "SimStorage"]

PAGE = 512
PUT_PAGE_BYTES = 4 * 1024 * 1024  # the most one Put Page From URL request moves


@dataclass(eq=False)
class SimBlob:
    size: int
    ranges: list[tuple[int, int]] = field(default_factory=list)  # occupied, merged, sorted
    data: dict[int, bytes] | None = None  # page offset -> 512 bytes, with keep_data only
    metadata: dict[str, str] = field(default_factory=dict)
    copy: SimCopy | None = None
    content_md5: bytes | None = None
    # The last page (a VHD's footer) is kept even without keep_data, so the engine's read-back of
    # the footer sees what was written.
    tail: bytes | None = None
    # Until when the ranged copies into this blob keep its write bandwidth busy (a fluid model:
    # ranges share the blob's rate, one event per call).
    ranges_busy_until: float = 0.0
    # When its ranged copier last began (made or resumed the blob), and when each range a
    # ranged copy wrote into it began and ended moving: what a copy following this one may
    # have streamed meanwhile (see SimStorage.copy_range).
    copier_since: float = 0.0
    landing: dict[int, tuple[float, float]] = field(default_factory=dict)

    @property
    def occupied(self) -> int:
        return sum(end - start for start, end in self.ranges)

    def add_range(self, start: int, end: int) -> None:
        ranges = self.ranges
        if ranges and ranges[-1][1] == start:  # sequential upload: extend the last range
            ranges[-1] = (ranges[-1][0], end)
            return
        i = bisect.bisect_left(ranges, (start, end))
        lo = i - 1 if i > 0 and ranges[i - 1][1] >= start else i
        hi = i
        while hi < len(ranges) and ranges[hi][0] <= end:
            hi += 1
        merged = (
            min([start, *(r[0] for r in ranges[lo:hi])]),
            max([end, *(r[1] for r in ranges[lo:hi])]),
        )
        ranges[lo:hi] = [merged]


class SimStorage:
    """Every simulated account, container and blob, and the copies between them.

    :param account_locations: account -> (subscription, region); other accounts do not exist.
    """

    def __init__(
        self,
        clock: Clock,
        account_locations: Mapping[str, tuple[str, str]],
        *,
        model: SimModel,
        faults: SimFaults,
        seed: int,
        stats: SimStats,
        keep_data: bool = False,
    ) -> None:
        self.clock = clock
        self.locations = dict(account_locations)
        self.model, self.faults, self.stats = model, faults, stats
        self.keep_data = keep_data
        self.seed = seed
        self.containers: dict[tuple[str, str], dict[str, SimBlob]] = {}
        self.copies = CopyEngine(model, self._copy_ended)
        self.disks: dict[str, BlobRef] = {}  # managed disk id -> the blob holding its pages
        self.grants: dict[str, str] = {}  # access URL -> disk id
        self._copy_rng = random.Random(f"{seed}:copies")
        self._copy_ids = 0
        # Callers waiting for a copy's end (wait_for_copy), and the timer that processes the
        # copies' events on time while anyone waits (they are otherwise processed lazily).
        self._waiters: dict[SimCopy, list[asyncio.Future[None]]] = {}
        self._range_waiters: dict[BlobRef, list[asyncio.Future[None]]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf

    def now(self) -> float:
        """The clock's time, with every copy advanced to it."""
        return self.copies.advance(self.clock.now())

    async def wait_for_copy(self, ref: BlobRef, longest: float) -> None:
        """Return when the copy into ``ref`` ended, or after ``longest`` seconds."""
        self.now()
        blob = self.containers.get((ref.account, ref.container), {}).get(ref.name)
        copy = blob.copy if blob is not None else None
        if copy is None or copy.status is not CopyStatus.PENDING or longest <= 0:
            return
        ended = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(copy, []).append(ended)
        self._arm()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ended, longest)

    async def wait_for_range(self, ref: BlobRef, longest: float, every: float) -> int:
        """Return at the first look (one every ``every`` seconds from now) that sees a range
        landed in ``ref`` since, or after ``longest`` seconds; returns how many looks that was.
        """
        began = self.clock.now()
        if longest > 0:
            loop = asyncio.get_running_loop()
            landed = loop.create_future()
            self._range_waiters.setdefault(ref, []).append(landed)
            timer = loop.call_later(longest, _resolve, landed)
            await landed
            timer.cancel()
        waited = self.clock.now() - began
        looks = looks_until(waited, every)
        if every > 0 and looks * every > waited:
            await self.clock.sleep(looks * every - waited)  # until the look that sees it
        return looks

    def _arm(self) -> None:
        """Have the copies' next event processed at its time, while anyone waits for an end."""
        if not self._waiters:
            return
        when = self.copies.next_event()
        if when is None or when >= self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        # A microsecond late: the event is then certainly due when the timer runs.
        delay = max(0.0, when - self.clock.now()) + 1e-6
        self._timer = asyncio.get_running_loop().call_later(delay, self._tick)
        self._timer_at = when

    def _tick(self) -> None:
        self._timer, self._timer_at = None, math.inf
        self.now()
        self._arm()

    # -- containers and blobs ------------------------------------------------------------------

    def check_account(self, account: str) -> None:
        if account not in self.locations:
            raise NotFound(f"Storage account {account!r} does not exist; run `imagedist setup`.")

    def ensure_container(self, account: str, container: str) -> None:
        self.check_account(account)
        self.containers.setdefault((account, container), {})

    def container(self, account: str, container: str) -> dict[str, SimBlob]:
        self.check_account(account)
        found = self.containers.get((account, container))
        if found is None:
            raise NotFound(f"container '{account}/{container}' does not exist")
        return found

    def blob(self, ref: BlobRef) -> SimBlob:
        found = self.containers.get((ref.account, ref.container), {}).get(ref.name)
        if found is None:
            raise NotFound(f"blob '{ref}' does not exist")
        return found

    def create(self, ref: BlobRef, size: int, overwrite: bool) -> SimBlob:
        if size <= 0 or size % PAGE:
            raise ValueError(f"page blob size must be a positive multiple of {PAGE}, not {size}")
        blobs = self.container(ref.account, ref.container)
        old = blobs.get(ref.name)
        if old is not None and not overwrite:
            if old.size == size:
                old.copier_since = self.now()
                return old  # keep the pages written so far, so an upload can resume
            raise Conflict(f"blob '{ref}' exists with size {old.size}, not {size}")
        if old is not None:
            self._replaced(ref, old)
        blob = SimBlob(size, data={} if self.keep_data else None, copier_since=self.now())
        blobs[ref.name] = blob
        return blob

    def write(self, ref: BlobRef, offset: int, data: bytes) -> None:
        blob = self.blob(ref)
        check_range(offset, len(data), blob.size, aligned=True)
        blob.add_range(offset, offset + len(data))
        if offset + len(data) == blob.size:
            blob.tail = data[-PAGE:]
        if blob.data is not None:
            for at in range(0, len(data), PAGE):
                blob.data[offset + at] = data[at : at + PAGE]

    def read(self, ref: BlobRef, offset: int, length: int) -> bytes:
        blob = self.blob(ref)
        check_range(offset, length, blob.size, aligned=False)
        if not blob.data:
            return self._read_tail(blob, offset, length)
        out = bytearray(length)
        first = offset - offset % PAGE
        for page in range(first, offset + length, PAGE):
            chunk = blob.data.get(page)
            if chunk is None:
                continue
            lo, hi = max(page, offset), min(page + PAGE, offset + length)
            out[lo - offset : hi - offset] = chunk[lo - page : hi - page]
        return bytes(out)

    @staticmethod
    def _read_tail(blob: SimBlob, offset: int, length: int) -> bytes:
        out = bytearray(length)
        last = blob.size - PAGE
        if blob.tail is not None and offset + length > last:
            lo = max(offset, last)
            out[lo - offset :] = blob.tail[lo - last : offset + length - last]
        return bytes(out)

    def delete(self, ref: BlobRef) -> bool:
        blobs = self.containers.get((ref.account, ref.container), {})
        blob = blobs.pop(ref.name, None)
        if blob is None:
            return False
        self._replaced(ref, blob)
        return True

    def _replaced(self, ref: BlobRef, blob: SimBlob) -> None:
        """The blob is gone: copies from it fail, a copy into it stops."""
        self.copies.fail_readers_of(
            ref, f"copy source '{ref}' was deleted before the copy completed"
        )
        if blob.copy is not None and blob.copy.status is CopyStatus.PENDING:
            self.copies.stop(blob.copy, CopyStatus.ABORTED, "the destination blob was deleted")

    def properties(self, ref: BlobRef) -> BlobProperties:
        blob = self.blob(ref)
        copy = blob.copy
        if copy is None:
            return BlobProperties(
                ref=ref, size=blob.size, metadata=dict(blob.metadata), content_md5=blob.content_md5
            )
        return BlobProperties(
            ref=ref,
            size=blob.size,
            copy_status=copy.status,
            copy_id=copy.id,
            copy_source=str(copy.source),
            copy_progress=self.copies.progress(copy),
            copy_total=copy.total,
            copy_error=copy.error,
            metadata=dict(blob.metadata),
            content_md5=blob.content_md5,
        )

    # -- ranged copies (Put Page From URL) -------------------------------------------------------

    async def copy_range(self, source: BlobRef, dest: BlobRef, offset: int, length: int) -> None:
        """Copy one range at the destination blob's ranged rate, in clock time; it lands whole."""
        if source == dest:
            raise ValueError(f"cannot copy blob '{source}' onto itself")
        check_range(offset, length, self.blob(source).size, aligned=True)
        target = self.blob(dest)
        check_range(offset, length, target.size, aligned=True)
        now = self.now()
        moved = self._range_transfer(self.blob(source), target, offset, length, now)
        target.ranges_busy_until = moved[1]
        target.landing[offset] = moved
        await self.clock.sleep(max(0.0, moved[1] - now) + self.model.ranged_call_seconds)
        # Either blob may have gone meanwhile: the range is read and written at the end.
        src, target = self.blob(source), self.blob(dest)
        self._land_range(src, target, offset, length)
        for waiter in self._range_waiters.pop(dest, ()):
            _resolve(waiter)
        self.stats.ranges_landed += 1
        self.stats.bytes_copied += length
        if self._region(source.account) != self._region(dest.account):
            self.stats.cross_region_bytes += length

    def _range_transfer(
        self, src: SimBlob, target: SimBlob, offset: int, length: int, now: float
    ) -> tuple[float, float]:
        """When one call's bytes begin and end moving into ``target``, at its blob's rate.

        A call stands for the 4 MiB requests of its range. Where the source's own range was
        itself moved by a ranged copy (a copy following one still being made), those requests
        went out as the source's landed, one look behind: the call may have begun streaming once
        the source's first request landed (not before this copier began, nor before its previous
        range), and ends no sooner than one request after the source's last. So a follower
        trails its parent by a look and a request, as on Azure, whatever range a call stands
        for; the call itself is made only once the whole range is listed at the source.
        """
        rate = self.model.ranged_copy_rate
        window = src.landing.get(offset)
        if window is None:
            began = max(now, target.ranges_busy_until)
            return began, began + length / rate
        request = PUT_PAGE_BYTES / rate
        began = max(target.copier_since, target.ranges_busy_until, window[0] + request)
        return began, max(began + length / rate, window[1] + request)

    def _land_range(self, src: SimBlob, target: SimBlob, offset: int, length: int) -> None:
        end = offset + length
        target.add_range(offset, end)  # written, zeros included, like Azure's Put Page
        if target.data is not None:
            source_pages = src.data or {}
            for page in range(offset, end, PAGE):
                data = source_pages.get(page)
                if data is None:
                    target.data.pop(page, None)
                else:
                    target.data[page] = data
        if end == target.size and src.tail is not None:
            target.tail = src.tail

    # -- managed disks ---------------------------------------------------------------------------

    def add_disk(self, disk_id: str, size: int, occupied: int, location: tuple[str, str]) -> None:
        """Make a managed disk (a copy source reached by its access URL); for tests and scenarios."""
        account = f"disk{len(self.disks):06d}"
        self.locations[account] = location
        ref = BlobRef(account, "disks", disk_id.rstrip("/").rsplit("/", 1)[-1])
        self.ensure_container(ref.account, ref.container)
        blob = self.create(ref, size, overwrite=True)
        if occupied:
            blob.add_range(0, min(occupied, size))
        self.disks[disk_id.lower()] = ref

    def disk(self, disk_id: str) -> BlobRef:
        found = self.disks.get(disk_id.lower())
        if found is None:
            raise NotFound(f"managed disk '{disk_id}' does not exist")
        return found

    # -- copies --------------------------------------------------------------------------------

    def start_copy(self, source: BlobRef, dest: BlobRef, rate: float | None = None) -> str:
        """Start a copy; ``rate`` fixes its own rate (and no start latency) instead of drawing it."""
        if source == dest:
            raise ValueError(f"cannot copy blob '{source}' onto itself")
        src = self.blob(source)
        blobs = self.container(dest.account, dest.container)
        old = blobs.get(dest.name)
        if old is not None and old.copy is not None and old.copy.status is CopyStatus.PENDING:
            raise Conflict(f"a copy into blob '{dest}' is already pending")
        if old is not None:
            self._replaced(dest, old)
        now = self.now()
        rng, model = self._copy_rng, self.model
        clone = source.account == dest.account and rate is None
        cross = self._region(source.account) != self._region(dest.account)
        total = src.occupied
        fail = ""
        stop_at = float(total)
        if dest.account in self.faults.fail_copies_to_accounts:
            fail, stop_at = f"injected copy failure into account '{dest.account}'", 0.0
        elif not clone and self.faults.copy_failure and rng.random() < self.faults.copy_failure:
            fail, stop_at = "injected copy failure (CopyFailed: server error)", total * rng.random()
        if rate is not None:
            own, ready = rate, now
        elif clone:
            own, ready = 0.0, now + model.draw_clone_seconds(rng)
        else:
            own = model.draw_copy_rate(rng, cross)
            ready = now + model.draw_start_latency(rng)
        self._copy_ids += 1
        copy = SimCopy(
            id=f"copy-{self._copy_ids:08d}",
            source=source,
            dest=dest,
            total=total,
            own_rate=own,
            ready_at=ready,
            clone=clone,
            cross_region=cross,
            stop_at=stop_at,
            fail_reason=fail,
            snapshot=(list(src.ranges), dict(src.data) if src.data is not None else None),
        )
        blob = SimBlob(src.size, data={} if self.keep_data else None, metadata=dict(src.metadata))
        blob.copy, blob.content_md5 = copy, src.content_md5  # Copy Blob carries both
        blob.tail = src.tail
        blobs[dest.name] = blob
        self.stats.copies_started += 1
        self.stats.clones += clone
        self.stats.cross_region_copies += cross
        self.copies.start(copy)
        self._arm()  # its start may change when a watched copy ends
        return copy.id

    def abort_copy(self, dest: BlobRef, copy_id: str) -> None:
        try:
            copy = self.blob(dest).copy
        except NotFound:
            copy = None
        if copy is None or copy.status is not CopyStatus.PENDING or copy.id != copy_id:
            raise NotFound(f"no pending copy '{copy_id}' into blob '{dest}'")
        self.copies.stop(copy, CopyStatus.ABORTED)

    def _copy_ended(self, copy: SimCopy) -> None:
        for waiter in self._waiters.pop(copy, ()):
            if not waiter.done():
                waiter.set_result(None)
        moved = copy.total if copy.status is CopyStatus.SUCCESS else int(copy.done)
        stats = self.stats
        if not copy.clone:
            stats.bytes_copied += moved
            if copy.cross_region:
                stats.cross_region_bytes += moved
        if copy.status is CopyStatus.SUCCESS:
            stats.copies_succeeded += 1
            blob = self.containers.get((copy.dest.account, copy.dest.container), {}).get(
                copy.dest.name
            )
            if blob is not None and blob.copy is copy:
                ranges, data = copy.snapshot
                blob.ranges = ranges
                if data is not None:
                    blob.data = data
        elif copy.status is CopyStatus.FAILED:
            stats.copies_failed += 1
        else:
            stats.copies_aborted += 1
        copy.snapshot = ([], None)

    def _region(self, account: str) -> str:
        return self.locations.get(account, ("", ""))[1].replace(" ", "").lower()


def check_range(offset: int, length: int, size: int, *, aligned: bool) -> None:
    if aligned and (offset % PAGE or length % PAGE or length == 0):
        raise ValueError(f"offset {offset} and length {length} must be multiples of {PAGE} > 0")
    if offset < 0 or length < 0 or offset + length > size:
        raise ValueError(f"range {offset}+{length} is outside the blob of {size} bytes")


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
