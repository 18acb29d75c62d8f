"""The state store in memory, with the semantics of the SQLite one (versions, CAS, order, filters).

No thread and no I/O, so it runs in virtual time. Rows live in lists sorted once, when the job is
created (its items never change afterwards), with an index by id: a put is O(1), a list is one copy
of each row. Several adapters may share one :class:`MemoryTables`, like processes sharing a file.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from ..._domain import Job, LogFilter, LogRecord, SourceRow, TargetRow
from ..._domain.publications import PublicationRow
from ..._exceptions import Conflict, NotFound, PreconditionFailed
from ..._redact import redact, redact_publication, redact_record
from ...abc import StateStore

__all__ = ["MemoryStateStore", "MemoryTables"]

R = TypeVar("R", Job, SourceRow, TargetRow, PublicationRow)


def _clone(row: R) -> R:
    """A shallow copy (every field of a row is immutable), much cheaper than dataclasses.replace."""
    new = object.__new__(type(row))
    new.__dict__ = row.__dict__.copy()
    return new


def _by_key(row: PublicationRow) -> str:
    return row.key


@dataclass
class MemoryTables:
    """The data: what a database file would hold."""

    jobs: dict[str, Job] = field(default_factory=dict)
    sources: dict[str, tuple[list[SourceRow], dict[str, int]]] = field(default_factory=dict)
    targets: dict[str, tuple[list[TargetRow], dict[str, int]]] = field(default_factory=dict)
    publications: dict[str, dict[str, PublicationRow]] = field(default_factory=dict)
    logs: dict[str, list[LogRecord]] = field(default_factory=dict)
    switches: dict[str, bool] = field(default_factory=dict)
    # Positions of the rows written, per job, in order (list_*_changed), and a count of the
    # writes that change more than a lease's end or a progress figure (revision).
    written: dict[str, list[int]] = field(default_factory=dict)
    sources_written: dict[str, list[int]] = field(default_factory=dict)
    writes: int = 0
    # Workers waiting for the next write that counts (MemoryStateStore.wake_on_write).
    waiters: list[asyncio.Future[None]] = field(default_factory=list)

    def count_writes(self, writes: int) -> None:
        """Count writes that matter to a worker's pass, and wake whoever waits for one."""
        if not writes:
            return
        self.writes += writes
        waiters, self.waiters = self.waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)


class MemoryStateStore(StateStore):
    """:param tables: share another store's data (a second "process"); new tables if None."""

    def __init__(self, tables: MemoryTables | None = None) -> None:
        self.tables = tables if tables is not None else MemoryTables()

    # jobs

    async def create_job(
        self,
        job: Job,
        sources: Sequence[SourceRow],
        targets: Sequence[TargetRow],
        publications: Sequence[PublicationRow] = (),
    ) -> None:
        t = self.tables
        if job.id in t.jobs:
            raise Conflict(f"Job {job.id!r} already exists.")
        source_rows = sorted((_clone(s) for s in sources), key=lambda s: s.source_id)
        target_rows = sorted((_clone(r) for r in targets), key=lambda r: r.target)
        t.jobs[job.id] = _clone(job)
        t.sources[job.id] = (source_rows, {s.source_id: i for i, s in enumerate(source_rows)})
        t.targets[job.id] = (target_rows, {r.target: i for i, r in enumerate(target_rows)})
        t.publications[job.id] = {p.key: _clone(p) for p in sorted(publications, key=_by_key)}
        t.written[job.id] = []
        t.sources_written[job.id] = []
        t.count_writes(1)

    async def get_job(self, job_id: str) -> Job:
        job = self.tables.jobs.get(job_id)
        if job is None:
            raise NotFound(f"Job {job_id!r} does not exist; `imagedist jobs` lists the jobs.")
        return _clone(job)

    async def list_jobs(self) -> list[Job]:
        jobs = sorted(self.tables.jobs.values(), key=lambda j: (j.created_at, j.id), reverse=True)
        return [_clone(job) for job in jobs]

    async def update_job(self, job: Job, *, expected_revision: int | None = None) -> None:
        stored = self.tables.jobs.get(job.id)
        if stored is None:
            raise NotFound(f"Job {job.id!r} does not exist.")
        if expected_revision is not None and stored.revision != expected_revision:
            raise PreconditionFailed(f"Job {job.id!r} was changed by a retry meanwhile.")
        stored.state, stored.finished_at = job.state, job.finished_at
        stored.revision = job.revision
        self.tables.count_writes(1)

    # items

    async def list_sources(self, job_id: str) -> list[SourceRow]:
        rows, _ = self.tables.sources.get(job_id, ([], {}))
        return [_clone(row) for row in rows]

    async def list_targets(self, job_id: str) -> list[TargetRow]:
        rows, _ = self.tables.targets.get(job_id, ([], {}))
        return [_clone(row) for row in rows]

    async def list_targets_changed(self, job_id: str, cursor: int) -> tuple[list[TargetRow], int]:
        rows, _ = self.tables.targets.get(job_id, ([], {}))
        return _changed(rows, self.tables.written.get(job_id, []), cursor)

    async def list_sources_changed(self, job_id: str, cursor: int) -> tuple[list[SourceRow], int]:
        rows, _ = self.tables.sources.get(job_id, ([], {}))
        return _changed(rows, self.tables.sources_written.get(job_id, []), cursor)

    def revision(self) -> int:
        return self.tables.writes

    def wake_on_write(self, waiter: asyncio.Future[None]) -> bool:
        self.tables.waiters.append(waiter)
        return True

    async def list_publications(self, job_id: str) -> list[PublicationRow]:
        rows = self.tables.publications.get(job_id, {})
        return [_clone(row) for row in sorted(rows.values(), key=_by_key)]

    async def put_publication(self, row: PublicationRow) -> PublicationRow:
        rows = self.tables.publications.get(row.job_id, {})
        stored = rows.get(row.key)
        if stored is None or stored.version != row.version:
            raise PreconditionFailed(
                f"The gallery version {row.key!r} of job {row.job_id!r} was changed by another"
                " worker."
            )
        new = redact_publication(_clone(row))
        new.version = row.version + 1
        rows[row.key] = _clone(new)
        self.tables.count_writes(1)
        return new

    async def put_source(self, row: SourceRow) -> SourceRow:
        rows, index = self.tables.sources.get(row.job_id, ([], {}))
        i = index.get(row.source_id)
        if i is None or rows[i].version != row.version:
            raise PreconditionFailed(
                f"The source {row.source_id!r} of job {row.job_id!r} was changed by another worker."
            )
        new = _clone(row)
        new.version = row.version + 1
        new.error = redact(new.error)
        self.tables.count_writes(_news(rows[i], new))
        rows[i] = _clone(new)
        self.tables.sources_written.setdefault(row.job_id, []).append(i)
        return new

    async def put_target(self, row: TargetRow) -> TargetRow:
        rows, index = self.tables.targets.get(row.job_id, ([], {}))
        i = index.get(row.target)
        if i is None or rows[i].version != row.version:
            raise PreconditionFailed(
                f"The target {row.target!r} of job {row.job_id!r} was changed by another worker."
            )
        new = _clone(row)
        new.version = row.version + 1
        new.error = redact(new.error)
        self.tables.count_writes(_news(rows[i], new))
        rows[i] = _clone(new)
        self.tables.written.setdefault(row.job_id, []).append(i)
        return new

    # logs and switches

    async def append_log(self, record: LogRecord) -> None:
        stored = redact_record(dataclasses.replace(record, extra=dict(record.extra)))
        self.tables.logs.setdefault(record.job_id, []).append(stored)

    async def list_logs(self, job_id: str, where: LogFilter | None = None) -> list[LogRecord]:
        where = where or LogFilter()
        return [
            dataclasses.replace(record, extra=dict(record.extra))
            for record in self.tables.logs.get(job_id, [])
            if where.matches(record)
        ]

    async def set_target_switch(self, names: Sequence[str], enabled: bool) -> None:
        for name in names:
            self.tables.switches[name] = enabled
        self.tables.count_writes(1)

    async def target_switches(self) -> dict[str, bool]:
        return dict(self.tables.switches)


# What a lease renewal or a progress report changes: no news for another worker's pass.
_ROUTINE = frozenset({"version", "lease_until", "updated_at", "progress_bytes"})


def _news(old: object, new: object) -> bool:
    """Whether a write changes more than a lease's end or a progress figure."""
    before, after = old.__dict__, new.__dict__
    return any(before[key] != value for key, value in after.items() if key not in _ROUTINE)


def _changed(rows: list[R], written: list[int], cursor: int) -> tuple[list[R], int]:
    """The rows written since ``cursor`` (0: all), in their order, and the next cursor: one
    more than the length of the log of writes, so never 0."""
    if cursor <= 0:
        return [_clone(row) for row in rows], len(written) + 1
    changed = dict.fromkeys(written[cursor - 1 :])
    return [_clone(rows[i]) for i in sorted(changed)], len(written) + 1
