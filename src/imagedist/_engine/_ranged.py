"""Ranged copies: a page blob copied as many synchronous range copies (Put Page From URL, issue 13).

Where an asynchronous Copy Blob between accounts moves 4-45 MB/s and costs the worker nothing,
a ranged copy moves ~170-210 MB/s per blob (what AzCopy reaches, PERF-MODEL.md) at the price of one
request per 4 MiB and the worker's time to issue them. A copy is the set of ranges of the source's
data (one page-range listing of the source: empty pages are never copied) cut on a fixed grid of
the adapter's largest range. Ranges move in parallel under a :class:`Pacer` per blob: it starts
high, multiplies its concurrency by 0.65 on a 503 ServerBusy and probes upward by one range per
window of successes; request rates per blob and per account are capped as the model says.

Resuming is comparing page ranges: a range lands whole by one call or not at all, so a range of the
source's data that the destination's page ranges cover has landed, and a restarted copy moves only
the others. One copier per destination is the engine's guarantee (the target's lease, renewed
through ``keep_alive`` while ranges land), so two workers never write the same range at once.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import math
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from .._domain import BlobRef
from .._exceptions import TransientError
from ..abc import BlobStore, Clock
from ._limits import Turns

__all__ = [
    "Pacer",
    "RangedLimits",
    "RangedReport",
    "RequestRate",
    "copy_ranged",
    "missing_ranges",
    "plan_ranges",
]

MIB = 1024 * 1024
Range = tuple[int, int]  # (start, end), end exclusive


@dataclass(frozen=True)
class RangedLimits:
    """The model's figures that bound one ranged copy (PERF-MODEL.md); every one overridable.

    :ivar request_bytes: the most one Put Page From URL request moves (Azure: 4 MiB).
    :ivar start_concurrency: ranges in flight per blob at the start (AzCopy starts high).
    :ivar max_concurrency: the most the pacer probes up to.
    :ivar min_concurrency: the least it backs off to.
    :ivar backoff: what a 503 ServerBusy multiplies the concurrency by.
    :ivar blob_requests_per_second: one page blob's request budget (over it: 503).
    :ivar account_requests_per_second: one standard account's request budget.
    :ivar busy_retries: consecutive 503s on one copy before it gives up (transient, retried later).
    :ivar busy_delay: seconds a range waits after a 503 that gave no Retry-After (doubling).
    """

    request_bytes: int = 4 * MIB
    start_concurrency: int = 32
    max_concurrency: int = 64
    min_concurrency: int = 1
    backoff: float = 0.65
    blob_requests_per_second: float = 500.0
    account_requests_per_second: float = 20_000.0
    busy_retries: int = 30
    busy_delay: float = 0.5


@dataclass
class RangedReport:
    """What one run of :func:`copy_ranged` did."""

    ranges: int = 0  # ranges of the source's data
    already: int = 0  # of them, found landed in the destination (a resumed copy)
    copied: int = 0  # ranges this run copied
    calls: int = 0  # copy_range calls made, 503s included
    busy: int = 0  # of them, answered 503 ServerBusy
    bytes_copied: int = 0
    waits: int = 0  # times a pipelined copy waited for its parent to land ranges
    lowest_concurrency: float = 0.0  # the pacer's lowest limit (below the start: it backed off)
    concurrency_trace: list[float] = field(default_factory=list)


class RequestRate:
    """Spaces requests so that at most ``per_second`` start per second of the clock."""

    def __init__(self, clock: Clock, per_second: float) -> None:
        self._clock = clock
        self._interval = 1.0 / per_second if per_second > 0 else 0.0
        self._next = 0.0

    async def wait(self, requests: int = 1) -> None:
        if not self._interval:
            return
        now = self._clock.now()
        at = max(now, self._next)
        self._next = at + requests * self._interval
        if at > now:
            await self._clock.sleep(at - now)


class Pacer:
    """Additive increase, multiplicative decrease of the ranges in flight for one blob.

    A 503 multiplies the limit by ``backoff`` once per window: the other ranges already in flight
    when it came were started under the old limit, and their 503s say nothing new. Each success
    adds ``1 / limit``, so a whole window of successes adds one range.
    """

    def __init__(self, limits: RangedLimits) -> None:
        self._limits = limits
        self.limit = float(limits.start_concurrency)
        self.lowest = self.limit
        self.trace = [self.limit]
        self.in_flight = 0
        self._window = 0
        # Ranges waiting for room, woken in turn (no lock: acquiring room that is free costs
        # nothing, which a range's few requests would otherwise pay every time).
        self._turns = Turns()

    async def acquire(self) -> int:
        """Wait for room under the limit; returns the window the range starts in."""
        while self.in_flight >= max(1, int(self.limit)):
            await self._turns.wait()
        self.in_flight += 1
        return self._window

    def release(self, window: int, *, busy: bool) -> None:
        limits = self._limits
        self.in_flight -= 1
        if busy and window == self._window:
            self.limit = max(float(limits.min_concurrency), self.limit * limits.backoff)
            self._window += 1
            self.lowest = min(self.lowest, self.limit)
            self.trace.append(self.limit)
        elif not busy:
            self.limit = min(float(limits.max_concurrency), self.limit + 1.0 / self.limit)
        self._turns.wake(max(1, int(self.limit)) - self.in_flight)


def plan_ranges(data: Iterable[Range], step: int) -> list[Range]:
    """The source's data ranges cut on a grid of ``step`` bytes (512-aligned, like its pages).

    A fixed grid makes the plan the same on every run, so a resumed copy asks the same questions.
    """
    out: list[Range] = []
    for start, end in data:
        cell = start - start % step
        while cell < end:
            out.append((max(start, cell), min(end, cell + step)))
            cell += step
    return out


def missing_ranges(planned: Iterable[Range], landed: list[Range]) -> list[Range]:
    """The planned ranges not wholly inside one of ``landed`` (sorted, merged page ranges)."""
    starts = [start for start, _ in landed]
    out = []
    for start, end in planned:
        i = bisect.bisect_right(starts, start) - 1
        if i < 0 or landed[i][1] < end:
            out.append((start, end))
    return out


class _RangedCopy:
    """One run of a ranged copy: a queue of ranges and the tasks that move them."""

    def __init__(
        self,
        blobs: BlobStore,
        source: BlobRef,
        dest: BlobRef,
        clock: Clock,
        limits: RangedLimits,
        account_rate: RequestRate,
        keep_alive: Callable[[], Awaitable[None]],
    ) -> None:
        self.blobs, self.source, self.dest, self.clock = blobs, source, dest, clock
        self.limits = limits
        self.pacer = Pacer(limits)
        self.blob_rate = RequestRate(clock, limits.blob_requests_per_second)
        self.account_rate = account_rate
        self.keep_alive = keep_alive
        self.todo: collections.deque[Range] = collections.deque()
        self.report = RangedReport()
        self._busy_in_a_row = 0

    async def run(self, ranges: list[Range]) -> None:
        self.todo.extend(ranges)
        movers = min(len(ranges), self.blobs.copy_range_calls_at_once or len(ranges))
        movers = min(movers, self.limits.max_concurrency)
        if movers == 1:
            # One range (a copy following its parent gets them one by one): no tasks to start.
            await self._mover()
            self._note_pacer()
            return
        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(movers):
                    group.create_task(self._mover())
        except ExceptionGroup as failed:
            # The first range that failed stops the others; the caller handles one error, as
            # from any other copy.
            raise _first_leaf(failed) from None
        self._note_pacer()

    def _note_pacer(self) -> None:
        self.report.lowest_concurrency = self.pacer.lowest
        self.report.concurrency_trace = list(self.pacer.trace)

    async def _mover(self) -> None:
        while self.todo:
            window = await self.pacer.acquire()
            if not self.todo:
                self.pacer.release(window, busy=False)
                return
            start, end = self.todo.popleft()
            busy = await self._move(start, end)
            self.pacer.release(window, busy=busy is not None)
            if busy is not None:
                self.todo.append((start, end))
                await self.clock.sleep(busy)
            else:
                await self.keep_alive()

    async def _move(self, start: int, end: int) -> float | None:
        """Copy one range; returns None once it landed, or how long to wait after a 503."""
        requests = math.ceil((end - start) / self.limits.request_bytes)
        await self.blob_rate.wait(requests)
        await self.account_rate.wait(requests)
        self.report.calls += 1
        try:
            await self.blobs.copy_range(self.source, self.dest, start, end - start)
        except TransientError as exc:
            self.report.busy += 1
            self._busy_in_a_row += 1
            if self._busy_in_a_row > self.limits.busy_retries:
                raise TransientError(
                    f"the ranged copy into blob '{self.dest}' met {self._busy_in_a_row} busy"
                    " answers in a row; it resumes from the ranges that landed",
                    retry_after=exc.retry_after,
                ) from exc
            doubling = self.limits.busy_delay * 2 ** min(self._busy_in_a_row - 1, 5)
            return exc.retry_after if exc.retry_after is not None else doubling
        self._busy_in_a_row = 0
        self.report.copied += 1
        self.report.bytes_copied += end - start
        return None


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first


async def _nothing() -> None:
    return None


async def copy_ranged(
    blobs: BlobStore,
    source: BlobRef,
    dest: BlobRef,
    *,
    clock: Clock,
    limits: RangedLimits | None = None,
    account_rate: RequestRate | None = None,
    keep_alive: Callable[[], Awaitable[None]] = _nothing,
    fresh: bool = False,
    origin: BlobRef | None = None,
    follow_seconds: float = 1.0,
    stall_seconds: float = 300.0,
) -> RangedReport:
    """Copy ``source`` into ``dest`` range by range, resuming from what ``dest`` already holds.

    ``dest`` is created with the source's size if missing (kept if it exists with that size:
    its landed ranges are not copied again). Once every range landed, the destination takes the
    source's Content-MD5 and metadata, as an asynchronous Copy Blob carries them: the caller
    verifies it the same way (size, MD5 or footer).

    **Pipelining**: with ``origin``, ``source`` is a copy of ``origin`` still being made (by
    ranges, so each of its ranges is whole once listed). The ranges are ``origin``'s data, and
    each is copied only once ``source`` holds it: its page ranges are listed again every
    ``follow_seconds`` while some wait. So a copy of a copy starts when its parent's first ranges
    landed, and ends about one range time after its parent; the Content-MD5 and metadata come
    from ``origin``.

    :param account_rate: the request budget of the destination's account, shared by every copy
        into it (one per account, held by the caller); None: one of this copy's own.
    :param keep_alive: awaited after each landed range: renews the lease that makes this the one
        copier of ``dest`` (raising if it was lost, which stops the copy).
    :param fresh: start over: an existing ``dest`` is replaced (a new attempt), not resumed.
    :param stall_seconds: with ``origin``, how long ``source`` may land no new range before
        the copy gives up following it (its copier failed, or died and nobody took over yet).
    :raises ParentStalled: then; what landed stays in ``dest``.
    :raises OperationFailed: if the blob store cannot copy ranges (code ``RANGED_COPY_UNSUPPORTED``).
    """
    limits = limits or RangedLimits()
    props = await blobs.get_properties(origin or source)
    await blobs.create_page_blob(dest, props.size, overwrite=fresh)
    step = blobs.copy_range_bytes or limits.request_bytes  # 0: the store refuses the first call
    planned = plan_ranges(await blobs.page_ranges(origin or source), step)
    todo = missing_ranges(planned, await blobs.page_ranges(dest))
    rate = account_rate or RequestRate(clock, limits.account_requests_per_second)
    run = _RangedCopy(blobs, source, dest, clock, limits, rate, keep_alive)
    run.report.ranges, run.report.already = len(planned), len(planned) - len(todo)
    moved_at = clock.now()
    while todo:
        ready = todo if origin is None else _held(todo, await blobs.page_ranges(source))
        if not ready:
            idle = clock.now() - moved_at
            if idle > stall_seconds:
                raise ParentStalled(
                    f"the copy being followed ({source}) landed nothing for {stall_seconds:.0f} s"
                )
            run.report.waits += 1
            # The parent has not landed them yet: look again in a while, or (a store that can
            # tell) once it landed one, until the stall would be seen.
            longest = stall_seconds - idle + follow_seconds
            if not await blobs.wait_for_ranges(source, longest, follow_seconds):
                await clock.sleep(follow_seconds)
            continue
        moved_at = clock.now()
        await run.run(ready)
        landed = set(ready)
        todo = [r for r in todo if r not in landed]
    if props.content_md5 is not None:
        await blobs.set_content_md5(dest, props.content_md5)
    await blobs.set_metadata(dest, dict(props.metadata))
    return run.report


class ParentStalled(TransientError):
    """A pipelined copy's parent stopped landing ranges: copy from another source instead."""


def _held(ranges: list[Range], held: list[Range]) -> list[Range]:
    """The ranges that ``held`` (a blob's page ranges) covers wholly."""
    waiting = set(missing_ranges(ranges, held))
    return [r for r in ranges if r not in waiting]
