"""A job's status, computed from its items alone: honest percentages, never from counting log rows."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .._domain import (
    ACTIVE_TARGET_STATES,
    HOLDS_COPY_STATES,
    UPLOAD_AHEAD_STATES,
    FailedPhase,
    Job,
    JobState,
    SourceKind,
    SourceRow,
    SourceState,
    TargetRow,
    TargetState,
)
from .._domain.publications import PublicationRow, PublicationState
from .._exceptions import InvalidInput, NotFound

if TYPE_CHECKING:
    from ..abc import StateStore

__all__ = [
    "PUBLICATION_ACTIVE_STATES",
    "JobStatus",
    "derive_job_state",
    "get_job",
    "job_status",
    "summarize",
]

PUBLICATION_ACTIVE_STATES = frozenset(
    {PublicationState.PENDING, PublicationState.CREATING, PublicationState.REPLICATING}
)


@dataclass(frozen=True)
class JobStatus:
    """The four phase percentages (floored: 99.5 % prints as 99), errors, and whether it is done."""

    job: Job
    upload_pct: int
    tier1_pct: int
    copies_pct: int
    images_pct: int
    error_count: int
    completed: bool
    state: JobState
    counts: dict[str, int] = field(default_factory=dict)
    targets: list[TargetRow] = field(default_factory=list)
    # Gallery versions (issue 11): their rows, and replication done over every target region.
    publications: list[PublicationRow] = field(default_factory=list)
    gallery_pct: int | None = None  # None: the job publishes no gallery version


def _pct(done: int, total: int) -> int:
    # Floor, so a phase reads 100 only when every item is finished.
    return 100 if total == 0 else (100 * done) // total


def _failed_after_copy(row: TargetRow) -> bool:
    return row.state is TargetState.FAILED and row.failed_phase is FailedPhase.IMAGE


def summarize(
    job: Job,
    sources: list[SourceRow],
    targets: list[TargetRow],
    publications: Sequence[PublicationRow] = (),
) -> JobStatus:
    """Compute the status; disabled (skipped) targets count in no denominator."""
    tier0 = [s for s in sources if s.kind is SourceKind.TIER0]
    tier1 = [s for s in sources if s.kind is SourceKind.TIER1]
    active = [t for t in targets if t.state is not TargetState.SKIPPED]
    if tier0 and tier0[0].state is SourceState.READY:
        upload = 100
    else:
        progress = tier0[0].progress_bytes if tier0 else 0
        upload = _pct(progress, job.size_bytes) if job.size_bytes else 0
        upload = min(upload, 99)
    tier1_ready = sum(1 for s in tier1 if s.state is SourceState.READY)
    copied = sum(1 for t in active if t.state in HOLDS_COPY_STATES or _failed_after_copy(t))
    done = sum(1 for t in active if t.state is TargetState.DONE)
    failed = sum(1 for t in active if t.state is TargetState.FAILED)
    failed += sum(1 for s in sources if s.state is SourceState.FAILED)
    failed += sum(1 for p in publications if p.state is PublicationState.FAILED)
    state = derive_job_state(sources, targets, publications)
    return JobStatus(
        job=job,
        upload_pct=upload,
        tier1_pct=_pct(tier1_ready, len(tier1)),
        copies_pct=_pct(copied, len(active)),
        images_pct=_pct(done, len(active)),
        error_count=failed,
        completed=state is JobState.COMPLETED,
        state=state,
        counts=dict(Counter(t.state.value for t in targets)),
        targets=targets,
        publications=list(publications),
        gallery_pct=_replication_pct(publications) if "gallery" in job.publish else None,
    )


def _replication_pct(publications: Sequence[PublicationRow]) -> int:
    """Percent of every gallery version's target regions replicated (floored)."""
    regions = [r for p in publications for r in p.regions.values()]
    if not regions:
        return 100 if all(p.state is PublicationState.DONE for p in publications) else 0
    done = sum(100 if r.state == "completed" else min(r.progress, 99) for r in regions)
    return done // len(regions)


def derive_job_state(
    sources: list[SourceRow],
    targets: list[TargetRow],
    publications: Sequence[PublicationRow] = (),
) -> JobState:
    """Active while any item can progress; completed when every enabled target is done and
    every gallery version replicated."""
    if any(t.state in ACTIVE_TARGET_STATES for t in targets):
        return JobState.ACTIVE
    if any(p.state in PUBLICATION_ACTIVE_STATES for p in publications):
        return JobState.ACTIVE
    tier0 = [s for s in sources if s.kind is SourceKind.TIER0]
    if any(s.state in UPLOAD_AHEAD_STATES for s in tier0):
        return JobState.ACTIVE
    failed_source = any(s.state is SourceState.FAILED for s in tier0)
    if failed_source or any(t.state is TargetState.FAILED for t in targets):
        return JobState.FAILED
    if any(p.state is PublicationState.FAILED for p in publications):
        return JobState.FAILED
    return JobState.COMPLETED


# Reading a job is here, apart from the operations that change one (`_jobs`), so that `status`
# and `jobs` load neither the worker nor the publications (issue 13).


async def job_status(state: StateStore, job_id: str) -> JobStatus:
    """:raises InvalidInput: if there is no such job."""
    job = await get_job(state, job_id)
    publications = await state.list_publications(job.id) if "gallery" in job.publish else []
    return summarize(
        job, await state.list_sources(job.id), await state.list_targets(job.id), publications
    )


async def get_job(state: StateStore, job_id: str) -> Job:
    """:raises InvalidInput: if there is no such job (a user's typo, so exit status 2)."""
    try:
        return await state.get_job(job_id)
    except NotFound as exc:
        raise InvalidInput(str(exc)) from None
