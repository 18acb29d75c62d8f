"""End to end on the Azure backend: the real SDKs against Azurite and the ARM test server."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from armserver.process import ArmServerProcess
from azure_env import AzureSetup, azure_world, make_setup, three_workers_one_killed  # noqa: F401
from azurite import AzuriteServer

from helpers import make_disk

SAS_SIGNATURE = re.compile(r"sig=[A-Za-z0-9%/+=]{10,}")


def _arm_images(setup: AzureSetup) -> dict[str, dict[str, Any]]:
    images = {}
    for image in setup.arm.snapshot()["images"]:
        parts = image["id"].split("/")  # /subscriptions/<sub>/resourceGroups/<rg>/providers/...
        os_disk = image["properties"]["storageProfile"]["osDisk"]
        images[f"{parts[2]}/{image['name']}"] = {
            "subscription": parts[2],
            "resource_group": parts[4],
            "name": image["name"],
            "location": image["location"],
            "os_disk": os_disk,
            "state": image["properties"]["provisioningState"],
        }
    return images


def _check_no_secret(setup: AzureSetup, *texts: str) -> None:
    for text in texts:
        for key in setup.secrets:
            assert key not in text, "an account key leaked"
        assert not SAS_SIGNATURE.search(text), "a SAS signature leaked"


def _state_dump(setup: AzureSetup, job_id: str) -> str:
    logs = setup.imagedist("logs", job_id, "--json")
    status = setup.imagedist("status", job_id, "--json")
    return logs.stdout + status.stdout


def test_run_distributes_to_three_subscriptions_by_three_regions(
    tmp_path: Path,
    azure_world: AzuriteServer,  # noqa: F811 (a fixture)
    arm: ArmServerProcess,
) -> None:
    setup = make_setup(tmp_path, azure_world, arm, 9)
    check = setup.imagedist("check")
    assert check.returncode == 1 and "run `imagedist setup`" in check.stdout
    done = setup.imagedist("setup")
    assert done.returncode == 0, done.stderr
    again = setup.imagedist("setup")
    assert "nothing to change" in again.stdout
    check = setup.imagedist("check")
    assert check.returncode == 0, check.stdout + check.stderr
    disk = make_disk(tmp_path / "golden.vhd")
    run = setup.imagedist(
        "run", str(disk), "--image-name", "golden", "--os-type", "windows", "--json"
    )
    assert run.returncode == 0, run.stderr
    status = json.loads(run.stdout)
    assert status["phases"] == {"upload": 100, "tier1": 100, "copies": 100, "images": 100}
    assert status["completed"] and status["error_count"] == 0

    images = _arm_images(setup)
    assert len(images) == 9
    accounts = {account: (sub, region) for sub, region, account in setup.targets}
    for image in images.values():
        blob_uri = image["os_disk"]["blobUri"]
        account = blob_uri.split("/")[3]  # http://127.0.0.1:port/<account>/...
        assert accounts[account] == (image["subscription"], image["location"])
        assert image["name"] == f"golden.{image['location']}"
        assert image["os_disk"]["osType"] == "Windows"
        assert image["state"] == "Succeeded"
        assert (
            arm.image_creations(image["subscription"], image["resource_group"], image["name"]) == 1
        )
    assert {t["state"] for t in status["targets"]} == {"done"}  # verified Succeeded by the engine
    _check_no_secret(setup, run.stdout, run.stderr, _state_dump(setup, status["job"]))


# Three worker processes, Azurite and the ARM server share two cores: under load the run has taken
# most of the suite's 120 s, so it gets its own timeout, and polls less and copies a smaller disk
# to leave the CPU to the work (issue 9).
@pytest.mark.timeout(300)
def test_three_workers_share_thirty_targets_and_survive_a_kill(
    tmp_path: Path,
    azure_world: AzuriteServer,  # noqa: F811 (a fixture)
    arm: ArmServerProcess,
) -> None:
    arm.configure(image_delay=1.0)
    setup = make_setup(tmp_path, azure_world, arm, 30, poll_seconds=0.25)
    assert setup.imagedist("setup").returncode == 0
    job_id, logs = three_workers_one_killed(setup, tmp_path, strike_after=5, patience=120)
    status = json.loads(setup.imagedist("status", job_id, "--json").stdout)
    assert status["completed"], status["counts"]
    counts = arm.counters()["image_creations"]
    assert len(counts) == 30 and {entry["count"] for entry in counts} == {1}
    _check_no_secret(setup, *(log.read_text() for log in logs), _state_dump(setup, job_id))
