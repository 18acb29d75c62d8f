"""The library's front door: one object per config, which the CLI calls for everything."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from ._backends import open_backend, open_local_state_store
from ._config_file import read_config_bytes
from ._config_memo import remember_valid, remembered_local_root
from ._domain import (
    BlobRef,
    FailedPhase,
    HyperVGeneration,
    Job,
    JobState,
    LogFilter,
    LogRecord,
    OsType,
    SourceKind,
    SourceRow,
    TargetState,
)
from ._exceptions import InvalidInput
from ._files import check_folder, check_regular_file, kind_of
from ._no_loop import finish

# The engine, the config's models, asyncio, provisioning, gallery versions, the demo, the fleet
# generator and the disk tools are imported by the methods that use them: a command starts
# without what it does not use (`vhd convert` without the engine and pydantic, `status` without
# the disk tools; issue 13).
if TYPE_CHECKING:
    from ._config import Config
    from ._demo import Demo
    from ._domain import EngineEvent, Target
    from ._domain.gallery import ImageVersion
    from ._engine import EngineContext, JobStatus
    from ._engine._setup import Change, Problem
    from ._engine._upload import ProgressCallback
    from ._engine._versions import RetireResult
    from ._plan import Plan
    from ._vhd import ConvertResult, Inspection
    from .abc import Backend, DiskSources, StateStore

__all__ = [
    "Change",
    "Demo",
    "Imagedist",
    "JobReader",
    "JobStatus",
    "PhaseSpan",
    "Problem",
    "read_jobs",
    "run_reader",
]

ChangeCallback = Callable[["Change"], None]
SetupProgress = Callable[[int, int, "Change"], None]  # (done, total, the change just made)
StatusCallback = Callable[["JobStatus"], None]
DISK_FIX = "give the path of a disk image file"
R = TypeVar("R")


@dataclass(frozen=True)
class PhaseSpan:
    """When a step of a job was first and last heard of in its log (the backend's clock)."""

    step: str
    started_at: float
    ended_at: float


COPY_PROGRESS_LOOKS = 16  # blob properties read at once by copy_progress
# Steps in the order a job goes through them, for a timeline read top to bottom.
TIMELINE_ORDER = ("submit", "upload", "tier1", "copy", "image", "gallery", "cleanup", "job")


class Imagedist:
    """Everything imagedist does, for one config.

    Use as ``async with Imagedist(config) as app: ...``; the backend opens on entry.
    """

    def __init__(
        self,
        config: Config,
        backend: Backend | None = None,
        *,
        disk_sources: DiskSources | None = None,
    ) -> None:
        self.config = config
        self._backend = backend
        self._disk_sources = disk_sources

    async def __aenter__(self) -> Imagedist:
        if self._backend is None:
            self._backend = open_backend(self.config)
        # Where tier 0 comes from: a test's fake if given, else the context makes the default
        # (the job's file or managed disk) when a job first needs it.
        from ._engine import EngineContext

        self.ctx: EngineContext = EngineContext(
            self._backend, self.config, disk_sources=self._disk_sources
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.ctx.backend.aclose()

    # jobs

    async def submit(
        self,
        path: Path,
        image_name: str,
        os_type: OsType,
        description: str = "",
        *,
        convert: bool = True,
        hyper_v_generation: HyperVGeneration | None = None,
        publish: Sequence[str] | None = None,
        version: str | None = None,
    ) -> Job:
        """Validate (and convert) the image and register a job; call :meth:`upload` next.

        See :func:`imagedist._engine.submit_job`.

        :raises InvalidInput: also if ``path`` is not a regular file (checked without opening it:
            opening a FIFO waits for a writer) or the work folder cannot be made.
        """
        from ._engine import submit_job

        check_regular_file(path, "give the path of a disk image file")
        check_folder(self.config.work_dir(), "[upload] work_dir")
        return await submit_job(
            self.ctx,
            path,
            image_name,
            os_type,
            description,
            convert=convert,
            hyper_v_generation=hyper_v_generation,
            publish=publish,
            version=version,
        )

    async def submit_disk(
        self,
        disk_id: str,
        image_name: str,
        os_type: OsType,
        description: str = "",
        *,
        hyper_v_generation: HyperVGeneration | None = None,
        publish: Sequence[str] | None = None,
        version: str | None = None,
    ) -> Job:
        """Register a job whose image is an Azure managed disk; a worker copies it server-side,
        granting read access for the copy and revoking it afterwards."""
        from ._engine import submit_disk_job

        return await submit_disk_job(
            self.ctx,
            disk_id,
            image_name,
            os_type,
            description,
            hyper_v_generation=hyper_v_generation,
            publish=publish,
            version=version,
        )

    async def upload(self, job_id: str, on_progress: ProgressCallback | None = None) -> SourceRow:
        """Upload the job's file to its tier-0 blob (resuming), holding the tier-0 lease.

        :return: the tier-0 row afterwards: ``ready`` once the upload is verified, ``failed``
            with the reason (and its fix) otherwise, as it was if a worker is uploading it.
        """
        from ._engine import fill_tier0, get_job

        state = self.ctx.backend.state
        job = await get_job(state, job_id)
        tier0 = next(s for s in await state.list_sources(job.id) if s.kind is SourceKind.TIER0)
        if not self.ctx.lease_is_free(tier0.lease_owner, tier0.lease_until):
            return tier0  # a worker is uploading it right now
        leased = await state.put_source(
            dataclasses.replace(
                tier0, lease_owner=self.ctx.worker_id, lease_until=self.ctx.lease_until()
            )
        )
        done = await fill_tier0(self.ctx, job, leased, on_progress)
        return await state.put_source(dataclasses.replace(done, lease_owner=None))

    async def work(self, job_ids: Sequence[str] = (), *, forever: bool = False) -> None:
        """Run a worker until no active job (of ``job_ids``, if given) is left.

        :raises InvalidInput: if a given job id is unknown (checked before any work starts).
        """
        from ._engine import Worker, get_job

        for job_id in job_ids:
            await get_job(self.ctx.backend.state, job_id)
        await Worker(self.ctx, job_ids).run(forever=forever)

    async def wait(self, job_id: str) -> JobStatus:
        """Wait until the job ends, checking on the backend's clock; another worker does the work.

        :return: the job's status once it is no longer active.
        """
        status = await self.status(job_id)
        while status.state is JobState.ACTIVE:
            await self.ctx.backend.clock.sleep(self.config.concurrency.poll_interval_seconds)
            status = await self.status(job_id)

        return status

    async def run(
        self, job_id: str, on_status: StatusCallback | None = None, *, interval: float = 0.25
    ) -> JobStatus:
        """Work on the job in this process until no work is left, reporting its progress.

        :param on_status: called with the job's status as soon as the engine reports an event of
            the job (an upload done, a copy verified, an image created...), at least every
            ``interval`` seconds while the worker runs (copies progress without events), and
            once more when it has stopped.
        :return: the job's status at the end.
        """
        import asyncio

        from ._engine._tasks import task_group

        changed = asyncio.Event()
        previous = self.ctx.on_event

        def on_event(event: EngineEvent) -> None:
            if previous is not None:
                previous(event)
            if event.job_id == job_id:
                changed.set()

        self.ctx.on_event = on_event
        try:
            async with task_group() as group:
                worker = group.create_task(self.work([job_id]))
                while True:
                    changed.clear()
                    status = await self.status(job_id)
                    if on_status is not None:
                        on_status(status)
                    if worker.done():
                        return status
                    woken = group.create_task(changed.wait())
                    await asyncio.wait(
                        {worker, woken}, timeout=interval, return_when=asyncio.FIRST_COMPLETED
                    )
                    woken.cancel()
        finally:
            self.ctx.on_event = previous

    async def jobs(self) -> list[JobStatus]:
        """Every job with its status, newest first."""
        return await JobReader(self.ctx.backend.state).jobs()

    async def status(self, job_id: str) -> JobStatus:
        return await JobReader(self.ctx.backend.state).status(job_id)

    async def logs(self, job_id: str, where: LogFilter | None = None) -> list[LogRecord]:
        """The job's log in time order: every line, or those ``where`` matches."""
        return await JobReader(self.ctx.backend.state).logs(job_id, where)

    async def has_job(self, job_id: str) -> bool:
        """Whether a job of this id exists (a page asks before it shows one)."""
        from ._engine import get_job

        try:
            await get_job(self.ctx.backend.state, job_id)
        except InvalidInput:
            return False
        return True

    async def timeline(self, job_id: str) -> list[PhaseSpan]:
        """When each step of the job started and ended, from its log's timestamps, in the
        order a job goes through them."""
        spans: dict[str, PhaseSpan] = {}
        for record in await self.logs(job_id):
            seen = spans.get(record.step)
            start = min(seen.started_at, record.ts) if seen else record.ts
            end = max(seen.ended_at, record.ts) if seen else record.ts
            spans[record.step] = PhaseSpan(record.step, start, end)
        rank = {step: i for i, step in enumerate(TIMELINE_ORDER)}
        return sorted(spans.values(), key=lambda s: (rank.get(s.step, len(rank)), s.started_at))

    async def done_times(self, job_id: str) -> list[float]:
        """Seconds from the job's submission at which each of its done targets got its image,
        in rising order (the row's last change is the one that made it done)."""
        status = await self.status(job_id)
        start = status.job.created_at
        done = [t.updated_at for t in status.targets if t.state is TargetState.DONE]
        return sorted(max(0.0, ts - start) for ts in done)

    async def copy_progress(self, job_id: str) -> dict[str, int]:
        """Percent copied of each target whose copy is running, from its blob's copy status
        (the state store keeps no progress of a target's copy)."""
        import asyncio

        status = await self.status(job_id)
        copying = [t for t in status.targets if t.state is TargetState.COPYING]
        # A few at a time: hundreds of copies may run, and each look is a request to storage.
        limit = asyncio.Semaphore(COPY_PROGRESS_LOOKS)

        async def look(blob: BlobRef) -> int:
            async with limit:
                return await self._copy_percent(blob)

        found = await asyncio.gather(*(look(t.blob) for t in copying), return_exceptions=True)
        return {
            t.target: pct for t, pct in zip(copying, found, strict=True) if isinstance(pct, int)
        }

    async def _copy_percent(self, blob: BlobRef) -> int:
        props = await self.ctx.backend.blobs.get_properties(blob)
        return min(99, 100 * props.copy_progress // props.copy_total) if props.copy_total else 0

    async def retry(
        self,
        job_id: str,
        *,
        failed_only: bool = False,
        targets: Sequence[str] = (),
        phase: FailedPhase | None = None,
    ) -> list[str]:
        from ._engine import retry_job

        return await retry_job(
            self.ctx, job_id, failed_only=failed_only, targets=targets, phase=phase
        )

    async def cleanup(self, job_id: str, *, force: bool = False) -> int:
        from ._engine import cleanup_job

        return await cleanup_job(self.ctx, job_id, force=force)

    # gallery versions (issue 11)

    async def versions(self, image: str) -> list[ImageVersion]:
        """The image's versions in the central gallery, newest first."""
        from ._engine._versions import list_image_versions

        return await list_image_versions(self.ctx, image)

    async def retire_versions(self, image: str, keep: int) -> RetireResult:
        """Retire every version but the ``keep`` newest (end of life now, out of "latest");
        delete those retired for ``[gallery.versions] retire_grace_days``, unless one is the
        only version complete in a region."""
        from ._engine._versions import retire_versions

        return await retire_versions(self.ctx, image, keep)

    async def roll_back(self, image: str) -> tuple[ImageVersion, ImageVersion]:
        """Exclude the newest version from "latest"; returns (it, the version now latest)."""
        from ._engine._versions import roll_back

        return await roll_back(self.ctx, image)

    # targets

    async def targets(self) -> list[tuple[Target, bool]]:
        """The fleet with each target's effective switch."""
        from ._engine import target_enablement

        enabled = await target_enablement(self.ctx)
        return [(t, enabled[t.name]) for t in self.config.fleet_targets()]

    async def set_enabled(
        self,
        enabled: bool,
        *,
        regions: Sequence[str] = (),
        subscriptions: Sequence[str] = (),
        names: Sequence[str] = (),
    ) -> list[str]:
        """Switch targets on or off for running and future jobs; returns their names."""
        from ._engine import select_targets

        chosen = select_targets(
            self.config.fleet_targets(), regions=regions, subscriptions=subscriptions, names=names
        )
        await self.ctx.backend.state.set_target_switch(chosen, enabled)
        return chosen

    # provisioning

    async def setup(
        self,
        *,
        dry_run: bool = False,
        on_change: ChangeCallback | None = None,
        on_progress: SetupProgress | None = None,
    ) -> list[Change]:
        """Make everything the config declares exist; idempotent. Registers missing resource
        providers, creates resource groups, accounts and containers, and grants the data roles;
        changes run concurrently within Resource Manager's write budget per subscription.

        :param dry_run: only plan: change nothing.
        :param on_change: called after each change is made.
        :param on_progress: called after each change with (done, total, change).
        :return: the changes planned (and, unless ``dry_run``, made); empty if none were needed.
        :raises InvalidInput: if a storage account name is taken by someone else (nothing changed).
        """
        from ._engine._setup import apply_changes, plan_setup

        changes = await plan_setup(self.ctx)
        if not dry_run and changes:
            await apply_changes(self.ctx, changes, on_change or _ignore, on_progress=on_progress)

        return changes

    async def teardown(
        self,
        *,
        dry_run: bool = False,
        changes: Sequence[Change] | None = None,
        on_change: ChangeCallback | None = None,
        on_progress: SetupProgress | None = None,
        keep_images: bool = False,
    ) -> list[Change]:
        """Remove what setup made: the storage accounts and resource groups tagged by it (images
        included, unless ``keep_images``). Anything else it finds is listed as kept, with why.

        :param dry_run: only plan: change nothing.
        :param changes: make exactly these (from an earlier dry run, once confirmed) instead of
            planning again.
        :param on_change: called after each change is made.
        :param on_progress: called after each change with (done, total, change).
        :param keep_images: keep the images resource groups (and the images in them).
        :return: the changes planned (and, unless ``dry_run``, made), kept resources included.
        """
        from ._engine._setup import apply_changes, plan_teardown

        planned = (
            list(changes)
            if changes is not None
            else await plan_teardown(self.ctx, keep_images=keep_images)
        )
        if not dry_run and planned:
            await apply_changes(self.ctx, planned, on_change or _ignore, on_progress=on_progress)

        return planned

    async def check(self) -> list[Problem]:
        """Pre-flight: credentials, resource providers, regions, resource groups, accounts,
        containers, data access (a probe blob written, read, copied and deleted in every account;
        a role named when one is missing) and the state store.

        :return: one problem per thing wrong, with what to do about it; empty if all is well.
        """
        from ._engine._setup import run_checks

        return await run_checks(self.ctx)

    def plan(
        self,
        *,
        disk_bytes: int,
        occupied_bytes: int,
        strategy: str | None = None,
        upload_rate: float = 60 * 1024 * 1024,
        seed: int = 0,
        publish: Sequence[str] | None = None,
    ) -> Plan:
        """Predict a distribution over the config's fleet by simulating it in virtual time.

        Needs no backend (call it without ``async with``) and touches no cloud; it runs its own
        event loop, so call it outside one.

        :param upload_rate: the upload speed in bytes per second, to price the upload.
        """
        from ._plan import plan_distribution  # the simulator, loaded only when asked for

        return plan_distribution(
            self.config,
            disk_bytes=disk_bytes,
            occupied_bytes=occupied_bytes,
            strategy=strategy,
            upload_rate=upload_rate,
            seed=seed,
            publish=publish,
        )

    # no config needed

    @staticmethod
    def generate_targets(subscriptions_file: Path, regions: Sequence[str], prefix: str) -> str:
        """See :func:`imagedist._fleet.generate_targets`."""
        from ._fleet import generate_targets

        return generate_targets(subscriptions_file, regions, prefix)

    @staticmethod
    def append_targets(config_path: Path, text: str) -> int:
        """See :func:`imagedist._fleet.append_targets`."""
        from ._fleet import append_targets

        return append_targets(config_path, text)

    @staticmethod
    def prepare_demo(folder: Path | None = None) -> Demo:
        """See :func:`imagedist._demo.prepare_demo`."""
        from ._demo import prepare_demo

        return prepare_demo(folder)

    @staticmethod
    def inspect_disk(path: Path) -> Inspection:
        """The format, sizes and Azure readiness of the disk image at ``path``.

        :raises InvalidInput: if ``path`` is not a regular file (checked before opening it: a
            FIFO would block), or the image is unreadable or damaged.
        """
        from ._vhd import inspect_image

        check_regular_file(path, DISK_FIX)
        return inspect_image(path)

    @staticmethod
    def convert_disk(source: Path, out: Path, *, force: bool = False) -> ConvertResult:
        """Convert ``source`` to a sparse fixed VHD at ``out``, rounded up to a whole MiB.

        :param force: overwrite ``out`` if it exists.
        :raises InvalidInput: if ``source`` is not a regular file, ``out`` exists and is not one
            (writing to a FIFO or a device blocks or goes nowhere), or the conversion fails.
        """
        from ._vhd import convert_to_fixed_vhd

        check_regular_file(source, DISK_FIX)
        _check_output(out)
        return convert_to_fixed_vhd(source, out, force=force)


class JobReader:
    """The jobs as the state store has them: their status and logs, nothing that changes them.

    :class:`Imagedist` reads jobs with it; :func:`read_jobs` opens one from the config file
    alone, for the commands that only read.
    """

    def __init__(self, state: StateStore) -> None:
        self.state = state

    async def jobs(self) -> list[JobStatus]:
        """Every job with its status, newest first."""
        from ._engine import job_status

        return [await job_status(self.state, job.id) for job in await self.state.list_jobs()]

    async def status(self, job_id: str) -> JobStatus:
        """:raises InvalidInput: if there is no such job."""
        from ._engine import job_status

        return await job_status(self.state, job_id)

    async def logs(self, job_id: str, where: LogFilter | None = None) -> list[LogRecord]:
        """The job's log in time order: every line, or those ``where`` matches.

        :raises InvalidInput: if there is no such job.
        """
        from ._engine import get_job

        job = await get_job(self.state, job_id)
        return await self.state.list_logs(job.id, where)


def run_reader(config_path: Path, body: Callable[[JobReader], Coroutine[Any, Any, R]]) -> R:
    """Run ``body`` over the jobs of the config file at ``config_path`` and return its result,
    for a program that runs no event loop of its own (the commands that only read).

    A config whose very contents this code validated before has its state store read in this
    thread: ``body`` ends without suspending and is finished without an event loop (asyncio is
    not even imported). Any other config is validated in full by :func:`read_jobs`, and
    ``body`` runs in an event loop.

    :raises ConfigError: if the config file is missing, unreadable or invalid.
    """
    content = read_config_bytes(config_path)
    root = remembered_local_root(content, config_path)
    if root is None:
        import asyncio

        async def main() -> R:
            async with _read_validating(content, config_path) as reader:
                return await body(reader)

        return asyncio.run(main())
    state = open_local_state_store(root, in_worker_threads=False)
    try:
        return finish(body(JobReader(state)))
    finally:
        finish(state.aclose())


@asynccontextmanager
async def read_jobs(config_path: Path) -> AsyncIterator[JobReader]:
    """A :class:`JobReader` of the state store of the config file at ``config_path``.

    A config whose very contents this code validated before opens its state store without
    loading the config's models (see :mod:`imagedist._config_memo`); any other is validated in
    full first, as :func:`load_config` does, so a bad one raises the same error.

    :raises ConfigError: if the config file is missing, unreadable or invalid.
    """
    content = read_config_bytes(config_path)
    root = remembered_local_root(content, config_path)
    if root is not None:
        state = open_local_state_store(root)
        try:
            yield JobReader(state)
        finally:
            await state.aclose()
        return
    async with _read_validating(content, config_path) as reader:
        yield reader


@asynccontextmanager
async def _read_validating(content: bytes, config_path: Path) -> AsyncIterator[JobReader]:
    """A :class:`JobReader` of the config ``content`` (read from ``config_path``), validated in
    full first and remembered as valid."""
    from ._config import config_from_bytes

    config = config_from_bytes(content, config_path)
    remember_valid(content, config)
    backend = open_backend(config)
    try:
        yield JobReader(backend.state)
    finally:
        await backend.aclose()


def __getattr__(name: str) -> Any:
    """The status, provisioning and demo types this module offers, imported when first asked
    for."""
    if name == "JobStatus":
        from ._engine import JobStatus

        return JobStatus
    if name in ("Change", "Problem"):
        from ._engine import _setup

        return getattr(_setup, name)
    if name == "Demo":
        from ._demo import Demo

        return Demo
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _ignore(change: Change) -> None:
    """No report of a change made."""


def _check_output(out: Path) -> None:
    """``out`` may be new or a regular file."""
    try:
        kind = kind_of(out.stat().st_mode)
    except OSError:
        return  # does not exist yet (or cannot be looked at: the conversion will say why)

    if kind is not None:
        raise InvalidInput(
            f"{str(out)!r} is {kind}, not a regular file; give a new file's path as OUT."
        )
