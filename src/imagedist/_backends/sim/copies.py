"""Server-side copies as fluid flows: progress is computed from time, never byte by byte.

A running copy's rate is its fair share: ``min(own rate, source blob bandwidth / readers of that
blob, account egress / copies out of that account)``. Write the last two terms as the *cap* of the
source's group, ``m = min(S / n_source, E / n_account)``: a copy runs at ``min(own, m)``.

So the copies of one source split in two. *Free* copies (own < m) run at their own rate: their end
is a fixed time. *Capped* copies all run at ``m``: they share the group's progress counter ``P``
(bytes a capped copy moved since the group began), and a capped copy is done when ``P`` reaches its
target. When a copy joins or leaves, only the caps of the groups of that account change — one
update per source, not per copy — and only the copies whose own rate lies between the old and the
new cap change side. Ends are events in a heap, processed in time order whenever the world is
looked at (:meth:`CopyEngine.advance`), so a copy that ends frees its share at the exact instant it
ends, even if nobody polls it then.
"""

from __future__ import annotations

import heapq
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
    done: float = 0.0  # free: bytes at time t; capped: P of the group minus done ("base")
    t: float = 0.0
    capped: bool = False
    joined: bool = False
    gen: int = 0  # invalidates this copy's entries in the engine's heap
    mgen: int = 0  # invalidates its entries in its group's heaps
    group: _Group | None = None
    snapshot: tuple[list[tuple[int, int]], dict[int, bytes] | None] = field(
        default_factory=lambda: ([], None)
    )


@dataclass(eq=False)
class _Group:
    """The running copies of one source blob."""

    source: BlobRef
    members: dict[SimCopy, None] = field(default_factory=dict)
    cap: float = 0.0
    progress: float = 0.0  # P at time t
    t: float = 0.0
    gen: int = 0
    capped: list[tuple[float, int, int, SimCopy]] = field(default_factory=list)  # by target P
    capped_by_own: list[tuple[float, int, int, SimCopy]] = field(default_factory=list)  # min own
    free_by_own: list[tuple[float, int, int, SimCopy]] = field(default_factory=list)  # max own

    def progress_at(self, t: float) -> float:
        return self.progress + self.cap * (t - self.t)


class CopyEngine:
    """The copies in flight of one simulated world, advanced lazily to the time they are looked at.

    :param on_end: called once for every copy that ends (success, failure or abort).
    """

    def __init__(self, model: SimModel, on_end: Callable[[SimCopy], None]) -> None:
        self._model = model
        self._on_end = on_end
        self.t: float | None = None
        self._heap: list[tuple[float, int, int, SimCopy | _Group]] = []
        self._seq = 0
        self._groups: dict[BlobRef, _Group] = {}
        self._by_account: dict[str, dict[_Group, None]] = {}
        self._outgoing: dict[str, int] = {}
        self._by_source: dict[BlobRef, dict[SimCopy, None]] = {}
        self._dirty: dict[str, None] = {}
        # Groups whose members changed since the last rebalance: always re-rated; the others
        # only when their cap moved (one blob's readers changing leaves the rest alone).
        self._touched: set[_Group] = set()
        self.rebalanced = 0  # group re-rates, for profiling
        self._compact_at = 1024

    # -- time ----------------------------------------------------------------------------------

    def advance(self, now: float) -> float:
        """Process every event up to ``now``; return the engine's time (never goes back)."""
        if self.t is None:
            self.t = now
        heap = self._heap
        while True:
            if self._dirty:
                self._rebalance()
            if not heap or heap[0][0] > now:
                break
            when = heap[0][0]
            self.t = max(self.t, when)
            while heap and heap[0][0] <= when:
                _, _, gen, item = heapq.heappop(heap)
                if gen != item.gen:
                    continue
                if isinstance(item, _Group):
                    self._group_due(item)
                elif item.status is CopyStatus.PENDING:
                    self._copy_due(item)
        self.t = max(self.t, now)
        return self.t

    def _next(self) -> int:
        self._seq += 1
        return self._seq

    def _schedule(self, when: float, item: SimCopy | _Group) -> None:
        item.gen += 1
        heap = self._heap
        heapq.heappush(heap, (when, self._next(), item.gen, item))
        if len(heap) > self._compact_at:
            # Most entries were replaced by later schedules (a re-rate re-arms every source
            # blob of an account): drop them, so the heap is as long as what can still happen.
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
        t = self.t or 0.0
        if not copy.joined:
            done = copy.done
        elif copy.capped:
            assert copy.group is not None
            done = copy.group.progress_at(t) - copy.done
        else:
            done = copy.done + copy.own_rate * (t - copy.t)
        return int(max(0.0, min(copy.stop_at, done)))

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
        if self._dirty:
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

    def _group_due(self, group: _Group) -> None:
        """Capped copies of the group reached their targets."""
        t = self.t or 0.0
        self._advance_group(group, t)
        heap = group.capped
        # Within a byte, or a microsecond at the cap: at epoch-sized times a float cannot
        # resolve much less, and the event must not be re-armed at the same instant forever.
        reached = group.progress + max(_EPSILON, group.cap * 1e-6)
        while heap and heap[0][0] <= reached:
            _, _, mgen, copy = heapq.heappop(heap)
            if mgen == copy.mgen and copy.capped and copy.status is CopyStatus.PENDING:
                self._finish(copy)
        self._dirty[group.source.account] = None  # re-arms the group's event
        self._touched.add(group)

    def _join(self, copy: SimCopy) -> None:
        t = self.t or 0.0
        group = self._groups.get(copy.source)
        if group is None:
            group = self._groups[copy.source] = _Group(copy.source, t=t)
            self._by_account.setdefault(copy.source.account, {})[group] = None
        self._advance_group(group, t)
        group.members[copy] = None
        account = copy.source.account
        self._outgoing[account] = self._outgoing.get(account, 0) + 1
        copy.joined, copy.group = True, group
        self._make_free(copy, group, t, 0.0)
        self._dirty[account] = None
        self._touched.add(group)

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
            copy.joined, copy.capped, copy.group = False, False, None
            self._advance_group(group, self.t or 0.0)
            group.members.pop(copy, None)
            account = copy.source.account
            self._outgoing[account] -= 1
            self._dirty[account] = None
            self._touched.add(group)
            if not group.members:
                del self._groups[group.source]
                self._by_account[account].pop(group, None)
                group.gen += 1
        self._on_end(copy)

    # -- rates ---------------------------------------------------------------------------------

    def _advance_group(self, group: _Group, t: float) -> None:
        if t > group.t:
            group.progress += group.cap * (t - group.t)
            group.t = t

    def _make_free(self, copy: SimCopy, group: _Group, t: float, done: float) -> None:
        copy.capped, copy.done, copy.t = False, done, t
        copy.mgen += 1
        heapq.heappush(group.free_by_own, (-copy.own_rate, self._next(), copy.mgen, copy))
        self._schedule(t + max(0.0, copy.stop_at - done) / copy.own_rate, copy)

    def _make_capped(self, copy: SimCopy, group: _Group, done: float) -> None:
        copy.capped, copy.done = True, group.progress - done  # the base: done = P - base
        copy.mgen += 1
        copy.gen += 1  # its own end event no longer holds
        target = copy.done + copy.stop_at
        heapq.heappush(group.capped, (target, self._next(), copy.mgen, copy))
        heapq.heappush(group.capped_by_own, (copy.own_rate, self._next(), copy.mgen, copy))

    def _rebalance(self) -> None:
        """New caps for the groups of every account whose set of copies changed."""
        t = self.t or 0.0
        blob_bw, egress = self._model.blob_read_bandwidth, self._model.account_egress
        for account in self._dirty:
            groups = self._by_account.get(account)
            if not groups:
                continue
            account_share = egress / self._outgoing[account]
            for group in groups:
                cap = min(blob_bw / len(group.members), account_share)
                if cap == group.cap and group not in self._touched:
                    continue  # its copies' rates and its next end stand
                self.rebalanced += 1
                self._advance_group(group, t)
                group.cap = cap
                self._flip(group, t)
                self._arm(group, t)
        self._dirty.clear()
        self._touched.clear()

    def _flip(self, group: _Group, t: float) -> None:
        """Move the copies whose own rate crossed the cap to the other side."""
        cap = group.cap
        free = group.free_by_own
        while free and -free[0][0] >= cap:
            _, _, mgen, copy = heapq.heappop(free)
            if mgen == copy.mgen and not copy.capped and copy.joined:
                self._make_capped(copy, group, copy.done + copy.own_rate * (t - copy.t))
        capped = group.capped_by_own
        while capped and capped[0][0] < cap:
            _, _, mgen, copy = heapq.heappop(capped)
            if mgen == copy.mgen and copy.capped and copy.joined:
                self._make_free(copy, group, t, group.progress - copy.done)

    def _arm(self, group: _Group, t: float) -> None:
        """Schedule the group's next capped end."""
        heap = group.capped
        while heap and (heap[0][2] != heap[0][3].mgen or not heap[0][3].capped):
            heapq.heappop(heap)
        if heap:
            self._schedule(t + max(0.0, heap[0][0] - group.progress) / group.cap, group)
        else:
            group.gen += 1


def _current(entry: tuple[float, int, int, SimCopy | _Group]) -> bool:
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
