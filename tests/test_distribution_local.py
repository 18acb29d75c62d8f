"""End to end on the local backend, through the library: the issue-2 acceptance scenarios."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from imagedist import (
    FailedPhase,
    Imagedist,
    JobState,
    JobStatus,
    LogFilter,
    OsType,
    Target,
    TargetState,
)
from imagedist._domain import LogRecord, TargetRow
from imagedist.abc import Image, ProvisioningState

from helpers import call, leftover_blobs, make_disk, write_config


async def _submit_and_work(app: Imagedist, disk: Path, name: str = "golden") -> str:
    job = await app.submit(disk, name, OsType.LINUX, "test")
    await app.upload(job.id)
    await app.work([job.id])
    return job.id


WorkDone = tuple[TargetState, int, str | None, str | None]


def _work_done(row: TargetRow) -> WorkDone:
    return row.state, row.attempts, row.source_id, row.copy_id


def _states(status: JobStatus) -> dict[str, TargetState]:
    return {t.target: t.state for t in status.targets}


def test_distributes_to_every_target_and_cleans_up(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    disk = make_disk(tmp_path / "disk.vhd")

    async def body(
        app: Imagedist,
    ) -> tuple[JobStatus, dict[str, Image], list[str]]:
        job_id = await _submit_and_work(app, disk)
        status = await app.status(job_id)
        images = {}
        for target in app.config.fleet_targets():
            image = await app.ctx.backend.images.get_image(
                target.subscription, target.resource_group, f"golden.{target.region}"
            )
            images[target.name] = image
        return status, images, await leftover_blobs(app)

    status, images, leftovers = call(config, body)
    assert (status.upload_pct, status.tier1_pct, status.copies_pct, status.images_pct) == (
        100,
        100,
        100,
        100,
    )
    assert status.completed and status.error_count == 0
    assert len(images) == 9
    for image in images.values():
        assert image.provisioning_state is ProvisioningState.SUCCEEDED
        assert image.os_type is OsType.LINUX
        assert image.name == f"golden.{image.region}"
    assert leftovers == []


def test_target_blob_holds_the_disk_data_until_its_image_exists(tmp_path: Path) -> None:
    """The copy is verified byte for byte before the blob goes (checked on one target)."""
    config = write_config(tmp_path, image_seconds=30)
    disk = make_disk(tmp_path / "disk.vhd")

    async def body(app: Imagedist) -> bytes:
        job = await app.submit(disk, "golden", OsType.WINDOWS)
        await app.upload(job.id)
        task = asyncio.ensure_future(app.work([job.id]))
        while True:
            status = await app.status(job.id)
            if status.copies_pct == 100:
                break
            await asyncio.sleep(0.05)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        row = status.targets[0]
        data = await app.ctx.backend.blobs.read(row.blob, 0, job.size_bytes)
        return data

    raw = disk.read_bytes()
    blob = call(config, body)
    # The raw disk went up as a fixed VHD: the same bytes, then the 512-byte footer.
    assert len(blob) == len(raw) + 512
    assert blob[: len(raw)] == raw and blob[len(raw) :].startswith(b"conectix")


def test_disabled_region_is_skipped_then_filled_in_by_retry(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    disk = make_disk(tmp_path / "disk.vhd")

    async def first(app: Imagedist) -> tuple[str, JobStatus]:
        await app.set_enabled(False, regions=["japaneast"])
        job_id = await _submit_and_work(app, disk)
        return job_id, await app.status(job_id)

    job_id, status = call(config, first)
    skipped = [t for t in status.targets if t.state is TargetState.SKIPPED]
    assert {t.region for t in skipped} == {"japaneast"} and len(skipped) == 3
    assert status.completed
    assert (status.copies_pct, status.images_pct) == (100, 100)

    async def second(app: Imagedist) -> tuple[list[str], JobStatus, list[str]]:
        await app.set_enabled(True, regions=["japaneast"])
        retried = await app.retry(job_id)
        await app.work([job_id])
        return retried, await app.status(job_id), await leftover_blobs(app)

    retried, status, leftovers = call(config, second)
    assert sorted(retried) == [f"sub-{s}/japaneast" for s in "abc"]
    assert set(_states(status).values()) == {TargetState.DONE}
    assert status.completed and leftovers == []


def test_disabling_a_region_takes_effect_in_a_running_job(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    disk = make_disk(tmp_path / "disk.vhd")

    async def body(app: Imagedist) -> JobStatus:
        job = await app.submit(disk, "golden", OsType.LINUX)
        await app.set_enabled(False, regions=["eastus"])  # after submit, before any work
        await app.upload(job.id)
        await app.work([job.id])
        return await app.status(job.id)

    status = call(config, body)
    assert {t.target for t in status.targets if t.state is TargetState.SKIPPED} == {
        "sub-a/eastus",
        "sub-b/eastus",
        "sub-c/eastus",
    }
    assert status.completed


def test_failed_copy_fails_only_its_target_and_retry_completes(tmp_path: Path) -> None:
    folder = tmp_path
    disk = make_disk(folder / "disk.vhd")
    probe = write_config(folder)
    victim = next(t for t in call(probe, _fleet) if t.name == "sub-b/eastus")
    config = write_config(folder, fail_copies=[victim.account])

    async def first(app: Imagedist) -> tuple[str, JobStatus, list[LogRecord]]:
        job_id = await _submit_and_work(app, disk)
        return job_id, await app.status(job_id), await app.logs(job_id, LogFilter(level="error"))

    job_id, status, errors = call(config, first)
    states = _states(status)
    assert states.pop("sub-b/eastus") is TargetState.FAILED
    assert set(states.values()) == {TargetState.DONE}
    assert status.state is JobState.FAILED and status.error_count == 1
    failed = next(t for t in status.targets if t.target == "sub-b/eastus")
    assert failed.failed_phase is FailedPhase.COPY and "injected copy failure" in failed.error
    assert any(r.target == "sub-b/eastus" and "injected" in r.message for r in errors)

    config = write_config(folder)  # the fault is gone

    async def second(
        app: Imagedist,
    ) -> tuple[dict[str, WorkDone], list[str], JobStatus, list[str]]:
        before = {t.target: _work_done(t) for t in (await app.status(job_id)).targets}
        retried = await app.retry(job_id, failed_only=True)
        await app.work([job_id])
        after = await app.status(job_id)
        return before, retried, after, await leftover_blobs(app)

    before, retried, after, leftovers = call(config, second)
    assert retried == ["sub-b/eastus"]
    assert after.completed and after.error_count == 0
    # Finished targets were not redone: same state, same copy, same source (only their
    # intermediate blob was cleaned up once the retried target no longer needed the sources).
    untouched = {t.target: _work_done(t) for t in after.targets if t.target != "sub-b/eastus"}
    assert untouched == {k: v for k, v in before.items() if k != "sub-b/eastus"}
    assert leftovers == []


def test_failed_image_is_retried_without_copying_again(tmp_path: Path) -> None:
    disk = make_disk(tmp_path / "disk.vhd")
    config = write_config(tmp_path, fail_images=["sub-c/westeurope"])

    async def first(app: Imagedist) -> tuple[str, JobStatus]:
        job_id = await _submit_and_work(app, disk)
        return job_id, await app.status(job_id)

    job_id, status = call(config, first)
    failed = next(t for t in status.targets if t.state is TargetState.FAILED)
    assert failed.target == "sub-c/westeurope" and failed.failed_phase is FailedPhase.IMAGE
    assert status.copies_pct == 100 and status.images_pct == 88  # 8 of 9, floored
    config = write_config(tmp_path)

    async def second(app: Imagedist) -> tuple[JobStatus, list[LogRecord]]:
        await app.retry(job_id, failed_only=True)
        await app.work([job_id])
        return await app.status(job_id), await app.logs(
            job_id, LogFilter(target="sub-c/westeurope")
        )

    status, logs = call(config, second)
    assert status.completed
    row = next(t for t in status.targets if t.target == "sub-c/westeurope")
    assert row.attempts == 1  # copied once, imaged twice
    assert sum("copy started" in r.message for r in logs) == 1


async def _fleet(app: Imagedist) -> list[Target]:
    return app.config.fleet_targets()
