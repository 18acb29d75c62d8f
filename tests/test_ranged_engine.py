"""Ranged copies in the engine (issue 13): chosen by ``[fanout] copy_method``, run inside the
target's task under its lease, verified like any copy, resumed by another worker after a kill."""

from __future__ import annotations

from pathlib import Path

import pytest

from imagedist import Imagedist, JobStatus, LogFilter, OsType
from imagedist._backends.local.blobs import LocalBlobStore
from imagedist._domain import BlobRef, LogRecord

from helpers import call, config_text, leftover_blobs, make_disk


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
    landed: list[tuple[BlobRef, int]] = []

    async def dies_after_two(
        self: LocalBlobStore, source: BlobRef, dest: BlobRef, offset: int, length: int
    ) -> None:
        if len(landed) == 2:
            raise _WorkerKilled
        await real_copy_range(self, source, dest, offset, length)
        landed.append((dest, offset))

    monkeypatch.setattr(LocalBlobStore, "copy_range", dies_after_two)

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

    job_id = call(config, killed)
    monkeypatch.setattr(LocalBlobStore, "copy_range", real_copy_range)
    resumed_dest = {dest for dest, _ in landed}

    async def resumed(app: Imagedist) -> tuple[JobStatus, list[LogRecord]]:
        await app.work([job_id])  # a new worker: it waits out the dead one's lease
        return await app.status(job_id), await app.logs(job_id, LogFilter(step="copy"))

    status, logs = call(config, resumed)
    assert status.completed and status.error_count == 0
    lines = ranged_lines(logs)
    by_blob = {next(t.blob for t in status.targets if t.target == r.target): r for r in lines}
    for dest in resumed_dest:
        already = sum(1 for d, _ in landed if d == dest)
        assert f"{already} already there, {4 - already} calls" in by_blob[dest].message
