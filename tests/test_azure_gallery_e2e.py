"""Publishing to a Compute Gallery end to end on the Azure backend (issue 11): the real SDKs
against Azurite and the ARM test server's gallery model, through the CLI in subprocesses."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from armserver.gallery import configure, creations, read_blobs_with
from armserver.process import ArmServerProcess
from azure_env import STAGING, AzureSetup, azure_world, make_setup  # noqa: F401
from azurite import AzuriteServer

from helpers import make_disk

READER = "11111111-2222-4333-8444-555555555555"
GALLERY = "golden_gallery"
GALLERY_GROUP = "imagedist-gallery"
VERSION_ID = (
    f"/subscriptions/sub-staging/resourceGroups/{GALLERY_GROUP}/providers/Microsoft.Compute"
    f"/galleries/{GALLERY}/images/gold/versions/1.0.0"
)


def _gallery_setup(tmp_path: Path, world: AzuriteServer, arm: ArmServerProcess) -> AzureSetup:
    """Three regions of one subscription; the gallery in the staging subscription and region."""
    setup = make_setup(tmp_path, world, arm, 3, subscriptions=1)
    with setup.config.open("a", encoding="utf-8") as config:
        config.write(
            f"""
[gallery]
name = "{GALLERY}"
readers = {{ "sub-0" = "{READER}" }}

[gallery.definitions.gold]
publisher = "contoso"
offer = "golden"
sku = "linux-22"
os_type = "linux"
hyper_v_generation = "V1"
"""
        )
    # The gallery reads the uploaded VHD from the staging account, as Azure's creation would.
    read_blobs_with(arm, STAGING, world.connection_string(STAGING))
    return setup


def _json(result: Any, code: int = 0) -> dict[str, Any]:
    assert result.returncode == code, result.stdout + result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def _replication(arm: ArmServerProcess) -> dict[str, str]:
    [version] = arm._control("GET", "gallery")["versions"]
    summary = version["properties"]["replicationStatus"]["summary"]
    return {s["region"].lower(): s["state"] for s in summary}


def test_a_job_publishes_a_version_and_a_failed_region_is_retried_alone(
    tmp_path: Path,
    azure_world: AzuriteServer,  # noqa: F811 (a fixture)
    arm: ArmServerProcess,
) -> None:
    configure(arm, replication_seconds=0.3, fail_regions=["japaneast"])
    setup = _gallery_setup(tmp_path, azure_world, arm)
    planned = _json(setup.imagedist("setup", "--dry-run", "--json"))["changes"]
    assert {"principal": READER, "action": "grant", "kind": "gallery"}.items() <= next(
        c for c in planned if c["action"] == "grant" and c["kind"] == "gallery"
    ).items()
    assert setup.imagedist("setup").returncode == 0
    check = setup.imagedist("check")
    assert check.returncode == 0, check.stdout + check.stderr
    disk = make_disk(tmp_path / "golden.vhd")

    run = _json(
        setup.imagedist(
            "run",
            str(disk),
            "--image-name",
            "gold",
            "--os-type",
            "linux",
            "--target",
            "gallery",
            "--json",
        ),
        code=1,
    )

    regions = run["gallery"][0]["regions"]
    assert regions["japaneast"]["state"] == "failed" and regions["japaneast"]["error"]
    assert {regions[r]["state"] for r in ("westeurope", "eastus")} == {"completed"}
    assert _replication(arm) == {
        "westeurope": "Completed",
        "eastus": "Completed",
        "japaneast": "Failed",
    }

    configure(arm, fail_regions=[])  # the region heals
    retried = _json(setup.imagedist("retry", run["job"], "--failed-only", "--wait", "--json"))

    assert retried["retried"] == ["gallery/central"]
    assert _json(setup.imagedist("status", run["job"], "--json"))["state"] == "completed"
    assert set(_replication(arm).values()) == {"Completed"}
    assert creations(arm, VERSION_ID) == 1  # replicated again, never made again
    logs = setup.imagedist("logs", run["job"], "--json").stdout
    for secret in setup.secrets:  # no account key or token in what the job shows
        assert secret not in logs + json.dumps(run) + json.dumps(retried)


def _gallery_of(arm: ArmServerProcess, subscription: str) -> list[dict[str, Any]]:
    """The versions the ARM test server holds in a subscription's gallery."""
    return [
        v
        for v in arm._control("GET", "gallery")["versions"]
        if f"/subscriptions/{subscription}/".lower() in v["id"].lower()
    ]


def test_direct_and_per_subscription_sharing_reach_every_subscription(
    tmp_path: Path,
    azure_world: AzuriteServer,  # noqa: F811 (a fixture)
    arm: ArmServerProcess,
) -> None:
    """Two subscriptions, two regions each: in ``direct`` mode setup shares the central gallery
    with both; in ``per-subscription`` mode each gets a gallery of its own whose version is a
    copy of the central one, replicated to its regions."""
    configure(arm, replication_seconds=0.2, fail_regions=[])
    for share in ("direct", "per-subscription"):
        folder = tmp_path / share
        folder.mkdir()
        setup = make_setup(folder, azure_world, arm, 4, subscriptions=2)
        with setup.config.open("a", encoding="utf-8") as config:
            config.write(
                f'\n[gallery]\nname = "{GALLERY}"\nshare = "{share}"\n'
                "[gallery.definitions.gold]\n"
                'publisher = "contoso"\noffer = "golden"\nsku = "linux-22"\n'
            )
        read_blobs_with(arm, STAGING, azure_world.connection_string(STAGING))
        assert setup.imagedist("setup").returncode == 0
        assert setup.imagedist("check").returncode == 0
        disk = make_disk(folder / "golden.vhd")
        args = ("--image-name", "gold", "--os-type", "linux", "--target", "gallery", "--json")
        run = _json(setup.imagedist("run", str(disk), *args))
        assert run["state"] == "completed", run
        if share == "direct":
            [gallery] = [
                g
                for g in arm._control("GET", "gallery")["galleries"]
                if g["name"].lower() == GALLERY
            ]
            groups = gallery["properties"]["sharingProfile"]["groups"]
            shared = {i.lower() for grp in groups for i in grp["ids"]}
            assert {"sub-0", "sub-1"} <= shared
        else:
            assert [g["key"] for g in run["gallery"]] == ["central", "sub-0", "sub-1"]
            for subscription in ("sub-0", "sub-1"):
                [version] = _gallery_of(arm, subscription)
                source = version["properties"]["storageProfile"]["source"]["id"]
                assert source.lower().startswith("/subscriptions/sub-staging/")
        arm.reset()
