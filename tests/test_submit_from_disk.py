"""`submit --from-disk`: grant read access, copy server-side into staging, revoke in every case."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from imagedist import Imagedist, JobState, LogFilter, OsType, TargetState
from imagedist._backends.local.images import DiskAccess, LocalImageService
from imagedist._cli import cli
from imagedist._disks import open_disk_file
from imagedist._domain import BlobRef, Job, LogRecord
from imagedist._engine._status import JobStatus
from imagedist._engine._upload import upload_file
from imagedist._exceptions import TransientError
from imagedist._vhd import convert_to_fixed_vhd
from imagedist.abc import BlobProperties, CopyStatus

from helpers import call, make_disk, write_config

DISK_ID = "/subscriptions/sub-a/resourceGroups/disks/providers/Microsoft.Compute/disks/golden"
DISK_BLOB = BlobRef("diskstore", "disks", "golden.vhd")


async def _register_disk(app: Imagedist, tmp_path: Path) -> int:
    raw = make_disk(tmp_path / "golden.raw")
    vhd = tmp_path / "golden.vhd"
    convert_to_fixed_vhd(raw, vhd)
    blobs = app.ctx.backend.blobs
    await blobs.ensure_container(DISK_BLOB.account, DISK_BLOB.container)
    with open_disk_file(vhd) as disk:
        await upload_file(blobs, DISK_BLOB, disk)
    size = raw.stat().st_size
    _local_images(app).register_disk(DISK_ID, DISK_BLOB, size)
    return size


def _local_images(app: Imagedist) -> LocalImageService:
    """The local image service, which holds managed disks for the test to look at."""
    images = app.ctx.backend.images
    assert isinstance(images, LocalImageService)
    return images


def test_a_job_from_a_managed_disk_completes_and_access_is_revoked(tmp_path: Path) -> None:
    config = write_config(tmp_path)

    async def body(
        app: Imagedist,
    ) -> tuple[int, Job, JobStatus, DiskAccess, list[LogRecord]]:
        size = await _register_disk(app, tmp_path)
        job = await app.submit_disk(DISK_ID, "golden", OsType.LINUX)
        await app.work([job.id])
        access = _local_images(app).disk_access(DISK_ID)
        logs = await app.logs(job.id)
        return size, job, await app.status(job.id), access, logs

    size, job, status, access, logs = call(config, body)
    assert job.size_bytes == size + 512  # the disk as a fixed VHD: its bytes and a footer
    assert status.completed and {t.state for t in status.targets} == {TargetState.DONE}
    assert (access.grants, access.revokes, access.granted) == (1, 1, False)
    assert not any("sig=" in r.message for r in logs)
    assert any("revoked" in r.message for r in logs)


def test_access_is_revoked_when_the_copy_fails(tmp_path: Path) -> None:
    config = write_config(tmp_path)

    async def body(app: Imagedist) -> tuple[JobStatus, DiskAccess, list[LogRecord]]:
        await _register_disk(app, tmp_path)
        await app.ctx.backend.blobs.delete_blob(DISK_BLOB)  # the disk's data is gone
        job = await app.submit_disk(DISK_ID, "golden", OsType.LINUX)
        await app.work([job.id])
        access = _local_images(app).disk_access(DISK_ID)
        return await app.status(job.id), access, await app.logs(job.id, LogFilter(level="error"))

    status, access, errors = call(config, body)
    assert status.state is JobState.FAILED
    assert {t.state for t in status.targets} == {TargetState.FAILED}
    assert (access.grants, access.revokes, access.granted) == (1, 1, False)
    assert errors and not any("sig=" in r.message for r in errors)


def test_bad_disk_ids_are_bad_input(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    runner = CliRunner()
    for disk_id, needle in [
        ("not-a-resource-id", "is not a managed disk's resource id"),
        (DISK_ID.replace("golden", "missing"), "does not exist"),
    ]:
        result = runner.invoke(
            cli,
            [
                "-c",
                str(config),
                "submit",
                "--from-disk",
                disk_id,
                "--image-name",
                "golden",
                "--os-type",
                "linux",
            ],
        )
        assert result.exit_code == 2, result.output
        assert needle in result.output and "Traceback" not in result.output
    both = runner.invoke(
        cli,
        [
            "-c",
            str(config),
            "submit",
            "x.vhd",
            "--from-disk",
            DISK_ID,
            "--image-name",
            "golden",
            "--os-type",
            "linux",
        ],
    )
    assert both.exit_code == 2 and "either FILE or --from-disk" in both.output


def test_a_transient_error_while_the_disk_copies_leaves_its_access_alone(tmp_path: Path) -> None:
    """Revoking a disk's access aborts a copy from it: a transient error while the copy runs
    must neither revoke the access nor start the copy again; the copy is followed to its end,
    then the access goes."""
    config = write_config(tmp_path, bandwidth=4.0, lease=30.0)  # the disk takes seconds to copy

    async def body(app: Imagedist) -> tuple[JobStatus, DiskAccess, list[LogRecord]]:
        await _register_disk(app, tmp_path)
        blobs = app.ctx.backend.blobs
        real = blobs.get_properties
        staging = app.config.staging.account
        failures = 0

        async def flaky(ref: BlobRef) -> BlobProperties:
            nonlocal failures
            props = await real(ref)
            if ref.account == staging and props.copy_status is CopyStatus.PENDING and not failures:
                failures += 1
                raise TransientError("503 ServerBusy: the service is busy", retry_after=0.1)
            return props

        blobs.get_properties = flaky  # type: ignore[method-assign]
        job = await app.submit_disk(DISK_ID, "golden", OsType.LINUX)
        await app.work([job.id])
        assert failures == 1  # the error did happen while the copy ran
        access = _local_images(app).disk_access(DISK_ID)
        return await app.status(job.id), access, await app.logs(job.id)

    status, access, logs = call(config, body)
    assert status.completed and {t.state for t in status.targets} == {TargetState.DONE}
    assert (access.grants, access.revokes, access.granted) == (1, 1, False)
    assert sum("revoked" in r.message for r in logs) == 1
