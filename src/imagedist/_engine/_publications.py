"""The worker's part for gallery versions (issue 11): which of a job's versions can move, leasing
them, running each as a task under the worker's guard, and their way forward when the upload
they need is gone."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from .._domain import Job, SourceRow, SourceState
from .._domain.events import LogLevel, Step
from .._domain.gallery import PublicationRow, PublicationState, VersionSource
from .._exceptions import NotFound, PreconditionFailed
from ._gallery import COMPLETED, PublicationDriver, needs_upload
from ._publish import CENTRAL, definition_spec
from ._status import PUBLICATION_ACTIVE_STATES

if TYPE_CHECKING:
    from ._worker import Worker

__all__ = ["GALLERY_POLL_MAX_SECONDS", "GalleryScheduler"]

#: The longest pause between two looks at a replicating version.
GALLERY_POLL_MAX_SECONDS = 60.0


def _busy(row: PublicationRow) -> bool:
    return row.state in (PublicationState.CREATING, PublicationState.REPLICATING)


class GalleryScheduler:
    """Schedules one worker's gallery versions; every row is leased like a target."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.ctx = worker.ctx

    def stuck(self, job: Job, tier0: SourceRow, rows: list[PublicationRow]) -> bool:
        """Whether a version waits for the upload (``tier0``) while it is gone or failed."""
        gone = tier0.deleted or tier0.state is SourceState.FAILED
        return gone and any(
            row.state is PublicationState.PENDING and needs_upload(row) for row in rows
        )

    async def fail_waiting(self, job: Job, rows: list[PublicationRow], why: str) -> None:
        for row in rows:
            if row.state is PublicationState.PENDING and self._free(job, row):
                await self._try_fail(job, row, f"no upload to make the version from: {why}")

    async def schedule(
        self, job: Job, tier0: SourceRow, rows: list[PublicationRow], group: asyncio.TaskGroup
    ) -> None:
        central = next((row for row in rows if row.key == CENTRAL), None)
        for row in rows:
            if row.state not in PUBLICATION_ACTIVE_STATES or not self._free(job, row):
                continue
            if row.state is PublicationState.PENDING:
                if row.key != CENTRAL and central and central.state is PublicationState.FAILED:
                    await self._try_fail(job, row, f"the central version failed: {central.error}")
                    continue
                if not self._source_ready(row, tier0, central):
                    continue
            self._launch(job, row, tier0, group)

    def _free(self, job: Job, row: PublicationRow) -> bool:
        key = (job.id, _item(row))
        return self.worker._lease_free(row.lease_owner, row.lease_until, key)

    @staticmethod
    def _source_ready(
        row: PublicationRow, tier0: SourceRow, central: PublicationRow | None
    ) -> bool:
        if row.source_id == "tier0":
            return tier0.state is SourceState.READY and not tier0.deleted
        # A copy into another subscription's gallery reads the central version in its region.
        if central is None or central.state not in (
            PublicationState.REPLICATING,
            PublicationState.DONE,
        ):
            return False
        status = central.regions.get(row.region)
        return status is not None and status.state == COMPLETED

    def _launch(
        self, job: Job, row: PublicationRow, tier0: SourceRow, group: asyncio.TaskGroup
    ) -> None:
        key = (job.id, _item(row))
        self.worker._inflight.add(key)
        driver = PublicationDriver(
            self.ctx,
            job,
            definition_spec(
                self.ctx.config, job.image_name, job.os_type, job.hyper_v_generation.value
            ),
        )

        async def body(retry: bool) -> None:
            start = await self._current(job, row.key) if retry else row
            if not self.ctx.lease_is_free(start.lease_owner, start.lease_until):
                return  # our lease ran out while we waited, and another worker took the item
            current = await driver.put(dataclasses.replace(start, lease_owner=self.ctx.worker_id))
            source = await self._source(job, current, tier0)
            if current.state is PublicationState.PENDING:
                if source is None:
                    current = await driver.put(dataclasses.replace(current, lease_owner=None))
                    return
                current = await driver.begin(current, source)

            current = await self._follow(driver, current, source)
            await self.ctx.backend.state.put_publication(
                dataclasses.replace(current, lease_owner=None)
            )

        def done() -> None:
            self.worker._inflight.discard(key)

        group.create_task(self.worker._guard(job, _item(row), body, done, self._give_up(job, row)))

    async def _follow(
        self, driver: PublicationDriver, row: PublicationRow, source: VersionSource | None
    ) -> PublicationRow:
        """Poll the version until it settles, less often while nothing changes: replication
        takes minutes to hours, and every look is a Resource Manager read (25 a second per
        subscription). The pause doubles up to a third of the lease, so it is renewed in time."""
        shortest = self.ctx.settings.poll_interval
        longest = max(shortest, min(GALLERY_POLL_MAX_SECONDS, self.ctx.settings.lease_seconds / 3))
        pause = shortest
        while _busy(row):
            seen = await driver.poll(row, source)
            changed = _states(seen) != _states(row)  # progress alone is no news
            pause = shortest if changed else min(pause * 2, longest)
            row = seen
            if _busy(row):
                await self.ctx.backend.clock.sleep(pause)
        return row

    async def _source(
        self, job: Job, row: PublicationRow, tier0: SourceRow
    ) -> VersionSource | None:
        """What the version is made from: the upload, or the central version (by its id)."""
        if row.source_id == "tier0":
            return VersionSource(blob=tier0.blob)
        central = await self._current(job, CENTRAL)
        assert self.ctx.backend.gallery is not None
        try:
            version = await self.ctx.backend.gallery.get_version(
                central.gallery, central.definition, central.version_name
            )
        except NotFound:
            return None
        return VersionSource(version_id=version.id)

    async def _current(self, job: Job, key: str) -> PublicationRow:
        rows = await self.ctx.backend.state.list_publications(job.id)
        return next(row for row in rows if row.key == key)

    def _give_up(self, job: Job, row: PublicationRow) -> Callable[[str], Awaitable[None]]:
        async def give_up(reason: str) -> None:
            current = await self._current(job, row.key)
            if current.lease_owner == self.ctx.worker_id and current.state in (
                PUBLICATION_ACTIVE_STATES
            ):
                await self._try_fail(job, current, reason)

        return give_up

    async def _try_fail(self, job: Job, row: PublicationRow, reason: str) -> None:
        failed = dataclasses.replace(
            row, state=PublicationState.FAILED, error=reason, lease_owner=None
        )
        try:
            await self.ctx.backend.state.put_publication(failed)
        except PreconditionFailed:
            return
        await self.ctx.log(job.id, LogLevel.ERROR, Step.GALLERY, reason, _item(row))


def _states(row: PublicationRow) -> tuple[PublicationState, dict[str, str]]:
    return row.state, {name: status.state for name, status in row.regions.items()}


def _item(row: PublicationRow) -> str:
    return f"gallery/{row.key}"
