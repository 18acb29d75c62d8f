"""The dashboard on the Azure backend (issue 12): the same pages and API over a job that ran
against Azurite and the ARM test server, its state in Azure Tables."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from armserver.process import ArmServerProcess
from azure_env import azure_world, make_setup  # noqa: F401
from azurite import AzuriteServer
from imagedist import Imagedist, load_config
from imagedist._web import create_app

from helpers import make_disk
from web_helpers import client, csrf_headers


def test_the_dashboard_shows_and_retries_an_azure_job(
    tmp_path: Path,
    azure_world: AzuriteServer,  # noqa: F811 (a fixture)
    arm: ArmServerProcess,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    setup = make_setup(tmp_path, azure_world, arm, 3, subscriptions=1)
    assert setup.imagedist("setup").returncode == 0
    arm.fail_image_creation("sub-0", "westeurope", code="InvalidParameter")
    disk = make_disk(tmp_path / "golden.vhd")
    run = setup.imagedist(
        "run", str(disk), "--image-name", "golden", "--os-type", "linux", "--json"
    )
    assert run.returncode == 1, run.stderr
    job = json.loads(run.stdout)["job"]
    arm.clear_faults()
    for name, value in setup.env.items():  # the connection strings and the ARM token
        monkeypatch.setenv(name, value)
    config = load_config(setup.config)

    with client(create_app(lambda: Imagedist(config))) as web:
        listed = web.get("/api/jobs").json()
        assert [j["job"] for j in listed] == [job]
        status = web.get(f"/api/jobs/{job}").json()
        targets = [t for group in status["subscriptions"] for t in group["targets"]]
        states = {t["target"].split("/")[1]: t["state"] for t in targets}
        assert states["westeurope"] == "failed" and set(states.values()) == {"done", "failed"}
        page = web.get(f"/jobs/{job}").text
        assert "westeurope" in page and "failed" in page
        retried = web.post(
            f"/api/jobs/{job}/retry", json={"failed_only": True}, headers=csrf_headers(web)
        )
        assert retried.status_code == 200, retried.text
        body = json.dumps(listed) + json.dumps(status) + page + retried.text
        for secret in setup.secrets:  # no account key or token reaches a page or the API
            assert secret not in body

    worker = setup.imagedist("worker", "--job", job)
    assert worker.returncode == 0, worker.stderr
    final = json.loads(setup.imagedist("status", job, "--json").stdout)
    assert final["state"] == "completed"
