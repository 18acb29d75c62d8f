"""Fan-out strategies: which source each copy reads from. Pure functions of one snapshot of a
job's rows, so the engine stays the same whichever strategy the config names.

``broadcast`` (the default) is a region-seeded broadcast tree: every finished copy becomes a
source; a region is seeded by exactly one cross-region copy, and its other targets copy from
sources in their own region, so cross-region egress is (regions − 1) × the disk's data; no source
serves more than ``max_reads_per_source`` copies at once.

``original`` reproduces the PowerShell solution for comparison: a chain of tier-1 copies in the
staging account (copy i from copy i − 1 for the first 10, then from a random earlier one), all of
them finished before any target copy starts, then target copies assigned round-robin over the
shuffled list of the upload and its tier-1 copies, regardless of region or load.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable

from .._domain import SourceKind, SourceRow, SourceState, TargetRow, TargetState

__all__ = ["BroadcastFanout", "Fanout", "OriginalFanout", "make_fanout", "target_as_source"]

COPIED = frozenset({TargetState.COPIED, TargetState.IMAGING, TargetState.DONE})
ORIGINAL_CHAIN = 10  # the original copied tier-1 copy i from copy i - 1 up to here


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


class Fanout:
    """Shared bookkeeping: the usable sources and how many copies read each one right now."""

    def __init__(
        self,
        sources: Iterable[SourceRow],
        targets: Iterable[TargetRow],
        *,
        staging_region: str,
        max_reads: int,
    ) -> None:
        self.sources = list(sources)
        self.targets = list(targets)
        self.staging_region = staging_region
        self.max_reads = max_reads
        self._target_region = {f"target:{t.target}": t.region for t in self.targets}
        self.readers: Counter[str] = Counter()
        for target in self.targets:
            if target.state is TargetState.COPYING and target.source_id:
                self.readers[target.source_id] += 1
        for source in self.sources:
            if source.state is SourceState.COPYING and source.parent_id:
                self.readers[source.parent_id] += 1

    def by_id(self) -> dict[str, SourceRow]:
        """Every source a copy may be reading from, by id (to resume a copy)."""
        usable = [s for s in self.sources if s.state is SourceState.READY and not s.deleted]
        usable += [target_as_source(t) for t in self.targets if t.state in COPIED]
        return {s.source_id: s for s in usable if not s.deleted}

    def region_of(self, source: SourceRow) -> str:
        return self._target_region.get(source.source_id, self.staging_region)

    def tier1_parent(self, row: SourceRow) -> SourceRow | None:
        """The source tier-1 copy ``row`` should be made from now, or None to wait."""
        raise NotImplementedError

    def priority(self, row: TargetRow) -> int:
        """Waiting targets are served in this order, lowest first."""
        return 0

    def target_source(self, row: TargetRow) -> SourceRow | None:
        """The source target ``row`` should copy from now, or None to wait."""
        raise NotImplementedError

    def _take(self, candidates: list[SourceRow]) -> SourceRow | None:
        free = [s for s in candidates if self.readers[s.source_id] < self.max_reads]
        if not free:
            return None
        best = min(free, key=lambda s: (self.readers[s.source_id], s.source_id))
        self.readers[best.source_id] += 1
        return best


class BroadcastFanout(Fanout):
    """Every finished copy becomes a source; one cross-region seed per region."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._ready = list(self.by_id().values())
        self._staged = [s for s in self._ready if s.kind is not SourceKind.TARGET]
        self._by_region: dict[str, list[SourceRow]] = {}
        for source in self._ready:
            self._by_region.setdefault(self.region_of(source), []).append(source)
        self._seeded = {t.region for t in self.targets if t.state in COPIED | {TargetState.COPYING}}
        self._seeded.add(self.staging_region)

    def tier1_parent(self, row: SourceRow) -> SourceRow | None:
        return self._take(self._staged)

    def priority(self, row: TargetRow) -> int:
        # Seeding a new region first: each seed starts a tree of its own, a local copy only
        # grows one that exists.
        return 1 if row.region in self._seeded else 0

    def target_source(self, row: TargetRow) -> SourceRow | None:
        local = self._by_region.get(row.region, [])
        if local or row.region in self._seeded:
            return self._take(local)  # wait for the region's seed rather than cross again
        # The region's seed: cross once, preferably from the staging copies.
        source = self._take(self._staged) or self._take(self._ready)
        if source is not None:
            self._seeded.add(row.region)
        return source


class OriginalFanout(Fanout):
    """The original's tier-1 chain, a barrier, then round-robin from the staging copies."""

    def __init__(self, *args: object, job_id: str, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._rng = random.Random(job_id)
        staged = sorted(
            (s for s in self.sources if s.kind in (SourceKind.TIER0, SourceKind.TIER1)),
            key=lambda s: s.source_id,
        )
        self._rng.shuffle(staged)
        self._order = staged
        names = sorted(t.target for t in self.targets)
        self._index = {name: i for i, name in enumerate(names)}

    def tier1_parent(self, row: SourceRow) -> SourceRow | None:
        number = int(row.source_id.rpartition("-")[2])
        by_id = {s.source_id: s for s in self.sources}
        if number == 1:
            parent_id = "tier0"
        elif number <= ORIGINAL_CHAIN:
            parent_id = f"tier1-{number - 1:03d}"
        else:
            parent_id = (
                f"tier1-{random.Random(f'{row.job_id}:{number}').randint(1, number - 1):03d}"
            )
        parent = by_id.get(parent_id)
        ready = parent is not None and parent.state is SourceState.READY and not parent.deleted
        return parent if ready else None

    def target_source(self, row: TargetRow) -> SourceRow | None:
        if any(s.state is not SourceState.READY for s in self._order if s.kind is SourceKind.TIER1):
            return None  # the original waited for every tier-1 copy first
        source = self._order[self._index[row.target] % len(self._order)]
        return None if source.deleted else source


def make_fanout(
    strategy: str,
    job_id: str,
    sources: list[SourceRow],
    targets: list[TargetRow],
    *,
    staging_region: str,
    max_reads: int,
) -> Fanout:
    """The strategy the config names, over one snapshot of the job's rows."""
    if strategy == "original":
        return OriginalFanout(
            sources, targets, job_id=job_id, staging_region=staging_region, max_reads=max_reads
        )
    return BroadcastFanout(sources, targets, staging_region=staging_region, max_reads=max_reads)
