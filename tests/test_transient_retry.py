"""A transient error (503, 429) mid-copy is retried by the same task, from the row as stored."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from imagedist import Imagedist, LogFilter, OsType, TargetState, TransientError, load_config
from imagedist._backends import open_backend
from imagedist._domain import BlobRef, LogRecord
from imagedist._engine._status import JobStatus
from imagedist.abc import BlobProperties

from helpers import make_disk, write_config


def test_a_busy_platform_is_retried_without_losing_the_lease(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = load_config(write_config(tmp_path))
    disk = make_disk(tmp_path / "disk.vhd")
    backend = open_backend(config)
    busy = {"left": 3}
    original = backend.blobs.get_properties

    async def flaky(ref: BlobRef) -> BlobProperties:
        if ref.account != config.staging.account and busy["left"] > 0:
            busy["left"] -= 1
            raise TransientError("503 ServerBusy (injected)", retry_after=0.01)
        return await original(ref)

    backend.blobs.get_properties = flaky  # type: ignore[method-assign]

    async def main() -> tuple[JobStatus, list[LogRecord]]:
        async with Imagedist(config, backend) as app:
            job = await app.submit(disk, "golden", OsType.LINUX)
            await app.upload(job.id)
            await app.work([job.id])
            return await app.status(job.id), await app.logs(job.id, LogFilter(level="warning"))

    with caplog.at_level(logging.INFO, logger="imagedist.worker"):
        status, warnings = asyncio.run(main())
    assert busy["left"] == 0 and status.completed
    assert {t.state for t in status.targets} == {TargetState.DONE}
    assert sum("retrying" in r.message for r in warnings) == 3
    assert not any("lost the lease" in r.getMessage() for r in caplog.records)
