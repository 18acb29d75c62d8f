"""Ranged copies in the engine (issue 13): chosen by ``[fanout] copy_method``, run inside the
target's task under its lease, verified like any copy, resumed by another worker after a kill."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from imagedist import Imagedist, JobStatus, LogFilter, OsType
from imagedist._backends.local.blobs import LocalBlobStore
from imagedist._backends.sim import open_sim_backend, preload_tier0, run_virtual, scenario_config
from imagedist._backends.sim.blobs import SimBlobStore
from imagedist._backends.sim.scenario import _sparse_fixed_vhd, run_scenario
from imagedist._domain import BlobRef, JobState, LogRecord, SourceKind, TargetRow
from imagedist._domain.events import (
    COPIED_BY_COPY_BLOB,
    COPIED_BY_RANGES,
    EngineEvent,
    EventKind,
)
from imagedist._engine import EngineContext, Worker, submit_job
from imagedist._engine._ranged import missing_ranges, plan_ranges
from imagedist._engine._targets import TargetDriver
from imagedist._exceptions import NotFound, OperationFailed
from imagedist.abc import RANGED_COPY_UNSUPPORTED

from helpers import call, config_text, leftover_blobs, make_disk

GIB = 1024**3


def ranged_config(folder: Path, method: str = "ranged", lease: float = 2.0) -> Path:
    path = folder / "imagedist.toml"
    path.write_text(
        config_text(
            staging={
                "subscription": "sub-staging",
                "region": "westeurope",
                "account": "stagingacct",
            },
            fleet={"subscriptions": ["sub-a", "sub-b"], "regions": ["westeurope", "eastus"]},
            fanout={"tier1_copies": 1, "max_reads_per_source": 3, "copy_method": method},
            concurrency={"lease_seconds": lease, "poll_interval_seconds": 0.05},
            local={"image_create_seconds": 0.1},
        ),
        encoding="utf-8",
    )
    return path


def ranged_lines(logs: list[LogRecord]) -> list[LogRecord]:
    return [r for r in logs if r.message.startswith("copied by ranges")]


def test_copy_method_ranged_distributes_every_target_by_ranges(tmp_path: Path) -> None:
    config = ranged_config(tmp_path)
    disk = make_disk(tmp_path / "disk.vhd", size_mib=16, data_mib=(0, 5, 6, 13))

    async def body(app: Imagedist) -> tuple[JobStatus, list[LogRecord], list[str]]:
        job = await app.submit(disk, "golden", OsType.LINUX)
        await app.upload(job.id)
        await app.work([job.id])
        logs = await app.logs(job.id, LogFilter(step="copy"))
        return await app.status(job.id), logs, await leftover_blobs(app)

    status, logs, leftovers = call(config, body)
    assert status.completed and status.error_count == 0
    lines = ranged_lines(logs)
    assert sorted(r.target for r in lines) == sorted(t.target for t in status.targets)
    # 4 MiB of data and the footer in 4 ranges on the 4 MiB grid (0-4: 1 MiB, 4-8: 2 MiB,
    # 12-16: 1 MiB, and the footer's page after 16 MiB), copied once each: nothing empty,
    # nothing twice.
    assert all("4 ranges of data, 0 already there, 4 calls" in r.message for r in lines)
    assert leftovers == []


def test_copy_method_async_never_copies_by_ranges(tmp_path: Path) -> None:
    config = ranged_config(tmp_path, method="async")
    disk = make_disk(tmp_path / "disk.vhd")

    async def body(app: Imagedist) -> tuple[JobStatus, list[LogRecord]]:
        job = await app.submit(disk, "golden", OsType.LINUX)
        await app.upload(job.id)
        await app.work([job.id])
        return await app.status(job.id), await app.logs(job.id, LogFilter(step="copy"))

    status, logs = call(config, body)
    assert status.completed and ranged_lines(logs) == []


class _WorkerKilled(BaseException):
    """The worker process dies: nothing after it runs (not an error the engine could handle)."""


def test_a_worker_killed_mid_ranged_copy_is_resumed_without_recopying_what_landed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = ranged_config(tmp_path)
    disk = make_disk(tmp_path / "disk.vhd", size_mib=16, data_mib=(0, 5, 6, 13))
    real_copy_range = LocalBlobStore.copy_range
    calls: list[tuple[BlobRef, int]] = []
    landed: list[tuple[BlobRef, int]] = []
    two_landed = asyncio.Event()

    async def dies_at_the_third_call(
        self: LocalBlobStore, source: BlobRef, dest: BlobRef, offset: int, length: int
    ) -> None:
        # The first two calls land; the worker dies once they did, as the third one starts
        # (a call cancelled before its thread ran would never land: the count would vary).
        calls.append((dest, offset))
        if len(calls) >= 3:
            await two_landed.wait()
            raise _WorkerKilled
        await real_copy_range(self, source, dest, offset, length)
        landed.append((dest, offset))
        if len(landed) == 2:
            two_landed.set()

    monkeypatch.setattr(LocalBlobStore, "copy_range", dies_at_the_third_call)

    async def killed(app: Imagedist) -> str:
        job = await app.submit(disk, "golden", OsType.LINUX)
        await app.upload(job.id)
        with pytest.raises(BaseException) as died:
            await app.work([job.id])
        assert (
            died.group_contains(_WorkerKilled)
            if isinstance(died.value, BaseExceptionGroup)
            else isinstance(died.value, _WorkerKilled)
        )
        return job.id

    job_id = call(config, killed)  # its threads finished their writes as the loop closed
    monkeypatch.setattr(LocalBlobStore, "copy_range", real_copy_range)

    async def resumed(app: Imagedist) -> tuple[JobStatus, list[LogRecord], dict[str, int]]:
        blobs = app.ctx.backend.blobs
        rows = (await app.status(job_id)).targets
        sources = await app.ctx.backend.state.list_sources(job_id)
        upload = next(s for s in sources if s.kind is SourceKind.TIER0).blob
        planned = plan_ranges(await blobs.page_ranges(upload), blobs.copy_range_bytes)
        landed_in = {}
        for row in rows:
            try:
                there = await blobs.page_ranges(row.blob)
            except NotFound:
                there = []
            landed_in[row.target] = len(planned) - len(missing_ranges(planned, there))
        await app.work([job_id])  # a new worker: it waits out the dead one's lease
        return await app.status(job_id), await app.logs(job_id, LogFilter(step="copy")), landed_in

    status, logs, landed_in = call(config, resumed)
    assert status.completed and status.error_count == 0
    assert sum(landed_in.values()) == 2  # the dead worker's two ranges, and no more
    lines = {r.target: r.message for r in ranged_lines(logs)}
    for target, already in landed_in.items():
        # Each copy moved only what was missing: what landed before the kill is not sent again.
        assert f"4 ranges of data, {already} already there, {4 - already} calls" in lines[target]


def test_a_store_that_turns_out_not_to_copy_ranges_still_distributes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # "auto" tries ranges first; a service without Put Page From URL (Azurite: 501) makes it
    # fall back to Copy Blob. A copy that had already been offered a parent still being made
    # (pipelining) cannot follow it without ranges: it must wait for a whole source, not try
    # ranges again forever (which hung three workers on Azurite).
    async def unsupported(self: SimBlobStore, *args: object) -> None:
        # Answered late, as over a network: meanwhile the row says its copy moves by ranges.
        await self.storage.clock.sleep(30)
        raise OperationFailed("501 Not Implemented", code=RANGED_COPY_UNSUPPORTED)

    monkeypatch.setattr(SimBlobStore, "copy_range", unsupported)
    config = scenario_config(6, 2, copies=100, images=100, copy_method="auto")
    result = run_scenario(config, occupied=GIB, disk_bytes=2 * GIB)
    assert result.state is JobState.COMPLETED
    assert result.counts == {"done": 12}
    assert result.stats.range_requests == 0


@pytest.mark.parametrize("slots", [0, 2])
def test_auto_moves_no_more_copies_by_ranges_at_once_than_its_slots(
    monkeypatch: pytest.MonkeyPatch, slots: int
) -> None:
    # A ranged copy costs the worker a request per 4 MiB: "auto" keeps [fanout] ranged_copies
    # of them going and moves the rest by Copy Blob.
    peak = 0
    in_slot = TargetDriver._ranged_copy_in_slot

    async def watched(self: TargetDriver, *args: Any, **kwargs: Any) -> Any:
        nonlocal peak
        peak = max(peak, self.ctx.ranged_running)
        return await in_slot(self, *args, **kwargs)

    monkeypatch.setattr(TargetDriver, "_ranged_copy_in_slot", watched)
    config = scenario_config(8, 3, copies=100, images=100, copy_method="auto")
    fanout = config.fanout.model_copy(update={"ranged_copies": slots})
    result = run_scenario(config.model_copy(update={"fanout": fanout}), occupied=GIB)
    assert result.state is JobState.COMPLETED
    assert result.counts == {"done": 24}
    assert peak <= slots
    assert (result.stats.range_requests > 0) is (slots > 0)


def _distribute_in_the_simulator(
    tmp_path: Path, strategy: str, ranged_copies: int
) -> tuple[list[TargetRow], dict[str, str], str]:
    """Targets, the method that moved each copy, and the staging region of a simulated job
    under ``copy_method = "auto"``."""
    config = scenario_config(4, 6, copies=100, images=100, copy_method="auto")
    fanout = config.fanout.model_copy(update={"ranged_copies": ranged_copies, "strategy": strategy})
    upload = config.upload.model_copy(update={"work_dir": str(tmp_path)})
    config = config.model_copy(update={"fanout": fanout, "upload": upload})
    events: list[EngineEvent] = []

    async def distribute() -> list[TargetRow]:
        backend = open_sim_backend(config, seed=0)
        ctx = EngineContext(backend, config, worker_id="w-test", on_event=events.append)
        disk = _sparse_fixed_vhd(tmp_path / "golden.vhd", 30 * GIB)
        job = await submit_job(ctx, disk, "golden", OsType.LINUX, "test")
        await preload_tier0(backend, job, 15 * GIB)
        await Worker(ctx, [job.id]).run()
        assert (await backend.state.get_job(job.id)).state is JobState.COMPLETED
        return await backend.state.list_targets(job.id)

    targets = run_virtual(distribute())
    moved_by = {e.target: e.detail for e in events if e.kind is EventKind.COPY_VERIFIED}
    return targets, moved_by, config.staging.region


def test_auto_lands_every_region_s_seed_by_ranges_however_few_its_slots(tmp_path: Path) -> None:
    # A region's seed is on the critical path of all its targets: under "auto" it waits for a
    # ranged copy's slot (a minute or two) rather than start a Copy Blob across regions (up to
    # an hour); the other copies of the region go by Copy Blob while the slots are taken.
    targets, moved_by, staging = _distribute_in_the_simulator(tmp_path, "broadcast", 2)
    region = {f"target:{t.target}": t.region for t in targets}
    seeds = [t for t in targets if region.get(t.source_id or "", staging) != t.region]
    assert len(seeds) == 5  # one per region but the staging one
    assert {moved_by[t.target] for t in seeds} == {COPIED_BY_RANGES}
    assert COPIED_BY_COPY_BLOB in moved_by.values()  # the slots were too few for the rest


def test_auto_keeps_the_original_strategy_s_copies_from_waiting_for_a_slot(
    tmp_path: Path,
) -> None:
    # The original copies every target from the staging account: none seeds a region the
    # others fill from, so none waits for a ranged slot (they would all queue behind one).
    _, moved_by, _ = _distribute_in_the_simulator(tmp_path, "original", 1)
    by_copy_blob = sum(method == COPIED_BY_COPY_BLOB for method in moved_by.values())
    assert by_copy_blob >= len(moved_by) - 2
