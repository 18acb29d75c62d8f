"""The library's front door: one object per config, which the CLI calls for everything."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from ._backends import open_backend
from ._config import Config
from ._domain import (
    LOG_LEVELS,
    FailedPhase,
    Job,
    LogRecord,
    OsType,
    SourceKind,
    SourceRow,
    Target,
)
from ._engine import (
    EngineContext,
    JobStatus,
    Worker,
    cleanup_job,
    get_job,
    job_status,
    retry_job,
    select_targets,
    submit_disk_job,
    submit_job,
    target_enablement,
    upload_tier0,
)
from ._engine._upload import ProgressCallback
from ._exceptions import InvalidInput
from ._files import check_folder, check_regular_file
from .abc import Backend

__all__ = ["Imagedist"]


class Imagedist:
    """Everything imagedist does, for one config.

    Use as ``async with Imagedist(config) as app: ...``; the backend opens on entry.
    """

    def __init__(self, config: Config, backend: Backend | None = None) -> None:
        self.config = config
        self._backend = backend

    async def __aenter__(self) -> Imagedist:
        if self._backend is None:
            self._backend = open_backend(self.config)
        self.ctx = EngineContext(self._backend, self.config)
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
    ) -> Job:
        """Validate (and convert) the image and register a job; call :meth:`upload` next.

        See :func:`imagedist._engine.submit_job`.

        :raises InvalidInput: also if ``path`` is not a regular file (checked without opening it:
            opening a FIFO waits for a writer) or the work folder cannot be made.
        """
        check_regular_file(path, "give the path of a disk image file")
        check_folder(self.config.work_dir(), "[upload] work_dir")
        return await submit_job(self.ctx, path, image_name, os_type, description, convert=convert)

    async def submit_disk(
        self, disk_id: str, image_name: str, os_type: OsType, description: str = ""
    ) -> Job:
        """Register a job whose image is an Azure managed disk; a worker copies it server-side,
        granting read access for the copy and revoking it afterwards."""
        return await submit_disk_job(self.ctx, disk_id, image_name, os_type, description)

    async def upload(self, job_id: str, on_progress: ProgressCallback | None = None) -> SourceRow:
        """Upload the job's file to its tier-0 blob (resuming), holding the tier-0 lease.

        :return: the tier-0 row afterwards: ``ready`` once the upload is verified, ``failed``
            with the reason (and its fix) otherwise, as it was if a worker is uploading it.
        """
        job = await get_job(self.ctx, job_id)
        state = self.ctx.backend.state
        tier0 = next(s for s in await state.list_sources(job.id) if s.kind is SourceKind.TIER0)
        if not self.ctx.lease_is_free(tier0.lease_owner, tier0.lease_until):
            return tier0  # a worker is uploading it right now
        leased = await state.put_source(
            tier0.replace(lease_owner=self.ctx.worker_id, lease_until=self.ctx.lease_until())
        )
        done = await upload_tier0(self.ctx, job, leased, on_progress)
        return await state.put_source(done.replace(lease_owner=None))

    async def work(self, job_ids: Sequence[str] = (), *, forever: bool = False) -> None:
        """Run a worker until no active job (of ``job_ids``, if given) is left.

        :raises InvalidInput: if a given job id is unknown (checked before any work starts).
        """
        for job_id in job_ids:
            await get_job(self.ctx, job_id)
        await Worker(self.ctx, job_ids).run(forever=forever)

    async def jobs(self) -> list[JobStatus]:
        """Every job with its status, newest first."""
        return [
            await job_status(self.ctx, job.id) for job in await self.ctx.backend.state.list_jobs()
        ]

    async def status(self, job_id: str) -> JobStatus:
        return await job_status(self.ctx, job_id)

    async def logs(
        self,
        job_id: str,
        *,
        step: str | None = None,
        level: str | None = None,
        target: str | None = None,
    ) -> list[LogRecord]:
        """The job's log, filtered; ``level`` is the minimum level shown."""
        if level is not None and level not in LOG_LEVELS:
            raise InvalidInput(f"Level {level!r} is unknown; use one of {', '.join(LOG_LEVELS)}.")
        job = await get_job(self.ctx, job_id)
        return await self.ctx.backend.state.list_logs(job.id, step=step, level=level, target=target)

    async def retry(
        self,
        job_id: str,
        *,
        failed_only: bool = False,
        targets: Sequence[str] = (),
        phase: FailedPhase | None = None,
    ) -> list[str]:
        return await retry_job(
            self.ctx, job_id, failed_only=failed_only, targets=targets, phase=phase
        )

    async def cleanup(self, job_id: str, *, force: bool = False) -> int:
        return await cleanup_job(self.ctx, job_id, force=force)

    # targets

    async def targets(self) -> list[tuple[Target, bool]]:
        """The fleet with each target's effective switch."""
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
        chosen = select_targets(
            self.config.fleet_targets(), regions=regions, subscriptions=subscriptions, names=names
        )
        await self.ctx.backend.state.set_target_switch(chosen, enabled)
        return chosen
