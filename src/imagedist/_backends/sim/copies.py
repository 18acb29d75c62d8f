"""Server-side copies as fluid flows: progress is computed from time, never byte by byte.

A running copy's rate is its fair share: ``min(own rate, source blob bandwidth / readers of that
blob, account egress / copies out of that account)``. Write the last two terms as the *cap* of the
source's group, ``min(B / n_source, E / n_account)``: a copy runs at ``min(own, cap)``.

A group's cap is either its blob's share ``B / n_source`` (the group is *blob-bound*) or its
account's share ``E / n_account`` (*account-bound*): which one depends only on how many copies read
the blob, so an account files its groups in buckets by that number. The copies whose rate is a
cap run on a *clock*: a progress counter ``P`` that grows at the cap (bytes a capped copy moved
since the clock began), and a capped copy is done when ``P`` reaches its target. A blob-bound
group has a clock of its own; every account-bound group of an account shares the account's clock.
So when a copy joins or leaves an account, the account's share changes the rates of all its
account-bound copies in one update of one clock (not one per source blob: the original strategy's
staging account serves hundreds of them); only the copies whose own rate lies between the old and
the new cap change side (free below it, capped above it), and only the buckets whose share crossed
the blob's move their groups to the other clock. Ends are events in a heap, processed in time
order whenever the world is looked at (:meth:`CopyEngine.advance`), so a copy that ends frees its
share at the exact instant it ends, even if nobody polls it then.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from dataclasses import dataclass, field

from ..._domain import BlobRef
from ...abc import CopyStatus
from .model import SimModel

__all__ = ["CopyEngine", "SimCopy"]

_EPSILON = 1.0  # bytes: a capped copy within one byte of its target is done


@dataclass(eq=False)
class SimCopy:
    """One server-side copy. ``stop_at`` is ``total``, or the byte at which an injected fault hits."""

    id: str
    source: BlobRef
    dest: BlobRef
    total: int
    own_rate: float  # bytes/s; unused by clones
    ready_at: float  # a stream copy starts moving bytes then; a clone completes then
    clone: bool
    cross_region: bool
    stop_at: float
    fail_reason: str = ""
    status: CopyStatus = CopyStatus.PENDING
    error: str = ""
    done: float = 0.0  # free: bytes at time t; capped: P of its clock minus done ("base")
    t: float = 0.0
    capped: bool = False
    joined: bool = False
    gen: int = 0  # invalidates this copy's entries in the engine's heap
    mgen: int = 0  # invalidates its entries in its clock's heaps
    group: _Group | None = None
    clock: _Clock | None = None  # where it runs while joined: its group's or its account's
    snapshot: tuple[list[tuple[int, int]], dict[int, bytes] | None] = field(
        default_factory=lambda: ([], None)
    )


_Entry = tuple[float, int, int, SimCopy]


@dataclass(eq=False)
class _Clock:
    """Progress at a cap shared by the copies it caps, and the heaps that tell who crosses it."""

    cap: float = 0.0
    progress: float = 0.0  # P at time t
    t: float = 0.0
    gen: int = 0  # invalidates its entries in the engine's heap
    capped: list[_Entry] = field(default_factory=list)  # by target P
    capped_by_own: list[_Entry] = field(default_factory=list)  # min own rate first
    free_by_own: list[_Entry] = field(default_factory=list)  # max own rate first

    def progress_at(self, t: float) -> float:
        return self.progress + self.cap * (t - self.t)

    def advance(self, t: float) -> None:
        if t > self.t:
            self.progress += self.cap * (t - self.t)
            self.t = t


@dataclass(eq=False)
class _Group:
    """The running copies of one source blob."""

    source: BlobRef
    own_clock: _Clock
    members: dict[SimCopy, None] = field(default_factory=dict)
    clock: _Clock | None = None  # own_clock (blob-bound) or the account's (account-bound)
    filed_as: int = 0  # the bucket (number of readers) it is filed in; 0: not yet


@dataclass(eq=False)
class _Account:
    """The copies out of one storage account: its clock, and its groups by number of readers."""

    clock: _Clock
    outgoing: int = 0
    buckets: dict[int, dict[_Group, None]] = field(default_factory=dict)


class CopyEngine:
    """The copies in flight of one simulated world, advanced lazily to the time they are looked at.

    :param on_end: called once for every copy that ends (success, failure or abort).
    """

    def __init__(self, model: SimModel, on_end: Callable[[SimCopy], None]) -> None:
        self._model = model
        self._on_end = on_end
        self.t: float | None = None
        self._heap: list[tuple[float, int, int, SimCopy | _Clock]] = []
        self._seq = 0
        self._groups: dict[BlobRef, _Group] = {}
        self._accounts: dict[str, _Account] = {}
        self._by_source: dict[BlobRef, dict[SimCopy, None]] = {}
        # What changed since the last rebalance: accounts whose number of copies out changed,
        # groups whose members changed (or whose bucket's bound moved), clocks to re-arm.
        self._dirty: dict[str, None] = {}
        self._touched: dict[_Group, None] = {}
        self._to_arm: dict[_Clock, None] = {}
        self.rebalanced = 0  # clock re-rates, for profiling
        self._compact_at = 1024

    # -- time ----------------------------------------------------------------------------------

    def advance(self, now: float) -> float:
        """Process every event up to ``now``; return the engine's time (never goes back)."""
        if self.t is None:
            self.t = now
        heap = self._heap
        while True:
            if self._dirty or self._touched or self._to_arm:
                self._rebalance()
            if not heap or heap[0][0] > now:
                break
            when = heap[0][0]
            self.t = max(self.t, when)
            while heap and heap[0][0] <= when:
                _, _, gen, item = heapq.heappop(heap)
                if gen != item.gen:
                    continue
                if isinstance(item, _Clock):
                    self._clock_due(item)
                elif item.status is CopyStatus.PENDING:
                    self._copy_due(item)
        self.t = max(self.t, now)
        return self.t

    def _next(self) -> int:
        self._seq += 1
        return self._seq

    def _schedule(self, when: float, item: SimCopy | _Clock) -> None:
        item.gen += 1
        heap = self._heap
        heapq.heappush(heap, (when, self._next(), item.gen, item))
        if len(heap) > self._compact_at:
            # Most entries were replaced by later schedules: drop them, so the heap is as long
            # as what can still happen.
            heap[:] = [entry for entry in heap if _current(entry)]
            heapq.heapify(heap)
            self._compact_at = max(1024, 4 * len(heap))

    # -- copies --------------------------------------------------------------------------------

    def start(self, copy: SimCopy) -> None:
        assert self.t is not None, "advance() first"
        copy.t = self.t
        self._by_source.setdefault(copy.source, {})[copy] = None
        self._schedule(copy.ready_at, copy)

    def progress(self, copy: SimCopy) -> int:
        """Bytes copied so far (at the engine's time)."""
        if copy.status is CopyStatus.SUCCESS:
            return copy.total
        return int(max(0.0, min(copy.stop_at, self._done(copy, self.t or 0.0))))

    def stop(self, copy: SimCopy, status: CopyStatus, error: str = "") -> None:
        """End a pending copy now, with ``status`` (aborted, or failed from outside)."""
        if copy.status is CopyStatus.PENDING:
            self._end(copy, status, error, float(self.progress(copy)))

    def fail_readers_of(self, source: BlobRef, reason: str) -> None:
        """Fail every pending copy from ``source`` (it was deleted or overwritten)."""
        for copy in list(self._by_source.get(source, {})):
            self.stop(copy, CopyStatus.FAILED, reason)

    def next_event(self) -> float | None:
        """When the next copy may end or change rate (None: no copy in flight)."""
        if self._dirty or self._touched or self._to_arm:
            self._rebalance()
        heap = self._heap
        # Entries a later schedule replaced would only wake a caller for nothing.
        while heap and not _current(heap[0]):
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def readers(self, source: BlobRef) -> int:
        group = self._groups.get(source)
        return len(group.members) if group else 0

    # -- events --------------------------------------------------------------------------------

    def _copy_due(self, copy: SimCopy) -> None:
        # A clone's time is up, a free copy reached its end, or a fault hits at the first byte.
        if copy.clone or copy.joined or copy.stop_at <= 0:
            self._finish(copy)
        else:
            self._join(copy)

    def _clock_due(self, clock: _Clock) -> None:
        """Capped copies of the clock reached their targets."""
        t = self.t or 0.0
        clock.advance(t)
        heap = clock.capped
        # Within a byte, or a microsecond at the cap: at epoch-sized times a float cannot
        # resolve much less, and the event must not be re-armed at the same instant forever.
        reached = clock.progress + max(_EPSILON, clock.cap * 1e-6)
        while heap and heap[0][0] <= reached:
            _, _, mgen, copy = heapq.heappop(heap)
            if mgen == copy.mgen and copy.capped and copy.status is CopyStatus.PENDING:
                self._finish(copy)
        self._to_arm[clock] = None

    def _join(self, copy: SimCopy) -> None:
        t = self.t or 0.0
        group = self._groups.get(copy.source)
        if group is None:
            group = self._groups[copy.source] = _Group(copy.source, _Clock(t=t))
            group.clock = group.own_clock
        account = self._account(copy.source.account)
        group.members[copy] = None
        account.outgoing += 1
        copy.joined, copy.group = True, group
        assert group.clock is not None
        self._make_free(copy, group.clock, t, 0.0)
        self._dirty[copy.source.account] = None
        self._touched[group] = None

    def _account(self, name: str) -> _Account:
        account = self._accounts.get(name)
        if account is None:
            account = self._accounts[name] = _Account(_Clock(t=self.t or 0.0))
        return account

    def _finish(self, copy: SimCopy) -> None:
        if copy.fail_reason:
            self._end(copy, CopyStatus.FAILED, copy.fail_reason, copy.stop_at)
        else:
            self._end(copy, CopyStatus.SUCCESS, "", float(copy.total))

    def _end(self, copy: SimCopy, status: CopyStatus, error: str, done: float) -> None:
        copy.status, copy.error, copy.done = status, error, done
        copy.gen += 1
        copy.mgen += 1
        _discard(self._by_source, copy.source, copy)
        group = copy.group
        if copy.joined and group is not None:
            copy.joined, copy.capped, copy.group, copy.clock = False, False, None, None
            group.members.pop(copy, None)
            name = copy.source.account
            account = self._accounts[name]
            account.outgoing -= 1
            self._dirty[name] = None
            if group.members:
                self._touched[group] = None
            else:
                del self._groups[group.source]
                self._unfile(account, group)
                self._touched.pop(group, None)
                group.own_clock.gen += 1  # its pending end, if any, no longer holds
        self._on_end(copy)

    # -- rates ---------------------------------------------------------------------------------

    def _done(self, copy: SimCopy, t: float) -> float:
        """Bytes a copy has moved at ``t``."""
        if not copy.joined:
            return copy.done
        if copy.capped:
            assert copy.clock is not None
            return copy.clock.progress_at(t) - copy.done
        return copy.done + copy.own_rate * (t - copy.t)

    def _make_free(self, copy: SimCopy, clock: _Clock, t: float, done: float) -> None:
        copy.capped, copy.clock, copy.done, copy.t = False, clock, done, t
        copy.mgen += 1
        heapq.heappush(clock.free_by_own, (-copy.own_rate, self._next(), copy.mgen, copy))
        self._schedule(t + max(0.0, copy.stop_at - done) / copy.own_rate, copy)

    def _make_capped(self, copy: SimCopy, clock: _Clock, done: float) -> None:
        copy.capped, copy.clock = True, clock
        copy.done = clock.progress - done  # the base: done = P - base
        copy.mgen += 1
        copy.gen += 1  # its own end event no longer holds
        target = copy.done + copy.stop_at
        heapq.heappush(clock.capped, (target, self._next(), copy.mgen, copy))
        heapq.heappush(clock.capped_by_own, (copy.own_rate, self._next(), copy.mgen, copy))
        self._to_arm[clock] = None

    def _rebalance(self) -> None:
        """New caps for what changed: accounts' shares, groups' members, clocks' next ends."""
        t = self.t or 0.0
        for name in self._dirty:
            self._rerate_account(self._accounts[name], t)
        self._dirty.clear()
        touched, self._touched = self._touched, {}
        for group in touched:
            self._place(group, t)
        to_arm, self._to_arm = self._to_arm, {}
        for clock in to_arm:
            self._arm(clock, t)

    def _rerate_account(self, account: _Account, t: float) -> None:
        clock = account.clock
        share = self._model.account_egress / max(1, account.outgoing)
        if share == clock.cap:
            return
        self.rebalanced += 1
        clock.advance(t)
        old, clock.cap = clock.cap, share
        blob_bw = self._model.blob_read_bandwidth
        for readers, groups in account.buckets.items():
            if (old <= blob_bw / readers) != (share <= blob_bw / readers):
                self._touched.update(dict.fromkeys(groups))  # to the other clock
        self._flip(clock, t)

    def _place(self, group: _Group, t: float) -> None:
        """File a group by its readers, on the clock of its bound, at its cap."""
        account = self._accounts[group.source.account]
        readers = len(group.members)
        if readers != group.filed_as:
            self._unfile(account, group)
            account.buckets.setdefault(readers, {})[group] = None
            group.filed_as = readers
        blob_cap = self._model.blob_read_bandwidth / readers
        clock = account.clock if account.clock.cap <= blob_cap else group.own_clock
        if clock is not group.clock:
            self._move(group, clock, t, blob_cap)
            return
        if clock is group.own_clock and clock.cap != blob_cap:
            self.rebalanced += 1
            clock.advance(t)
            clock.cap = blob_cap
        self._flip(clock, t)  # a copy that joined may run above the cap

    def _move(self, group: _Group, clock: _Clock, t: float, blob_cap: float) -> None:
        """Put every copy of ``group`` on ``clock`` (its own or its account's), from ``t``."""
        self.rebalanced += 1
        done = {copy: self._done(copy, t) for copy in group.members}
        if clock is group.own_clock:
            clock.advance(t)
            clock.cap = blob_cap
        else:
            group.own_clock.gen += 1  # its pending end, if any, no longer holds
            clock.advance(t)
        group.clock = clock
        for copy, moved in done.items():
            if copy.own_rate < clock.cap:
                self._make_free(copy, clock, t, moved)
            else:
                self._make_capped(copy, clock, moved)

    def _unfile(self, account: _Account, group: _Group) -> None:
        bucket = account.buckets.get(group.filed_as)
        if bucket is not None:
            bucket.pop(group, None)
            if not bucket:
                del account.buckets[group.filed_as]

    def _flip(self, clock: _Clock, t: float) -> None:
        """Move the copies whose own rate crossed the clock's cap to the other side."""
        clock.advance(t)
        cap = clock.cap
        free = clock.free_by_own
        while free and -free[0][0] >= cap:
            _, _, mgen, copy = heapq.heappop(free)
            if mgen == copy.mgen and not copy.capped and copy.joined:
                self._make_capped(copy, clock, copy.done + copy.own_rate * (t - copy.t))
        capped = clock.capped_by_own
        while capped and capped[0][0] < cap:
            _, _, mgen, copy = heapq.heappop(capped)
            if mgen == copy.mgen and copy.capped and copy.joined:
                self._make_free(copy, clock, t, clock.progress - copy.done)
        self._to_arm[clock] = None

    def _arm(self, clock: _Clock, t: float) -> None:
        """Schedule the clock's next capped end."""
        heap = clock.capped
        while heap and (heap[0][2] != heap[0][3].mgen or not heap[0][3].capped):
            heapq.heappop(heap)
        if heap and clock.cap > 0 and not math.isinf(clock.cap):
            clock.advance(t)
            self._schedule(t + max(0.0, heap[0][0] - clock.progress) / clock.cap, clock)
        else:
            clock.gen += 1


def _current(entry: tuple[float, int, int, SimCopy | _Clock]) -> bool:
    """Whether a heap entry still stands (no later schedule of its item replaced it)."""
    item = entry[3]
    return entry[2] == item.gen and (
        not isinstance(item, SimCopy) or item.status is CopyStatus.PENDING
    )


def _discard(index: dict[BlobRef, dict[SimCopy, None]], key: BlobRef, copy: SimCopy) -> None:
    members = index.get(key)
    if members is not None:
        members.pop(copy, None)
        if not members:
            del index[key]
