"""The state store port, offered with the other ports by :mod:`imagedist.abc`. Apart from
them so that a command that only reads jobs loads this one port, not the others' values
(issue 13)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncio

    from ._domain import Job, LogFilter, LogRecord, SourceRow, TargetRow
    from ._domain.publications import PublicationRow

__all__ = ["StateStore"]


class StateStore(ABC):
    """Jobs, their items and logs, with optimistic concurrency on every item.

    Every ``put_*`` takes the row as last read; it is written only if the stored version still equals
    ``row.version`` and returns the row with its new version. This is what lets several workers share
    one job without locks, and a restarted worker resume without duplicating an effect.
    """

    @abstractmethod
    async def create_job(
        self,
        job: Job,
        sources: Sequence[SourceRow],
        targets: Sequence[TargetRow],
        publications: Sequence[PublicationRow] = (),
    ) -> None:
        """Register a job and all its items at once.

        :raises Conflict: if a job with that id exists.
        """

    @abstractmethod
    async def get_job(self, job_id: str) -> Job:
        """:raises NotFound: if there is no such job."""

    @abstractmethod
    async def list_jobs(self) -> list[Job]:
        """Every job, newest first."""

    @abstractmethod
    async def update_job(self, job: Job, *, expected_revision: int | None = None) -> None:
        """Store the job's state, finish time and revision.

        :param expected_revision: write only if the stored revision is this one (atomically).
        :raises NotFound: if there is no such job.
        :raises PreconditionFailed: if the stored revision is not ``expected_revision``.
        """

    @abstractmethod
    async def list_sources(self, job_id: str) -> list[SourceRow]:
        """The job's copy sources, sorted by id."""

    @abstractmethod
    async def list_targets(self, job_id: str) -> list[TargetRow]:
        """The job's targets, sorted by target name."""

    async def list_targets_changed(self, job_id: str, cursor: int) -> tuple[list[TargetRow], int]:
        """The job's targets written since ``cursor`` (0: all of them), and the cursor for the
        next call. A store that keeps no log of its writes returns them all and 0 every time
        (the default), which is always correct; the worker then reads every row each pass."""
        return await self.list_targets(job_id), 0

    async def list_sources_changed(self, job_id: str, cursor: int) -> tuple[list[SourceRow], int]:
        """Like :meth:`list_targets_changed`, for the job's copy sources."""
        return await self.list_sources(job_id), 0

    def revision(self) -> int | None:
        """A number that grows with every write to the store that may matter to a worker's
        pass (more than a lease renewed or a progress figure), if the store can tell it for free
        (an in-memory one); None otherwise. A worker skips a pass when it has not changed (and
        nothing else can have), so a simulated job costs its events, not its duration."""
        return None

    def wake_on_write(self, waiter: asyncio.Future[None]) -> bool:
        """Have ``waiter`` resolved at the next write that changes :meth:`revision`, if this
        store can tell (an in-memory one); returns whether it will be. A worker with nothing
        to do then sleeps until that write instead of looking every poll interval."""
        return False

    @abstractmethod
    async def list_publications(self, job_id: str) -> list[PublicationRow]:
        """The job's gallery versions, sorted by key."""

    @abstractmethod
    async def put_publication(self, row: PublicationRow) -> PublicationRow:
        """Write the row if its version is current; return it with the new version.

        :raises PreconditionFailed: if another writer changed it since it was read.
        """

    @abstractmethod
    async def put_source(self, row: SourceRow) -> SourceRow:
        """Write the row if its version is current; return it with the new version.

        :raises PreconditionFailed: if another writer changed it since it was read.
        """

    @abstractmethod
    async def put_target(self, row: TargetRow) -> TargetRow:
        """Write the row if its version is current; return it with the new version.

        :raises PreconditionFailed: if another writer changed it since it was read.
        """

    @abstractmethod
    async def append_log(self, record: LogRecord) -> None:
        """Append one line to the job's log."""

    @abstractmethod
    async def list_logs(self, job_id: str, where: LogFilter | None = None) -> list[LogRecord]:
        """The job's log in time order: every line, or those ``where`` matches."""

    @abstractmethod
    async def set_target_switch(self, names: Sequence[str], enabled: bool) -> None:
        """Enable or disable targets by name, for running and future jobs."""

    @abstractmethod
    async def target_switches(self) -> dict[str, bool]:
        """Targets whose enablement was set at run time, by name."""

    async def is_ready(self) -> bool:
        """Whether the store's tables exist (stores that create themselves always say yes)."""
        return True

    async def probe_write(self) -> None:  # noqa: B027 - most stores are local files
        """Write one probe record and delete it again (``imagedist check``): proves this
        identity may write, where a remote store checks roles. A store whose tables do not
        exist yet writes nothing (they are ``setup``'s to make).

        :raises AuthFailed: if the write is refused.
        """

    async def ensure_ready(self) -> None:  # noqa: B027 - most stores create themselves
        """Create the store's tables (``imagedist setup`` calls this); idempotent."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections and handles."""
