"""Choosing a copy source: pure functions over the job's rows, so any strategy can be swapped in."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from .._domain import SourceRow, SourceState, TargetRow, TargetState

__all__ = ["SourceChooser"]


class SourceChooser:
    """Hands out ready sources, least-read first, never past ``max_reads`` readers each.

    Built from one snapshot of the job's rows; every choice counts as a new reader, so one
    reconcile pass can assign many copies without overloading a source.
    """

    def __init__(
        self, sources: Iterable[SourceRow], targets: Iterable[TargetRow], max_reads: int
    ) -> None:
        source_list = list(sources)
        self._ready = [s for s in source_list if s.state is SourceState.READY and not s.deleted]
        self._max_reads = max_reads
        self._readers: Counter[str] = Counter()
        for target in targets:
            if target.state is TargetState.COPYING and target.source_id:
                self._readers[target.source_id] += 1
        for source in source_list:
            if source.state is SourceState.COPYING and source.parent_id:
                self._readers[source.parent_id] += 1

    def choose(self) -> SourceRow | None:
        """The ready source with the fewest readers and spare capacity, or None."""
        candidates = [s for s in self._ready if self._readers[s.source_id] < self._max_reads]
        if not candidates:
            return None
        best = min(candidates, key=lambda s: (self._readers[s.source_id], s.source_id))
        self._readers[best.source_id] += 1
        return best

    def readers(self, source_id: str) -> int:
        return self._readers[source_id]
