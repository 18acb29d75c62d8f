"""No job waits forever (issue 8): every unfinished target has a way forward after cleanup,
switches and every form of retry, as a user runs them through the CLI on the local backend.

Each test is one of the issue's reproductions; the class they stand for (every mix of cleanup,
enable and retry) is covered by tests/test_engine_stateful.py on the simulator.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result

from imagedist import Imagedist, TargetState, load_config
from imagedist._domain import BlobRef, FailedPhase
from imagedist._exceptions import TransientError
from imagedist.abc import BlobProperties

from helpers import call, leftover_blobs

Cli = Callable[..., Result]
# 2 subscriptions x 2 regions, as in the issue.
FLEET = {"subscriptions": ["sub-a", "sub-b"], "regions": ["westeurope", "eastus"]}
# Bounded waits: a regression fails here instead of hanging the suite.
WAIT = {"poll_interval_seconds": 0.05, "lease_seconds": 3}


@pytest.fixture
def fleet_config(write_config: Callable[..., Path]) -> Callable[..., Path]:
    def write(**local: Any) -> Path:
        return write_config(
            fleet=FLEET,
            concurrency=WAIT,
            local={"fail_images_in": local.get("fail_images_in", [])},
        )

    return write


def _ok(result: Result) -> Result:
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def _status(cli: Cli, config: Path, job: str) -> dict[str, Any]:
    result = cli(config, "status", job, "--json")
    assert result.exit_code in (0, 1), (result.output, result.exception)  # 1: the job failed
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def _states(cli: Cli, config: Path, job: str) -> dict[str, str]:
    return {t["target"]: t["state"] for t in _status(cli, config, job)["targets"]}


def _run(cli: Cli, config: Path, disk: Path) -> tuple[Result, str]:
    result = cli(config, "run", str(disk), "--image-name", "gold", "--os-type", "linux", "--json")
    job: str = json.loads(result.stdout)["job"]
    return result, job


def _work(cli: Cli, config: Path, job: str) -> None:
    """A worker runs until nothing is left: it must return (the bug was one that never did)."""
    _ok(cli(config, "worker", "--job", job))


def _assert_completed(cli: Cli, config: Path, job: str) -> None:
    status = _status(cli, config, job)
    assert status["completed"], status
    assert set(_states(cli, config, job).values()) == {"done"}


def _assert_every_image_is_its_targets_own(config: Path, job: str) -> None:
    async def check(app: Imagedist) -> None:
        rows = await app.ctx.backend.state.list_targets(job)
        for row in rows:
            assert row.state is TargetState.DONE, row
            image = await app.ctx.backend.images.get_image(
                row.subscription, row.resource_group, row.image_name
            )
            assert image.source_blob == row.blob, (image, row)

    call(config, check)


def test_cleanup_refuses_while_targets_need_blobs_then_force_and_retry_finish(
    fleet_config: Callable[..., Path], sample_disk: Path, cli: Cli
) -> None:
    config = fleet_config()
    submitted = _ok(
        cli(config, "submit", str(sample_disk), "--image-name", "gold", "--os-type", "linux")
    )
    job = submitted.stdout.strip().splitlines()[-1]
    refused = cli(config, "cleanup", job)
    assert refused.exit_code == 2 and "--force" in refused.stderr, refused.output
    assert set(_states(cli, config, job).values()) == {"pending"}  # nothing changed
    _ok(cli(config, "cleanup", job, "--force"))
    status = _status(cli, config, job)
    assert {t["state"] for t in status["targets"]} == {"failed"}
    assert all("retry" in t["error"] for t in status["targets"]), status
    _work(cli, config, job)  # returns: every target has failed with its reason
    retried = _ok(cli(config, "retry", job, "--wait"))
    assert "4 targets put back to work" in retried.stdout
    _assert_completed(cli, config, job)
    _assert_every_image_is_its_targets_own(config, job)


def test_forced_cleanup_after_an_image_failure_then_failed_only_retry_copies_again(
    fleet_config: Callable[..., Path], sample_disk: Path, cli: Cli
) -> None:
    failing = fleet_config(fail_images_in=["sub-a/eastus"])
    result, job = _run(cli, failing, sample_disk)
    assert result.exit_code == 1
    assert _states(cli, failing, job)["sub-a/eastus"] == "failed"
    assert cli(failing, "cleanup", job).exit_code == 2  # the failed target still needs its blob
    _ok(cli(failing, "cleanup", job, "--force"))
    healed = fleet_config()
    _ok(cli(healed, "retry", job, "--failed-only", "--wait"))
    _assert_completed(cli, healed, job)
    _assert_every_image_is_its_targets_own(healed, job)
    assert call(healed, leftover_blobs) == []  # and the second round cleaned up after itself


def test_enable_then_retry_after_the_job_cleaned_up_reuploads_and_completes(
    fleet_config: Callable[..., Path], sample_disk: Path, cli: Cli
) -> None:
    config = fleet_config()
    _ok(cli(config, "targets", "disable", "--name", "sub-b/eastus"))
    result, job = _run(cli, config, sample_disk)
    assert result.exit_code == 0
    assert _states(cli, config, job)["sub-b/eastus"] == "skipped"
    assert call(config, leftover_blobs) == []  # every blob of the job is gone
    _ok(cli(config, "targets", "enable", "--name", "sub-b/eastus"))
    retried = _ok(cli(config, "retry", job, "--wait"))
    assert "1 targets put back to work" in retried.stdout
    _assert_completed(cli, config, job)
    _assert_every_image_is_its_targets_own(config, job)
    logs = json.loads(_ok(cli(config, "logs", job, "--json")).stdout)
    assert any("uploading again" in line["message"] for line in logs), logs


def test_retry_phase_copy_after_an_image_failure_completes(
    fleet_config: Callable[..., Path], sample_disk: Path, cli: Cli
) -> None:
    failing = fleet_config(fail_images_in=["sub-b/eastus"])
    result, job = _run(cli, failing, sample_disk)
    assert result.exit_code == 1
    healed = fleet_config()
    _ok(cli(healed, "retry", job, "--failed-only", "--phase", "copy", "--wait"))
    _assert_completed(cli, healed, job)
    _assert_every_image_is_its_targets_own(healed, job)


def test_retry_phase_image_of_a_target_whose_blob_is_gone_copies_it_again(
    fleet_config: Callable[..., Path], sample_disk: Path, cli: Cli
) -> None:
    failing = fleet_config(fail_images_in=["sub-b/westeurope"])
    result, job = _run(cli, failing, sample_disk)
    assert result.exit_code == 1
    _ok(cli(failing, "cleanup", job, "--force"))
    healed = fleet_config()
    _ok(cli(healed, "retry", job, "--phase", "image", "--wait"))
    _assert_completed(cli, healed, job)


def test_a_gone_source_file_fails_the_waiting_targets_with_the_fix(
    fleet_config: Callable[..., Path], sample_disk: Path, cli: Cli, tmp_path: Path
) -> None:
    config = fleet_config()
    _ok(cli(config, "targets", "disable", "--name", "sub-b/eastus"))
    _, job = _run(cli, config, sample_disk)
    app_config = load_config(config)
    for leftover in app_config.work_dir().glob("*"):
        leftover.unlink()  # the converted copy, if the upload kept one
    sample_disk.unlink()  # the user's file is gone too: nothing can be uploaded again
    _ok(cli(config, "targets", "enable", "--name", "sub-b/eastus"))
    result = cli(config, "retry", job, "--wait")
    assert result.exit_code == 1, result.output
    target = next(t for t in _status(cli, config, job)["targets"] if t["target"] == "sub-b/eastus")
    assert target["state"] == "failed"
    assert "resubmit" in target["error"], target


def test_a_retry_stopped_half_way_leaves_the_job_active_for_the_worker(
    fleet_config: Callable[..., Path], sample_disk: Path, cli: Cli
) -> None:
    failing = fleet_config(fail_images_in=["sub-a/eastus", "sub-b/eastus"])
    result, job = _run(cli, failing, sample_disk)
    assert result.exit_code == 1
    healed = fleet_config()

    async def interrupted_retry(app: Imagedist) -> str:
        blobs = app.ctx.backend.blobs
        looks = 0
        real = blobs.get_properties

        async def flaky(ref: BlobRef) -> BlobProperties:
            nonlocal looks
            looks += 1
            if looks == 2:  # the second target's look at its blob: the retry stops there
                raise TransientError("503 ServerBusy (injected)")
            return await real(ref)

        blobs.get_properties = flaky  # type: ignore[method-assign]
        with pytest.raises(TransientError):
            await app.retry(job, phase=FailedPhase.IMAGE)
        return (await app.ctx.backend.state.get_job(job)).state.value

    assert call(healed, interrupted_retry) == "active"  # so a worker picks up what it put back
    _work(cli, healed, job)
    # The target the retry never reached is still failed; a second retry finishes the job.
    _ok(cli(healed, "retry", job, "--failed-only", "--wait"))
    _assert_completed(cli, healed, job)
