"""One job's target rows as a worker last read them, with the tables a reconcile pass needs,
kept up to date row by row from what changed.

A pass then costs what changed since the last one (plus the work it starts), not the job's
size: at 10,000 targets the worker no longer sorts and scans every row each pass. On a store
that cannot tell what changed exactly (SQLite: every row; Azure Tables: the rows written lately,
some of them again), rows read again unchanged are skipped.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import TypeVar

from .._domain import (
    COPY_STATES,
    HOLDS_COPY_STATES,
    IMAGE_STATES,
    IN_PRODUCTION_SOURCE_STATES,
    TERMINAL_TARGET_STATES,
    SourceKind,
    SourceRow,
    SourceState,
    TargetRow,
    TargetState,
)

__all__ = [
    "COPIED_SOURCE_KINDS",
    "RANGED_COPY_ID",
    "SourceTables",
    "TargetTables",
    "target_as_source",
]

_V = TypeVar("_V")

# A target row's copy id while its copy moves by ranges inside a worker (no platform copy id).
RANGED_COPY_ID = "ranged"
# A region's clones are named clone-<region>-<nnn> (Azure region names hold no '-').
CLONE_PREFIX = "clone-"
# Sources made by a server-side copy of another source: tier-1 and regional clones.
COPIED_SOURCE_KINDS = frozenset({SourceKind.TIER1, SourceKind.CLONE})
_MOVING_STATES = frozenset({SourceState.PENDING, SourceState.COPYING})


def target_as_source(row: TargetRow) -> SourceRow:
    """A finished target copy seen as a copy source (never stored in the sources table)."""
    return SourceRow(
        job_id=row.job_id,
        source_id=f"target:{row.target}",
        kind=SourceKind.TARGET,
        blob=row.blob,
        state=SourceState.READY,
        deleted=row.blob_deleted,
    )


class TargetTables:
    """A job's target rows by name, in the store's order, and what the fan-out and the worker
    look up in them: waiting targets, moving ones, live copies by region, readers per source.

    :param owner: the worker reading them; rows leased by anyone else are remembered with
        their lease's end, so the worker knows when one may come free.
    """

    def __init__(self, owner: str = "") -> None:
        self.owner = owner
        self.cursor = 0  # the store's, for the next read of what changed
        self.rows: dict[str, TargetRow] = {}
        self._position: dict[str, int] = {}
        self._names: list[str] = []
        self.rank: dict[str, int] = {}  # position among the names sorted
        self._pending: list[int] = []  # positions of PENDING rows, sorted
        self.pending_by_region: dict[str, dict[str, None]] = {}
        self.moving: dict[str, None] = {}  # COPYING, COPIED or IMAGING
        # Source id -> targets copying from it; region -> targets copying into it (no zeros).
        self.readers: Counter[str] = Counter()
        self.copying_in: Counter[str] = Counter()
        self.copying = 0
        self.live: dict[str, SourceRow] = {}  # "target:<name>" -> that copy as a source
        self.live_by_region: dict[str, dict[str, SourceRow]] = {}
        self.region: dict[str, str] = {}  # "target:<name>" -> its region
        # Copies still being made by ranges, which children may follow (pipelining).
        self.pipelined: dict[str, SourceRow] = {}
        self.pipelined_by_region: dict[str, dict[str, SourceRow]] = {}
        self.foreign: dict[str, float] = {}  # unfinished rows leased by others -> lease end

    @classmethod
    def of(cls, rows: Iterable[TargetRow]) -> TargetTables:
        tables = cls()
        tables.update(rows)
        return tables

    def update(self, rows: Iterable[TargetRow]) -> None:
        """Take these rows as the current ones (new names are appended in the given order)."""
        added = False
        for row in rows:
            old = self.rows.get(row.target)
            if old is None:
                self._position[row.target] = len(self._names)
                self._names.append(row.target)
                self.region[f"target:{row.target}"] = row.region
                added = True
            elif old == row:
                continue  # a store that cannot tell what changed gives every row again
            else:
                self._forget(old)
            self.rows[row.target] = row
            self._count(row)
        if added:
            self.rank = {name: i for i, name in enumerate(sorted(self._names))}

    def all(self) -> list[TargetRow]:
        return list(self.rows.values())

    def pending(self) -> Iterator[TargetRow]:
        """The waiting rows, in the store's order (update nothing while iterating)."""
        names, rows = self._names, self.rows
        for position in self._pending:
            yield rows[names[position]]

    def _count(self, row: TargetRow) -> None:
        self._index(row, +1)

    def _forget(self, row: TargetRow) -> None:
        self._index(row, -1)

    def _index(self, row: TargetRow, sign: int) -> None:
        name, state = row.target, row.state
        if state is TargetState.PENDING:
            position = self._position[name]
            waiting = self.pending_by_region.setdefault(row.region, {})
            if sign > 0:
                bisect.insort(self._pending, position)
                waiting[name] = None
            else:
                del self._pending[bisect.bisect_left(self._pending, position)]
                del waiting[name]
                if not waiting:
                    del self.pending_by_region[row.region]
        elif state in COPY_STATES or state in IMAGE_STATES:
            if sign > 0:
                self.moving[name] = None
            else:
                del self.moving[name]
        if state is TargetState.COPYING:
            self.copying += sign
            _add(self.copying_in, row.region, sign)
            if row.source_id:
                _add(self.readers, row.source_id, sign)
        if state is TargetState.COPYING and row.copy_id == RANGED_COPY_ID:
            key = f"target:{name}"
            moving = self.pipelined_by_region.setdefault(row.region, {})
            if sign > 0:
                self.pipelined[key] = moving[key] = dataclasses.replace(
                    target_as_source(row), state=SourceState.COPYING
                )
            else:
                del self.pipelined[key], moving[key]
        if state in HOLDS_COPY_STATES and not row.blob_deleted:
            key = f"target:{name}"
            local = self.live_by_region.setdefault(row.region, {})
            if sign > 0:
                self.live[key] = local[key] = target_as_source(row)
            else:
                del self.live[key], local[key]
        if row.lease_owner not in (None, self.owner) and state not in TERMINAL_TARGET_STATES:
            if sign > 0:
                self.foreign[name] = row.lease_until
            else:
                self.foreign.pop(name, None)


def _add(counts: Counter[str], key: str, n: int) -> None:
    """Count ``n`` more of ``key``, dropping it at zero (so a table is as long as what is
    under way, not as everything that ever was)."""
    total = counts[key] + n
    if total:
        counts[key] = total
    else:
        del counts[key]


@functools.lru_cache(maxsize=1 << 16)
def clone_region_of(source_id: str) -> str:
    """The region a clone source lies in (its seed target's), from its id."""
    return source_id.removeprefix(CLONE_PREFIX).rpartition("-")[0]


class SourceTables:
    """A job's source rows as a worker last read them, and what the fan-out looks up in them,
    kept up to date row by row (as :class:`TargetTables`): with region clones a job has
    thousands of sources, and with a copy cap one of them changes every few passes.

    :param owner: the worker reading them; the earliest lease anyone else holds on one is kept.
    """

    def __init__(self, owner: str = "") -> None:
        self.owner = owner
        self.rows: dict[str, SourceRow] = {}
        self.tier0: SourceRow | None = None
        # READY and not deleted: the upload and staging copies; the clones, by region.
        self.staged_live: dict[str, SourceRow] = {}
        self.clones_live: dict[str, dict[str, SourceRow]] = {}
        self.readers: Counter[str] = Counter()  # source id -> sources being copied from it
        # The upload or a copy still being made (not deleted): a source on its way.
        self.in_production: dict[str, None] = {}
        # Staging copies and clones to make or being made, by group ("" for the staging
        # copies, a clone's region for clones): (copying, waiting) by id.
        self.work: dict[str, tuple[dict[str, SourceRow], dict[str, SourceRow]]] = {}
        # A region's designated seed (the clones' parent from submit on): region -> target.
        self.designated: dict[str, str] = {}
        self._foreign: dict[str, float] = {}  # leased by anyone else -> lease end

    @classmethod
    def of(cls, rows: Iterable[SourceRow]) -> SourceTables:
        tables = cls()
        tables.update(rows)
        return tables

    def all(self) -> list[SourceRow]:
        return list(self.rows.values())

    def foreign_lease_end(self) -> float:
        return min(self._foreign.values(), default=float("inf"))

    def update(self, rows: Iterable[SourceRow]) -> bool:
        """Take these rows as the current ones; returns whether any changed."""
        changed = False
        for row in rows:
            old = self.rows.get(row.source_id)
            if old == row:
                continue
            if old is not None:
                self._index(old, -1)
            self.rows[row.source_id] = row
            self._index(row, +1)
            changed = True
        return changed

    def _index(self, row: SourceRow, sign: int) -> None:
        key, kind, state = row.source_id, row.kind, row.state
        if kind is SourceKind.TIER0 and sign > 0:
            self.tier0 = row
        live = state is SourceState.READY and not row.deleted
        if live and kind is SourceKind.CLONE:
            region = self.clones_live.setdefault(clone_region_of(key), {})
            _place(region, key, row, sign)
            if not region:
                del self.clones_live[clone_region_of(key)]
        elif live:
            _place(self.staged_live, key, row, sign)
        if state is SourceState.COPYING and row.parent_id:
            _add(self.readers, row.parent_id, sign)
        producing = kind is SourceKind.TIER0 or state is SourceState.COPYING
        if producing and state in IN_PRODUCTION_SOURCE_STATES and not row.deleted:
            _place(self.in_production, key, None, sign)
        if kind in COPIED_SOURCE_KINDS and state in _MOVING_STATES:
            group = clone_region_of(key) if kind is SourceKind.CLONE else ""
            copying, waiting = self.work.setdefault(group, ({}, {}))
            _place(copying if state is SourceState.COPYING else waiting, key, row, sign)
            if not copying and not waiting:
                del self.work[group]
        parent = row.parent_id or ""
        if kind is SourceKind.CLONE and parent.startswith("target:") and sign > 0:
            self.designated.setdefault(clone_region_of(key), parent.removeprefix("target:"))
        if row.lease_owner not in (None, self.owner):
            _place(self._foreign, key, row.lease_until, sign)


def _place(table: dict[str, _V], key: str, value: _V, sign: int) -> None:
    """Put ``key`` in (``sign`` > 0) or take it out of ``table``."""
    if sign > 0:
        table[key] = value
    else:
        del table[key]
