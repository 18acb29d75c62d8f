"""The worker: a reconcile loop that starts each step as soon as its input is ready.

Every pass reads the jobs' rows from the state store, leases the items it can move, and runs them
as tasks in one task group under the configured limits. Nothing is kept only in memory: a worker
killed at any instant leaves rows that any other worker (or its own restart) picks up once their
lease runs out.

A pass reads the targets that changed since the last one where the store can tell (else all of
them) into the job's :class:`TargetTables`, so it costs what changed, not the job's size; and
where the store tells that nothing was written since the last pass, no task of ours ended and no
lease ran out, the worker skips the pass (the simulator's long quiet stretches cost nothing).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence

from .._domain import (
    COPY_STATES,
    IMAGE_STATES,
    TERMINAL_TARGET_STATES,
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
from .._domain.events import EventKind, LogLevel, Step
from .._domain.publications import PublicationRow
from .._exceptions import ImagedistError, PreconditionFailed, TransientError
from ..abc import looks_until
from ._cleanup import drop_intermediates_if_unneeded
from ._context import EngineContext
from ._disk import give_up_disk
from ._limits import Limiter, Slot
from ._publications import GalleryScheduler
from ._rows import COPIED_SOURCE_KINDS, SourceTables, TargetTables
from ._sources import Fanout, make_fanout
from ._status import derive_job_state
from ._targets import TargetDriver, ranged_copies_possible
from ._tasks import task_group
from ._tier0 import fill_tier0
from ._tier1 import drive_tier1

__all__ = ["Worker", "revive_source", "target_enablement"]

logger = logging.getLogger("imagedist.worker")

MAX_TRANSIENT_RETRIES = 8


class Worker:
    """Drives every active job (or the given ones) until nothing is left to do.

    :param job_ids: restrict the worker to these jobs; all active jobs when empty.
    """

    def __init__(self, ctx: EngineContext, job_ids: Sequence[str] = ()) -> None:
        self.ctx = ctx
        self.job_ids = tuple(job_ids)
        self._inflight: set[tuple[str, str]] = set()
        # Reads of the store, counted, and the read during which each item's task last ended:
        # a pass whose rows were read before an item's task wrote its last row must not start
        # the item again from that stale row (its write would fail, a lease it never lost).
        self._reads = 0
        self._ended: dict[tuple[str, str], int] = {}
        self._copies = Limiter(ctx.settings.copies)
        self._images = Limiter(ctx.settings.images)
        self._gallery = GalleryScheduler(self)
        self._tables: dict[str, TargetTables] = {}
        self._sources: dict[str, tuple[SourceTables, int]] = {}  # by job: rows, cursor
        self._fanouts: dict[str, Fanout] = {}  # by job: the last pass's, while sources stay
        # By job: moving targets that may need resuming (read changed, or their task ended, or
        # another worker's lease on them may run out); every other moving row has its task.
        self._to_resume: dict[str, set[str]] = {}
        self._config_disabled: set[str] | None = None
        # What tells whether a pass may find something to do (see run).
        self._seen_revision: int | None = None
        self._pass_due = True
        self._lease_ends = float("inf")
        self._wake: asyncio.Future[None] | None = None  # resolved when a task ends (_idle)

    async def run(self, *, forever: bool = False) -> None:
        """Work until no active job is left (or forever)."""
        async with task_group() as group:
            active = 0
            while True:
                if self._pass_may_matter():
                    active = await self.tick(group)
                if not active and not self._inflight and not forever:
                    return
                await self._idle()

    async def _idle(self) -> None:
        """Wait for the next pass: one poll interval; or, where the store can tell when it is
        written and no pass is due yet, until the look (on the same grid of poll intervals)
        that would first see a write, a task of ours ended or another's lease run out. Then a
        long wait costs one wake-up, not one per poll interval (the simulator's copy caps)."""
        state, clock = self.ctx.backend.state, self.ctx.backend.clock
        loop = asyncio.get_running_loop()
        wake: asyncio.Future[None] = loop.create_future()
        if self._pass_may_matter() or not state.wake_on_write(wake):
            await self.ctx.pause()
            return
        began, every = clock.now(), self.ctx.settings.poll_interval
        self._wake = wake
        # A microsecond past the lease's end: the look must come after it (_pass_may_matter).
        timer = None
        if self._lease_ends < float("inf"):
            timer = loop.call_later(self._lease_ends - began + 1e-6, _resolve, wake)
        try:
            await wake
        finally:
            self._wake = None
            if timer is not None:
                timer.cancel()
        waited = clock.now() - began
        await clock.sleep(looks_until(waited, every) * every - waited)

    def _pass_may_matter(self) -> bool:
        """Whether anything can have changed since the last pass: a write to the store (when
        the store can tell; else always), a task of ours that ended, a lease that ran out."""
        revision = self.ctx.backend.state.revision()
        return (
            revision is None
            or revision != self._seen_revision
            or self._pass_due
            or self.ctx.backend.clock.now() > self._lease_ends
        )

    async def tick(self, group: asyncio.TaskGroup) -> int:
        """One reconcile pass over the jobs; returns how many are still active."""
        self._seen_revision = self.ctx.backend.state.revision()
        self._pass_due = False
        self._lease_ends = float("inf")
        active = 0
        for job in await self._active_jobs():
            try:
                busy = await self._reconcile(job, group)
            except (TransientError, PreconditionFailed) as exc:
                # Busy platform or a racing worker: this pass is lost, the next one retries.
                logger.warning("job %s: %s; retrying on the next pass", job.id, exc)
                self._pass_due = True
                busy = True
            active += busy
        return active

    async def _active_jobs(self) -> list[Job]:
        state = self.ctx.backend.state
        if self.job_ids:
            jobs = [await state.get_job(job_id) for job_id in self.job_ids]
        else:
            jobs = await state.list_jobs()
        return [job for job in jobs if job.state is JobState.ACTIVE]

    async def _reconcile(self, job: Job, group: asyncio.TaskGroup) -> bool:
        state = self.ctx.backend.state
        self._reads += 1
        known, sources_changed = await self._read_sources(job)
        tables = await self._read_targets(job)
        await self._apply_switches(job, tables)
        publications = await state.list_publications(job.id) if "gallery" in job.publish else []
        fanout = self._fanout(job, known, tables, sources_changed)
        self._note_leases(known, tables, publications)
        tier0 = fanout.tier0
        # Nothing the waiting targets may copy from exists or is on its way: make it anew, and
        # act on the revived rows in the next pass.
        stuck = fanout.exhausted() and self._any_waiting(job, tables)
        stuck = stuck or self._gallery.stuck(job, tier0, publications)
        if stuck and await self._find_a_way_forward(job, known.all(), tables.all(), publications):
            self._pass_due = True
            return True
        if tier0.state in UPLOAD_AHEAD_STATES:
            await self._spawn_source(job, tier0, None, group)
        self._schedule_tier1(job, fanout, group)
        self._schedule_targets(job, tables, fanout, tier0, group)
        await self._gallery.schedule(job, tier0, publications, group)
        if any(key[0] == job.id for key in self._inflight):
            return True
        sources, targets = known.all(), tables.all()
        if await drop_intermediates_if_unneeded(self.ctx, job, sources, targets, publications):
            self._pass_due = True
            return True  # settle on the next pass, from the rows as they are now
        return await self._settle(job, sources, targets, publications)

    async def _read_sources(self, job: Job) -> tuple[SourceTables, bool]:
        """The job's sources as they are now (read as its targets are, see _read_targets), and
        whether any changed since the last pass."""
        known, cursor = self._sources.get(job.id, (SourceTables(self.ctx.worker_id), 0))
        rows, cursor = await self.ctx.backend.state.list_sources_changed(job.id, cursor)
        changed = known.update(rows)
        self._sources[job.id] = known, cursor
        return known, changed

    async def _read_targets(self, job: Job) -> TargetTables:
        """The job's targets as they are now: what changed since the last pass, read into the
        tables kept from it (a store that cannot tell gives every row)."""
        tables = self._tables.get(job.id)
        if tables is None:
            tables = self._tables[job.id] = TargetTables(self.ctx.worker_id)
        rows, tables.cursor = await self.ctx.backend.state.list_targets_changed(
            job.id, tables.cursor
        )
        tables.update(rows)
        self._to_resume.setdefault(job.id, set()).update(row.target for row in rows)
        return tables

    def _note_leases(
        self,
        sources: SourceTables,
        tables: TargetTables,
        publications: list[PublicationRow],
    ) -> None:
        """The earliest end of a lease another worker holds: a pass is due then."""
        ends = list(tables.foreign.values())
        ends.append(sources.foreign_lease_end())
        ends += [
            p.lease_until for p in publications if p.lease_owner not in (None, self.ctx.worker_id)
        ]
        self._lease_ends = min([self._lease_ends, *ends])

    def _fanout(
        self, job: Job, sources: SourceTables, targets: TargetTables, sources_changed: bool
    ) -> Fanout:
        """The job's fan-out for this pass: the last one renewed while the sources are the
        same (the targets' tables it reads are current), else a new one."""
        fanout = self._fanouts.get(job.id)
        # Copies still being made are offered as sources only while this worker can follow
        # one by ranges (the store copies ranges, and a ranged copy's slot is free).
        pipelining = ranged_copies_possible(self.ctx) and self.ctx.ranged_slot_free()
        if fanout is not None and not sources_changed:
            fanout.pipelining = pipelining
            fanout.renew()
            return fanout
        settings = self.ctx.settings
        fanout = self._fanouts[job.id] = make_fanout(
            settings.fanout_strategy,
            job.id,
            sources,
            targets,
            staging_region=settings.staging_region,
            max_reads=settings.max_reads_per_source,
            pipelining=pipelining,
        )
        return fanout

    def _any_waiting(self, job: Job, tables: TargetTables) -> bool:
        return any((job.id, row.target) not in self._inflight for row in tables.pending())

    def _waiting(self, job: Job, targets: Iterable[TargetRow]) -> list[TargetRow]:
        return [
            row
            for row in targets
            if row.state is TargetState.PENDING and (job.id, row.target) not in self._inflight
        ]

    async def _find_a_way_forward(
        self,
        job: Job,
        sources: list[SourceRow],
        targets: list[TargetRow],
        publications: list[PublicationRow],
    ) -> bool:
        """Every copy source is gone: upload (or copy from the disk) again, or, when the upload
        itself failed, fail the waiting targets (and gallery versions) with its reason. Returns
        whether rows changed."""
        tier0 = next(s for s in sources if s.kind is SourceKind.TIER0)
        if tier0.state is SourceState.FAILED:
            await self._fail_waiting_targets(job, targets, tier0.error)
            await self._gallery.fail_waiting(job, publications, tier0.error)
            return False
        revived = 0
        for row in sources:
            if row.kind in COPIED_SOURCE_KINDS and row.state is SourceState.COPYING:
                continue
            if not self._lease_free(row.lease_owner, row.lease_until, (job.id, row.source_id)):
                continue
            await self.ctx.backend.state.put_source(revive_source(row))
            revived += 1
        if revived:
            await self.ctx.log(
                job.id,
                LogLevel.WARNING,
                Step.JOB,
                "every copy of the disk is gone (cleaned up) while targets still need one:"
                + (
                    " copying it from the managed disk again"
                    if job.source_disk
                    else " uploading again"
                ),
            )
        return revived > 0

    async def _apply_switches(self, job: Job, tables: TargetTables) -> None:
        """Disabled targets that have not started are skipped, in running jobs too."""
        if self._config_disabled is None:  # the config does not change while we run
            fleet = self.ctx.config.fleet_targets()
            self._config_disabled = {t.name for t in fleet if not t.enabled}
        switches = await self.ctx.backend.state.target_switches()
        disabled = {name for name in self._config_disabled if switches.get(name, False) is False}
        disabled |= {name for name, on in switches.items() if not on}
        for name in sorted(disabled, key=lambda n: tables.rank.get(n, -1)):
            row = tables.rows.get(name)
            if row is None or row.state is not TargetState.PENDING:
                continue
            if self._lease_free(row.lease_owner, row.lease_until, (job.id, row.target)):
                skipped = dataclasses.replace(row, state=TargetState.SKIPPED)
                tables.update([await self._try_put_target(skipped)])
                await self.ctx.log(
                    job.id, LogLevel.INFO, Step.JOB, "target disabled: skipped", row.target
                )

    async def _fail_waiting_targets(self, job: Job, targets: list[TargetRow], why: str) -> None:
        for row in self._waiting(job, targets):
            reason = f"no source to copy from: {why}"
            await self._try_put_target_failed(job, row, FailedPhase.COPY, reason)

    def _schedule_tier1(self, job: Job, fanout: Fanout, group: asyncio.TaskGroup) -> None:
        for rows in fanout.tier1_work():
            for row in rows:
                if not self._lease_free(row.lease_owner, row.lease_until, (job.id, row.source_id)):
                    continue
                if row.state is SourceState.PENDING:
                    if self._copies.full:
                        return
                    parent = fanout.tier1_parent(row)
                    if parent is None:
                        break  # the group's other waiting copies would wait too
                    self._launch_source(job, row, parent, group)
                else:
                    # Resumed: its parent may be a target's copy, which no sources row holds.
                    self._launch_source(job, row, fanout.live_source(row.parent_id or ""), group)

    def _schedule_targets(
        self,
        job: Job,
        tables: TargetTables,
        fanout: Fanout,
        tier0: SourceRow,
        group: asyncio.TaskGroup,
    ) -> None:
        # Resume what is already moving before starting anything new, then seed before filling.
        for row in self._resumable(job, tables, fanout):
            source = fanout.live_source(row.source_id or "")
            self._launch_target(job, row, source, tier0, group)
        if self._copies.full:
            return
        ranged_slots = self._ranged_slots_to_hand_out()
        for row in fanout.waiting():
            if self._copies.full:
                return
            if not self._lease_free(row.lease_owner, row.lease_until, (job.id, row.target)):
                continue
            source = fanout.target_source(row)
            if source is None:
                continue
            if ranged_slots is not None:
                seed = fanout.seeds_a_region(row, source)
                if seed and ranged_slots <= 0:
                    continue  # a region's seed waits for a ranged copy's slot (see below)
                if seed or source.state is SourceState.COPYING:
                    ranged_slots -= 1  # it will move by ranges (a follower always does)
            self._launch_target(job, row, source, tier0, group)

    def _ranged_slots_to_hand_out(self) -> int | None:
        """With ``copy_method = "auto"`` where ranges can be copied: the ranged copies' slots
        still free, which this pass hands out first to the regions' seeds, else None.

        A seed is on the critical path of its whole region, and a ranged copy (~190 MB/s)
        lands it in a minute or two where a Copy Blob across regions may take an hour (4-45
        MB/s): so under "auto" a seed waits for a slot rather than start a Copy Blob. Slots
        free as ranged copies end; with none configured, or on a store that turns out to copy
        no ranges, nothing waits."""
        ctx = self.ctx
        slots = ctx.settings.ranged_copies
        if ctx.settings.copy_method != "auto" or not slots or not ranged_copies_possible(ctx):
            return None  # no slot will ever free: nothing waits for one
        return slots - ctx.ranged_running

    def _resumable(self, job: Job, tables: TargetTables, fanout: Fanout) -> list[TargetRow]:
        """The moving targets whose task may start now, in the fan-out's order. Only the rows
        that may need it are looked at (see _to_resume); a row leased by another worker, or
        whose task ended after this pass read it, stays to be looked at again."""
        names = self._to_resume.pop(job.id, set())
        names.update(tables.foreign)
        # The rows to look at again go into a new set: a set never shrinks its table, and
        # one that once held every target (the first pass) costs its whole size to walk.
        again = self._to_resume[job.id] = set()
        ready = []
        for name in names:
            row = tables.rows.get(name)
            if row is None or name not in tables.moving or (job.id, name) in self._inflight:
                continue  # not moving, or its task runs (and says when it ends)
            if self._lease_free(row.lease_owner, row.lease_until, (job.id, name)):
                ready.append(row)
            else:
                again.add(name)
        return sorted(ready, key=lambda t: (fanout.priority(t), tables.rank[t.target]))

    def _lease_free(self, owner: str | None, until: float, key: tuple[str, str]) -> bool:
        if key in self._inflight or self._ended.get(key, -1) >= self._reads:
            return False  # its task runs, or ended after this pass read its row
        return self.ctx.lease_is_free(owner, until)

    # tasks

    async def _spawn_source(
        self, job: Job, row: SourceRow, parent: SourceRow | None, group: asyncio.TaskGroup
    ) -> None:
        if self._lease_free(row.lease_owner, row.lease_until, (job.id, row.source_id)):
            self._launch_source(job, row, parent, group)

    def _launch_source(
        self, job: Job, row: SourceRow, parent: SourceRow | None, group: asyncio.TaskGroup
    ) -> None:
        key = (job.id, row.source_id)
        self._inflight.add(key)
        slot = self._copies.take() if row.kind in COPIED_SOURCE_KINDS else Slot.none()

        async def body(retry: bool) -> None:
            # A retry starts from the row as stored: the one we began with is stale by now.
            start = await self._current_source(job, row.source_id) if retry else row
            if not self.ctx.lease_is_free(start.lease_owner, start.lease_until):
                return  # our lease ran out while we waited, and another worker took the item
            leased = await self.ctx.backend.state.put_source(
                dataclasses.replace(
                    start, lease_owner=self.ctx.worker_id, lease_until=self.ctx.lease_until()
                )
            )
            if leased.kind is SourceKind.TIER0:
                leased = await fill_tier0(self.ctx, job, leased)
            else:
                leased = await drive_tier1(self.ctx, job, leased, parent)
            await self.ctx.backend.state.put_source(dataclasses.replace(leased, lease_owner=None))

        def done() -> None:
            self._inflight.discard(key)
            self._ended[key] = self._reads
            slot.release()

        group.create_task(
            self._guard(job, row.source_id, body, done, self._give_up_source(job, row.source_id))
        )

    def _launch_target(
        self,
        job: Job,
        row: TargetRow,
        source: SourceRow | None,
        tier0: SourceRow,
        group: asyncio.TaskGroup,
    ) -> None:
        key = (job.id, row.target)
        self._inflight.add(key)
        # The copy slot is held from the launch until the copy ended, whatever happens next.
        copy_slot = self._copies.take() if row.state in COPY_STATES else Slot.none()
        # The upload's MD5 is what every copy must carry; the upload itself holds every range,
        # which a copy from a copy still being made (pipelined) plans its ranges from.
        driver = TargetDriver(self.ctx, job, disk_md5=tier0.content_md5, origin=tier0.blob)

        async def body(retry: bool) -> None:
            # A retry starts from the row as stored: the one we began with is stale by now.
            start = await self._current_target(job, row.target) if retry else row
            if not self.ctx.lease_is_free(start.lease_owner, start.lease_until):
                return  # our lease ran out while we waited, and another worker took the item
            current = dataclasses.replace(start, lease_owner=self.ctx.worker_id)
            if current.state is not TargetState.PENDING or source is None:
                current = await driver.put(current)  # else the copy's intent write takes it
            current = await self._drive_copy(driver, current, source)
            if current.state in COPY_STATES:
                return
            copy_slot.release()
            if current.state in IMAGE_STATES:
                async with await self._images.acquire():
                    current = await self._drive_image(driver, current)
            if current.lease_owner is not None:  # a done or failed row gave it up already
                await self.ctx.backend.state.put_target(
                    dataclasses.replace(current, lease_owner=None)
                )

        def done() -> None:
            self._inflight.discard(key)
            self._ended[key] = self._reads
            self._to_resume.setdefault(job.id, set()).add(row.target)
            copy_slot.release()

        group.create_task(
            self._guard(job, row.target, body, done, self._give_up_target(job, row.target))
        )

    async def _drive_copy(
        self, driver: TargetDriver, row: TargetRow, source: SourceRow | None
    ) -> TargetRow:
        if row.state is TargetState.PENDING:
            if source is None:
                return row
            row = await driver.begin_copy(row, source)

        async def look(current: TargetRow) -> TargetRow:
            return await driver.poll_copy(current, source)

        async def ended(current: TargetRow) -> bool:
            longest = self._until_renewal(current)
            return await self.ctx.backend.blobs.wait_for_copy(current.blob, longest)

        return await self.ctx.poll_while(row, _copying, look, ended)

    async def _drive_image(self, driver: TargetDriver, row: TargetRow) -> TargetRow:
        if row.state is TargetState.COPIED:
            row = await driver.begin_image(row)  # which looks once already
        if _imaging(row):
            await self.ctx.pause()

        async def created(current: TargetRow) -> bool:
            longest = self._until_renewal(current)
            every = self.ctx.settings.poll_interval
            return await self.ctx.backend.images.wait_for_image(
                current.subscription, current.resource_group, current.image_name, longest, every
            )

        return await self.ctx.poll_while(row, _imaging, driver.poll_image, created)

    def _until_renewal(self, row: TargetRow) -> float:
        """Seconds until our lease on the row wants renewing (TargetDriver.keep: at half)."""
        renew = row.lease_until - self.ctx.settings.lease_seconds / 2
        return renew - self.ctx.backend.clock.now()

    async def _guard(
        self,
        job: Job,
        item: str,
        body: Callable[[bool], Awaitable[None]],
        done: Callable[[], None],
        give_up: Callable[[str], Awaitable[None]],
    ) -> None:
        """Run one item's task; a failure ends that item (failed, with the reason), never the worker."""
        try:
            for attempt in range(MAX_TRANSIENT_RETRIES):
                try:
                    await body(attempt > 0)
                    return
                except TransientError as exc:
                    delay = exc.retry_after or min(2.0**attempt, 60.0)
                    await self.ctx.log(
                        job.id, LogLevel.WARNING, Step.JOB, f"{item}: {exc}; retrying"
                    )
                    await self.ctx.backend.clock.sleep(delay)
            await give_up(f"gave up after {MAX_TRANSIENT_RETRIES} transient errors")
        except PreconditionFailed:
            logger.info("lost the lease on %s of job %s to another worker", item, job.id)
        except ImagedistError as exc:
            await give_up(str(exc))
        except Exception as exc:  # a bug must not stop the other targets; it is logged in full
            logger.exception("unexpected error on %s of job %s", item, job.id)
            await give_up(f"unexpected {type(exc).__name__}: {exc}")
        finally:
            done()
            self._pass_due = True  # its slot and its item are free: the next pass may use them
            if self._wake is not None:
                _resolve(self._wake)

    def _give_up_target(self, job: Job, name: str) -> Callable[[str], Awaitable[None]]:
        async def give_up(reason: str) -> None:
            row = await self._current_target(job, name)
            if row.lease_owner == self.ctx.worker_id and row.state not in TERMINAL_TARGET_STATES:
                phase = FailedPhase.IMAGE if row.state in IMAGE_STATES else FailedPhase.COPY
                await self._try_put_target_failed(job, row, phase, reason)

        return give_up

    def _give_up_source(self, job: Job, source_id: str) -> Callable[[str], Awaitable[None]]:
        async def give_up(reason: str) -> None:
            row = await self._current_source(job, source_id)
            if row.lease_owner == self.ctx.worker_id and row.state is not SourceState.READY:
                step = Step.TIER1 if row.kind in COPIED_SOURCE_KINDS else Step.UPLOAD
                await self.ctx.log(job.id, LogLevel.ERROR, step, f"{source_id} failed: {reason}")
                self.ctx.emit(job.id, EventKind.FAILED, source=source_id, detail=reason)
                failed = dataclasses.replace(
                    row, state=SourceState.FAILED, error=reason, lease_owner=None
                )
                with contextlib.suppress(PreconditionFailed):
                    await self.ctx.backend.state.put_source(failed)
                if row.kind is SourceKind.TIER0 and row.state is SourceState.UPLOADING:
                    # The disk copy failed or is abandoned: its access goes (or expires).
                    with contextlib.suppress(ImagedistError):
                        await give_up_disk(self.ctx, job)

        return give_up

    async def _current_target(self, job: Job, name: str) -> TargetRow:
        rows = await self.ctx.backend.state.list_targets(job.id)
        return next(r for r in rows if r.target == name)

    async def _current_source(self, job: Job, source_id: str) -> SourceRow:
        rows = await self.ctx.backend.state.list_sources(job.id)
        return next(r for r in rows if r.source_id == source_id)

    async def _try_put_target_failed(
        self, job: Job, row: TargetRow, phase: FailedPhase, reason: str
    ) -> None:
        await self.ctx.log(job.id, LogLevel.ERROR, Step(phase.value), reason, target=row.target)
        self.ctx.emit(job.id, EventKind.FAILED, target=row.target, detail=reason)
        await self._try_put_target(
            dataclasses.replace(
                row, state=TargetState.FAILED, failed_phase=phase, error=reason, lease_owner=None
            )
        )

    async def _try_put_target(self, row: TargetRow) -> TargetRow:
        try:
            return await self.ctx.backend.state.put_target(row)
        except PreconditionFailed:
            return row

    async def _settle(
        self,
        job: Job,
        sources: list[SourceRow],
        targets: list[TargetRow],
        publications: list[PublicationRow],
    ) -> bool:
        """Record the job's outcome once nothing can move; returns whether it is still active."""
        outcome = derive_job_state(sources, targets, publications)
        if outcome is JobState.ACTIVE:
            return True
        pending_cleanup = outcome is JobState.COMPLETED and (
            any(not s.deleted for s in sources)
            or any(not t.blob_deleted for t in targets if t.state is TargetState.DONE)
        )
        if pending_cleanup:
            return True
        ended = dataclasses.replace(job, state=outcome, finished_at=self.ctx.backend.clock.now())
        try:
            # Only if no `retry` put work back since we read the job (before its rows): a
            # retry racing with us bumps the revision, and its work is never left unowned.
            await self.ctx.backend.state.update_job(ended, expected_revision=job.revision)
        except PreconditionFailed:
            return True
        level = LogLevel.INFO if outcome is JobState.COMPLETED else LogLevel.ERROR
        await self.ctx.log(job.id, level, Step.JOB, f"job {outcome.value}")
        self.ctx.emit(job.id, EventKind.JOB_ENDED, detail=outcome.value)
        return False


def revive_source(row: SourceRow) -> SourceRow:
    """A deleted or failed source made to be produced again (its expected MD5 is kept, so a
    re-upload of a changed file is caught)."""
    return dataclasses.replace(
        row,
        state=SourceState.PENDING,
        deleted=False,
        progress_bytes=0,
        error="",
        parent_id=None,
        lease_owner=None,
        lease_until=0.0,
    )


async def target_enablement(ctx: EngineContext) -> dict[str, bool]:
    """Each fleet target's effective switch: the run-time switch if set, else the config's."""
    enabled = {t.name: t.enabled for t in ctx.config.fleet_targets()}
    enabled.update(await ctx.backend.state.target_switches())
    return enabled


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _copying(row: TargetRow) -> bool:
    return row.state is TargetState.COPYING


def _imaging(row: TargetRow) -> bool:
    return row.state is TargetState.IMAGING
