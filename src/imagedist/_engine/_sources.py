"""Fan-out strategies: which source each copy reads from. Pure functions of one snapshot of a
job's rows, so the engine stays the same whichever strategy the config names.

``broadcast`` (the default) is a region-seeded broadcast tree: every finished copy becomes a
source; a region is seeded by exactly one cross-region copy, and its other targets copy from
sources in their own region, so cross-region egress is (regions − 1) × the disk's data; no source
serves more than ``max_reads_per_source`` copies at once. Same-account copies are metadata clones
(seconds), so sources are multiplied where that is free: tier-1 clones of the upload in the
staging account seed every region in one round, and each region's seed is cloned in its own
account (``clone`` sources, made at submit for one designated seed target per region) until every
other target of the region can copy in the next round.

``original`` reproduces the PowerShell solution for comparison: a chain of tier-1 copies in the
staging account (copy i from copy i − 1 for the first 10, then from a random earlier one), all of
them finished before any target copy starts, then target copies assigned round-robin over the
shuffled list of the upload and its tier-1 copies, regardless of region or load.
"""

from __future__ import annotations

import functools
import itertools
import random
from collections import Counter
from collections.abc import Iterable, Iterator

from .._domain import (
    IN_PRODUCTION_SOURCE_STATES,
    SourceKind,
    SourceRow,
    SourceState,
    TargetRow,
    TargetState,
)
from ._rows import CLONE_PREFIX, SourceTables, TargetTables, clone_region_of

__all__ = [
    "BroadcastFanout",
    "Fanout",
    "OriginalFanout",
    "make_fanout",
]

ORIGINAL_CHAIN = 10  # the original copied tier-1 copy i from copy i - 1 up to here


def clone_name(region: str, number: int) -> str:
    return f"{CLONE_PREFIX}{region}-{number:03d}"


def clone_region(row: SourceRow) -> str:
    """The region a clone source lies in (its seed target's)."""
    return clone_region_of(row.source_id)


class Fanout:
    """Shared bookkeeping: the usable sources and how many copies read each one right now.

    Built from one snapshot of the job's sources and the targets' tables (kept up to date by
    the worker, so building a fan-out costs the number of sources, not of targets); while the
    sources stay the same, :meth:`renew` readies it for the next pass at a cost of the copies
    under way.
    """

    def __init__(
        self,
        sources: Iterable[SourceRow] | SourceTables,
        targets: Iterable[TargetRow] | TargetTables,
        *,
        staging_region: str,
        max_reads: int,
        pipelining: bool = False,
    ) -> None:
        self.sources = sources if isinstance(sources, SourceTables) else SourceTables.of(sources)
        # Whether a copy still being made by ranges may serve others (ranged copies follow it).
        self.pipelining = pipelining
        self.tables = targets if isinstance(targets, TargetTables) else TargetTables.of(targets)
        self.staging_region = staging_region
        self.max_reads = max_reads
        if self.sources.tier0 is None:
            raise ValueError("a job's sources hold its upload (tier0)")
        self.tier0: SourceRow = self.sources.tier0
        # The staging copies a copy may read now (the targets' live copies are in the tables),
        # and the regions' ready clones: kept by the source tables, so building a fan-out when
        # a source changed costs the staging copies, not the thousands of clones.
        self._staged_live = self.sources.staged_live
        self._clones_live = self.sources.clones_live
        self.readers: Counter[str] = Counter()
        self.renew()

    def renew(self) -> None:
        """Ready for a new pass over the same sources, the targets' tables being current: the
        readers are counted again, and what the last pass handed out is forgotten."""
        self.readers = Counter(self.tables.readers)
        self.readers.update(self.sources.readers)

    def live_source(self, source_id: str) -> SourceRow | None:
        """The source a copy may be reading from under this id, if it is live (to resume it):
        a copy still being made by ranges too, which its children follow."""
        if source_id.startswith(CLONE_PREFIX):
            return self._clones_live.get(clone_region_of(source_id), {}).get(source_id)
        return (
            self._staged_live.get(source_id)
            or self.tables.live.get(source_id)
            or self.tables.pipelined.get(source_id)
        )

    def region_of(self, source: SourceRow) -> str:
        if source.kind is SourceKind.CLONE:
            return clone_region(source)
        return self.tables.region.get(source.source_id, self.staging_region)

    def tier1_parent(self, row: SourceRow) -> SourceRow | None:
        """The source tier-1 copy ``row`` should be made from now, or None to wait."""
        raise NotImplementedError

    def tier1_work(self) -> Iterator[Iterable[SourceRow]]:
        """The staging copies and clones still to make or being made, in groups whose waiting
        members get the same answer from :meth:`tier1_parent` within a pass (so once one must
        wait, the others need not be asked): in each, those under way first, then the waiting
        ones by id (lazily: the caller stops at the first that must wait)."""
        for copying, waiting in self.sources.work.values():
            yield itertools.chain(copying.values(), waiting.values())

    def priority(self, row: TargetRow) -> int:
        """Waiting targets are served in this order, lowest first."""
        return 0

    def seeds_a_region(self, row: TargetRow, source: SourceRow) -> bool:
        """Whether copying ``source`` into ``row`` seeds a region the fan-out then fills from
        it (on the critical path of all its targets)."""
        return False

    def waiting(self) -> Iterator[TargetRow]:
        """The waiting targets to offer :meth:`target_source` this pass, in the order of
        :meth:`priority`, then the store's. A priority depends on the target's region only,
        so one look per region tells whether the order is the store's (the common case:
        nothing to sort, and the caller stops once copies are full)."""
        tables = self.tables
        levels = {
            self.priority(tables.rows[next(iter(names))])
            for names in tables.pending_by_region.values()
        }
        if len(levels) <= 1:
            return tables.pending()
        return iter(sorted(tables.pending(), key=self.priority))

    def target_source(self, row: TargetRow) -> SourceRow | None:
        """The source target ``row`` should copy from now, or None to wait."""
        raise NotImplementedError

    def exhausted(self) -> bool:
        """Whether a waiting target would wait forever: no source it may use exists or is being
        made. The engine then makes a new one (or fails the waiting targets with the reason)."""
        raise NotImplementedError

    def _staged_in_production(self) -> bool:
        return bool(self.sources.in_production)

    def _take(self, candidates: list[SourceRow]) -> SourceRow | None:
        """The free source with the fewest readers (a whole copy before one still being made:
        its child would wait for its ranges; then by id), now read once more; None if none is
        free. One walk of a region's sources, which number in the hundreds."""
        readers, most = self.readers, self.max_reads
        best, best_key = None, None
        for source in candidates:
            reading = readers[source.source_id]
            if reading >= most:
                continue
            key = (source.state is not SourceState.READY, reading, source.source_id)
            if best_key is None or key < best_key:
                best, best_key = source, key
        if best is not None:
            readers[best.source_id] += 1
        return best


class BroadcastFanout(Fanout):
    """Every finished copy becomes a source; one cross-region seed per region."""

    def __init__(
        self,
        sources: Iterable[SourceRow] | SourceTables,
        targets: Iterable[TargetRow] | TargetTables,
        *,
        staging_region: str,
        max_reads: int,
        pipelining: bool = False,
    ) -> None:
        super().__init__(
            sources,
            targets,
            staging_region=staging_region,
            max_reads=max_reads,
            pipelining=pipelining,
        )
        # The target whose account holds its region's clones (its name is the clones' parent
        # from submit on): it is seeded first, so the clones can be made from it.
        self._designated = self.sources.designated  # region -> target name

    def renew(self) -> None:
        super().renew()
        self._staged = list(self._staged_live.values())
        tables = self.tables
        # A region is seeded while it holds a live source or a copy into it runs; one whose
        # copies were all cleaned up needs a new seed (waiting on it would wait forever).
        self._seeded = {region for region, live in tables.live_by_region.items() if live}
        self._seeded |= set(tables.copying_in) | set(self._clones_live)
        if self._staged:
            self._seeded.add(self.staging_region)
        self._full: set[str] = set()  # regions whose sources serve all they may, this pass

    def _local(self, region: str) -> list[SourceRow]:
        """The region's sources: whole copies first, then (pipelining) copies still being made
        by ranges, which a child follows range by range."""
        local = list(self.tables.live_by_region.get(region, {}).values())
        local += self._clones_live.get(region, {}).values()
        if region == self.staging_region:
            local = self._staged + local
        if self.pipelining:
            local += self.tables.pipelined_by_region.get(region, {}).values()
        return local

    def tier1_parent(self, row: SourceRow) -> SourceRow | None:
        # A same-account copy is a metadata clone that reads nothing to speak of: any blob of
        # the account will do, whatever reads it serves (taking one of its reads would make
        # the clones wait on the copies they exist to serve). None yet: for a region's clones,
        # its seed has not landed.
        if row.kind is SourceKind.TIER1:
            return min(self._staged, key=lambda s: s.source_id) if self._staged else None
        # The designated target's whole copy, else a ready clone (all in its account).
        region = clone_region(row)
        seed = self.tables.live.get(f"target:{self._designated.get(region, '')}")
        if seed is not None and seed.blob.account == row.blob.account:
            return seed
        clones = [c for c in self._clones_live.get(region, {}).values() if c is not row]
        return min(clones, key=lambda s: s.source_id) if clones else None

    def waiting(self) -> Iterator[TargetRow]:
        """Every region's designated target first (so the seeds take the staging copies'
        reads before the staging region's own targets do), then region by region: within a
        pass every other waiting target of a region gets the same answer, so once one got
        none the region is skipped, and a pass costs the copies it places plus one look per
        region, not one per waiting target. The regions in the order of :meth:`priority`, then
        of their first waiting target; in a region, the store's order."""
        tables = self.tables
        by_region = tables.pending_by_region
        designated = sorted(
            (
                name
                for region, name in self._designated.items()
                if name in by_region.get(region, ())
            ),
            key=tables.rank.__getitem__,
        )
        for name in designated:
            yield tables.rows[name]

        def order(region: str) -> tuple[int, int]:
            first = next(iter(by_region[region]))
            return self.priority(tables.rows[first]), tables.rank[first]

        for region in sorted(by_region, key=order):
            seed = self._designated.get(region, "")
            for name in by_region.get(region, ()):
                if region in self._full:
                    break
                if name != seed:
                    yield tables.rows[name]

    def seeds_a_region(self, row: TargetRow, source: SourceRow) -> bool:
        return self.region_of(source) != row.region  # the one copy into the region

    def priority(self, row: TargetRow) -> int:
        # Each region's designated target first (the staging region's too): its copy starts
        # the region's tree and its clones; then the seed of a region without one; a local
        # copy only grows a tree that exists.
        if self._designated.get(row.region) == row.target:
            return 0
        return 2 if row.region in self._seeded else 1

    def target_source(self, row: TargetRow) -> SourceRow | None:
        if row.region in self._full:
            return None  # reads only grow within a pass: still no free source there
        source = self._source_for(row)
        if source is None:
            # Any other waiting target of the region would get none either this pass: the
            # same sources, and no seeding while the designated target waits (waiting).
            self._full.add(row.region)
        return source

    def _source_for(self, row: TargetRow) -> SourceRow | None:
        local = self._local(row.region)
        if local or row.region in self._seeded:
            # Wait for the region's seed rather than cross again.
            return self._take(local)
        if not self._may_seed(row):
            return None
        # The region's seed: cross once, preferably from the staging copies.
        source = self._take(self._staged) or self._take(self._elsewhere())
        if source is not None:
            self._seeded.add(row.region)
        return source

    def _elsewhere(self) -> list[SourceRow]:
        """Other regions' copies a seed may cross from, once their own targets need them no
        more: a region's reads are its own first (seeding from them would leave its targets
        waiting for clones)."""
        others = [*self.tables.live.values()]
        if self.pipelining:
            others += self.tables.pipelined.values()
        waiting = self.tables.pending_by_region
        return [s for s in others if not waiting.get(self.region_of(s))]

    def _may_seed(self, row: TargetRow) -> bool:
        """Whether ``row`` may be its region's seed: the designated target while it can still be
        seeded (its clones need its account), any target once it cannot."""
        designated = self.tables.rows.get(self._designated.get(row.region, ""))
        if designated is None or designated.target == row.target:
            return True
        return designated.state is not TargetState.PENDING

    def exhausted(self) -> bool:
        live = self._staged or self.tables.live or self._clones_live
        return not live and not self.tables.copying and not self._staged_in_production()


class OriginalFanout(Fanout):
    """The original's tier-1 chain, a barrier, then round-robin from the staging copies."""

    def __init__(
        self,
        sources: Iterable[SourceRow] | SourceTables,
        targets: Iterable[TargetRow] | TargetTables,
        *,
        job_id: str,
        staging_region: str,
        max_reads: int,
    ) -> None:
        super().__init__(sources, targets, staging_region=staging_region, max_reads=max_reads)
        self._order = [self._staged_live[i] for i in _shuffled(job_id, tuple(self._staged_live))]
        self._index = self.tables.rank
        self._by_id = self.sources.rows
        self._coming: bool | None = None  # _tier1_coming, worked out once per pass

    def tier1_parent(self, row: SourceRow) -> SourceRow | None:
        parent = self._by_id.get(self._designated_parent(row))
        if parent is not None and parent.state is SourceState.READY and not parent.deleted:
            return parent
        if parent is not None and (
            parent.state in IN_PRODUCTION_SOURCE_STATES and not parent.deleted
        ):
            return None  # it is on its way
        # The designated parent failed or was deleted: any live staging copy does, so the
        # chain never waits on a source that will not come back.
        return self._order[0] if self._order else None

    @staticmethod
    def _designated_parent(row: SourceRow) -> str:
        number = int(row.source_id.rpartition("-")[2])
        if number == 1:
            return "tier0"
        if number <= ORIGINAL_CHAIN:
            return f"tier1-{number - 1:03d}"
        return _random_parent(row.job_id, number)

    def target_source(self, row: TargetRow) -> SourceRow | None:
        if self._tier1_coming():
            return None  # the original waited for every tier-1 copy first
        if not self._order:
            return None
        return self._order[self._index[row.target] % len(self._order)]

    def waiting(self) -> Iterator[TargetRow]:
        if self._tier1_coming() or not self._order:
            return iter(())  # every waiting target would be told to wait
        return super().waiting()

    def _tier1_coming(self) -> bool:
        if self._coming is None:
            tier1 = [
                s for s in self._by_id.values() if s.kind is SourceKind.TIER1 and not s.deleted
            ]
            pending = any(s.state is SourceState.PENDING for s in tier1)
            self._coming = any(s.state is SourceState.COPYING for s in tier1) or (
                pending and (bool(self._order) or self._staged_in_production())
            )
        return self._coming

    def tier1_work(self) -> Iterator[Iterable[SourceRow]]:
        # Each waiting copy has a parent of its own (the chain): every one is asked.
        for group in super().tier1_work():
            yield from ([row] for row in group)

    def exhausted(self) -> bool:
        return not self._order and not self._staged_in_production()


@functools.lru_cache(maxsize=4096)
def _random_parent(job_id: str, number: int) -> str:
    """The original's parent of tier-1 copy ``number`` > 10: a random earlier one (the same
    every time it is asked for)."""
    return f"tier1-{random.Random(f'{job_id}:{number}').randint(1, number - 1):03d}"


@functools.lru_cache(maxsize=4)
def _shuffled(job_id: str, ids: tuple[str, ...]) -> tuple[str, ...]:
    """The original's shuffled list of staging copies (the same for the same copies: worked out
    once, not every pass)."""
    order = sorted(ids)
    random.Random(job_id).shuffle(order)
    return tuple(order)


def make_fanout(
    strategy: str,
    job_id: str,
    sources: list[SourceRow] | SourceTables,
    targets: list[TargetRow] | TargetTables,
    *,
    staging_region: str,
    max_reads: int,
    pipelining: bool = False,
) -> Fanout:
    """The strategy the config names, over one snapshot of the job's rows (``pipelining``: a
    target's copy still being made by ranges serves others, broadcast only)."""
    if strategy == "original":
        return OriginalFanout(
            sources, targets, job_id=job_id, staging_region=staging_region, max_reads=max_reads
        )
    return BroadcastFanout(
        sources,
        targets,
        staging_region=staging_region,
        max_reads=max_reads,
        pipelining=pipelining,
    )
