"""Cleanup deletes a pass's intermediate blobs at once, not one after the other: each deletion's
row write then arrives with the others, and a state store that gathers the writes arriving
together (the Azure one: a table transaction of up to 100) sends them together. One after the
other, every deleted blob cost a transaction of its own (issue 13: calls per target)."""

from __future__ import annotations

import asyncio
import dataclasses
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from imagedist import OsType
from imagedist._backends.sim import SimModel, open_sim_backend, preload_tier0, run_virtual
from imagedist._backends.sim.scenario import _sparse_fixed_vhd, scenario_config
from imagedist._domain import BlobRef, TargetState
from imagedist._engine import EngineContext, Worker, cleanup_job, submit_job
from imagedist._engine._cleanup import drop_target_blobs
from imagedist._exceptions import TransientError

GIB = 1024**3


class Deletions:
    """Counts the deletions in flight at once; fails those of the blobs named in ``failing``."""

    def __init__(self, delete: Callable[[BlobRef], Awaitable[bool]]) -> None:
        self._delete = delete
        self.in_flight = self.most = 0
        self.failing: set[BlobRef] = set()

    async def __call__(self, ref: BlobRef) -> bool:
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        try:
            await asyncio.sleep(0)  # let any deletion sent with this one start
            if ref in self.failing:
                raise TransientError(f"injected: delete {ref} failed")
            return await self._delete(ref)
        finally:
            self.in_flight -= 1


def _job_then(check: Callable[[EngineContext, str, Deletions], Awaitable[None]]) -> None:
    """A job of 3 subscriptions x 4 regions to its end in the simulator, then ``check``."""

    async def drive(folder: Path) -> None:
        config = scenario_config(3, 4)
        backend = open_sim_backend(config, model=SimModel(), seed=1)
        deletions = Deletions(backend.blobs.delete_blob)
        backend.blobs.delete_blob = deletions  # type: ignore[method-assign]
        ctx = EngineContext(backend, config, worker_id="w-1")
        job = await submit_job(ctx, _sparse_fixed_vhd(folder / "g.vhd", GIB), "g", OsType.LINUX, "")
        await preload_tier0(backend, job, GIB // 2)
        await Worker(ctx, [job.id]).run()
        await check(ctx, job.id, deletions)

    with tempfile.TemporaryDirectory() as folder:
        run_virtual(drive(Path(folder)))


def test_a_jobs_target_blobs_are_deleted_together_and_recorded() -> None:
    async def check(ctx: EngineContext, job_id: str, deletions: Deletions) -> None:
        targets = await ctx.backend.state.list_targets(job_id)
        assert len(targets) == 12
        assert all(t.state is TargetState.DONE and t.blob_deleted for t in targets)
        assert deletions.most >= 12  # every target's blob at once, not one by one
        assert all(s.deleted for s in await ctx.backend.state.list_sources(job_id))

    _job_then(check)


def test_a_failed_deletion_fails_the_cleanup_after_the_others_are_done() -> None:
    async def check(ctx: EngineContext, job_id: str, deletions: Deletions) -> None:
        state = ctx.backend.state
        # As if the blobs were still there: the rows as they are, but not yet cleaned.
        targets = [
            dataclasses.replace(t, blob_deleted=False) for t in await state.list_targets(job_id)
        ]
        failing = targets[5]
        deletions.failing = {failing.blob}
        job = await state.get_job(job_id)
        with pytest.raises(TransientError, match="injected"):
            await drop_target_blobs(ctx, job, targets)
        after = {t.target: t for t in await state.list_targets(job_id)}
        recorded = [t for t in targets if after[t.target].version == t.version + 1]
        assert failing not in recorded and len(recorded) == len(targets) - 1
        assert deletions.most == len(targets)

    _job_then(check)


def test_a_manual_cleanup_deletes_every_target_blob_together_and_records_it() -> None:
    async def check(ctx: EngineContext, job_id: str, deletions: Deletions) -> None:
        state = ctx.backend.state
        # As if the worker had not cleaned up yet: every target's row says its blob is there.
        for target in await state.list_targets(job_id):
            await state.put_target(dataclasses.replace(target, blob_deleted=False))
        deletions.most = 0  # the worker's own cleanup counted before
        await cleanup_job(ctx, job_id)
        targets = await state.list_targets(job_id)
        assert len(targets) == 12 and all(t.blob_deleted for t in targets)
        assert deletions.most >= 12  # every target's blob at once, not one by one

    _job_then(check)
