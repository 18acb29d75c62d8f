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

import random
from collections import Counter
from collections.abc import Iterable

from .._domain import (
    HOLDS_COPY_STATES,
    IN_PRODUCTION_SOURCE_STATES,
    SourceKind,
    SourceRow,
    SourceState,
    TargetRow,
    TargetState,
)

__all__ = [
    "BroadcastFanout",
    "Fanout",
    "OriginalFanout",
    "live_sources",
    "make_fanout",
    "target_as_source",
]

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


def live_sources(sources: Iterable[SourceRow], targets: Iterable[TargetRow]) -> list[SourceRow]:
    """Every blob a copy may read now: verified staging copies and target copies whose blob
    still exists (a deleted one serves nobody, whatever its row's state says)."""
    live = [s for s in sources if s.state is SourceState.READY and not s.deleted]
    live += [
        target_as_source(t) for t in targets if t.state in HOLDS_COPY_STATES and not t.blob_deleted
    ]
    return live


class Fanout:
    """Shared bookkeeping: the usable sources and how many copies read each one right now.

    Built once per reconcile pass from one snapshot of the job's rows.
    """

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
        self._account_region = {t.blob.account: t.region for t in self.targets}
        self._live = {s.source_id: s for s in live_sources(self.sources, self.targets)}
        self.readers: Counter[str] = Counter()
        for target in self.targets:
            if target.state is TargetState.COPYING and target.source_id:
                self.readers[target.source_id] += 1
        for source in self.sources:
            if source.state is SourceState.COPYING and source.parent_id:
                self.readers[source.parent_id] += 1

    def by_id(self) -> dict[str, SourceRow]:
        """Every source a copy may be reading from, by id (to resume a copy)."""
        return self._live

    def region_of(self, source: SourceRow) -> str:
        if source.kind is SourceKind.CLONE:
            return self._account_region.get(source.blob.account, self.staging_region)
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

    def exhausted(self) -> bool:
        """Whether a waiting target would wait forever: no source it may use exists or is being
        made. The engine then makes a new one (or fails the waiting targets with the reason)."""
        raise NotImplementedError

    def _staged_in_production(self) -> bool:
        return any(
            s.state in IN_PRODUCTION_SOURCE_STATES and not s.deleted
            for s in self.sources
            if s.kind is SourceKind.TIER0 or s.state is SourceState.COPYING
        )

    def _take(self, candidates: list[SourceRow]) -> SourceRow | None:
        free = [s for s in candidates if self.readers[s.source_id] < self.max_reads]
        if not free:
            return None
        best = min(free, key=lambda s: (self.readers[s.source_id], s.source_id))
        self.readers[best.source_id] += 1
        return best


class BroadcastFanout(Fanout):
    """Every finished copy becomes a source; one cross-region seed per region."""

    def __init__(
        self,
        sources: Iterable[SourceRow],
        targets: Iterable[TargetRow],
        *,
        staging_region: str,
        max_reads: int,
    ) -> None:
        super().__init__(sources, targets, staging_region=staging_region, max_reads=max_reads)
        self._ready = list(self._live.values())
        self._staged = [s for s in self._ready if s.kind in (SourceKind.TIER0, SourceKind.TIER1)]
        self._by_account: dict[str, list[SourceRow]] = {}
        for source in self._ready:
            self._by_account.setdefault(source.blob.account, []).append(source)
        # The target whose account holds its region's clones: it is seeded first, so the
        # clones can be made from it (a clone is made only from a blob of the same account).
        clone_accounts = {s.blob.account for s in self.sources if s.kind is SourceKind.CLONE}
        self._designated = {
            t.region: t.target for t in self.targets if t.blob.account in clone_accounts
        }
        self._by_name = {t.target: t for t in self.targets}
        self._by_region: dict[str, list[SourceRow]] = {}
        for source in self._ready:
            self._by_region.setdefault(self.region_of(source), []).append(source)
        # A region is seeded while it holds a live source or a copy into it runs; one whose
        # copies were all cleaned up needs a new seed (waiting on it would wait forever).
        self._seeded = set(self._by_region)
        self._seeded |= {t.region for t in self.targets if t.state is TargetState.COPYING}

    def tier1_parent(self, row: SourceRow) -> SourceRow | None:
        # A same-account copy is a metadata clone that reads nothing to speak of: any blob of
        # the account will do, whatever reads it serves (taking one of its reads would make
        # the clones wait on the copies they exist to serve). None yet: for a region's clones,
        # its seed has not landed.
        if row.kind is SourceKind.TIER1:
            candidates = self._staged  # the staging account's
        else:
            candidates = self._by_account.get(row.blob.account, [])
        return min(candidates, key=lambda s: s.source_id) if candidates else None

    def priority(self, row: TargetRow) -> int:
        # Each region's designated target first (the staging region's too): its copy starts
        # the region's tree and its clones; then the seed of a region without one; a local
        # copy only grows a tree that exists.
        if self._designated.get(row.region) == row.target:
            return 0
        return 2 if row.region in self._seeded else 1

    def target_source(self, row: TargetRow) -> SourceRow | None:
        local = self._by_region.get(row.region, [])
        if local or row.region in self._seeded:
            return self._take(local)  # wait for the region's seed rather than cross again
        if not self._may_seed(row):
            return None
        # The region's seed: cross once, preferably from the staging copies.
        source = self._take(self._staged) or self._take(self._ready)
        if source is not None:
            self._seeded.add(row.region)
        return source

    def _may_seed(self, row: TargetRow) -> bool:
        """Whether ``row`` may be its region's seed: the designated target while it can still be
        seeded (its clones need its account), any target once it cannot."""
        designated = self._by_name.get(self._designated.get(row.region, ""))
        if designated is None or designated.target == row.target:
            return True
        return designated.state is not TargetState.PENDING

    def exhausted(self) -> bool:
        copying = any(t.state is TargetState.COPYING for t in self.targets)
        return not self._live and not copying and not self._staged_in_production()


class OriginalFanout(Fanout):
    """The original's tier-1 chain, a barrier, then round-robin from the staging copies."""

    def __init__(
        self,
        sources: Iterable[SourceRow],
        targets: Iterable[TargetRow],
        *,
        job_id: str,
        staging_region: str,
        max_reads: int,
    ) -> None:
        super().__init__(sources, targets, staging_region=staging_region, max_reads=max_reads)
        self._rng = random.Random(job_id)
        staged = sorted(
            (s for s in self._live.values() if s.kind is not SourceKind.TARGET),
            key=lambda s: s.source_id,
        )
        self._rng.shuffle(staged)
        self._order = staged
        names = sorted(t.target for t in self.targets)
        self._index = {name: i for i, name in enumerate(names)}
        self._by_id = {s.source_id: s for s in self.sources}

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
        return f"tier1-{random.Random(f'{row.job_id}:{number}').randint(1, number - 1):03d}"

    def target_source(self, row: TargetRow) -> SourceRow | None:
        if self._tier1_coming():
            return None  # the original waited for every tier-1 copy first
        if not self._order:
            return None
        return self._order[self._index[row.target] % len(self._order)]

    def _tier1_coming(self) -> bool:
        tier1 = [s for s in self.sources if s.kind is SourceKind.TIER1 and not s.deleted]
        if any(s.state is SourceState.COPYING for s in tier1):
            return True
        pending = any(s.state is SourceState.PENDING for s in tier1)
        return pending and (bool(self._order) or self._staged_in_production())

    def exhausted(self) -> bool:
        return not self._order and not self._staged_in_production()


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
