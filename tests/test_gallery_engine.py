"""Publishing to a Compute Gallery (issue 11), end to end on the local backend: through the CLI
and the library, a version per job replicated to every enabled region, retried region by region,
resumed after a kill without a second version, and the lifecycle commands."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result

from imagedist import Imagedist, OsType
from imagedist._backends.local.gallery import LocalGalleryService
from imagedist._config import load_config
from imagedist._domain.gallery import GalleryRef, ImageVersion, ReplicationState

from helpers import call, config_text, make_disk

Cli = Callable[..., Result]
GALLERY = GalleryRef("sub-staging", "imagedist-gallery", "golden_gallery")
DEFINITION = {"publisher": "contoso", "offer": "ubuntu", "sku": "22_04"}
RUN = ("--image-name", "gold", "--os-type", "linux", "--json")


def write(
    folder: Path,
    *,
    to: list[str] | None = None,
    share: str = "rbac",
    regions: list[str] | None = None,
    fail_regions: list[str] | None = None,
    sku: str = "22_04",
    fast: bool = True,
) -> Path:
    path = folder / "imagedist.toml"
    text = config_text(
        fleet={"subscriptions": ["sub-a", "sub-b"], "regions": regions or ["eastus", "japaneast"]},
        concurrency={"poll_interval_seconds": 0.05, "lease_seconds": 5.0}
        if fast
        else {"poll_interval_seconds": 2.0, "lease_seconds": 60.0},
        local={
            "image_create_seconds": 0.0,
            "gallery_replication_seconds": 0.2,
            "fail_gallery_regions": fail_regions or [],
        },
        publish={"to": to or ["gallery"]},
        gallery={
            "name": GALLERY.name,
            "share": share,
            "definitions": {"gold": {**DEFINITION, "sku": sku}},
        },
    )
    path.write_text(text, encoding="utf-8")
    return path


def ran(result: Result, code: int = 0) -> dict[str, Any]:
    assert result.exit_code == code, (result.output, result.exception)
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def versions(config: Path, gallery: GalleryRef = GALLERY) -> list[ImageVersion]:
    async def body(app: Imagedist) -> list[ImageVersion]:
        assert app.ctx.backend.gallery is not None
        return await app.ctx.backend.gallery.list_versions(gallery, "gold")

    return sorted(call(config, body), key=lambda v: v.name)


def creations(config: Path, name: str, gallery: GalleryRef = GALLERY) -> int:
    async def body(app: Imagedist) -> int:
        service = app.ctx.backend.gallery
        assert isinstance(service, LocalGalleryService)
        return service.creation_count(gallery, "gold", name)

    return call(config, body)


def completed_in(version: ImageVersion) -> set[str]:
    return {r.region for r in version.replication if r.state is ReplicationState.COMPLETED}


@pytest.fixture
def disk(tmp_path: Path) -> Path:
    return make_disk(tmp_path / "disk.raw")


def test_a_job_publishes_one_version_replicated_to_every_region(
    tmp_path: Path, cli: Cli, disk: Path
) -> None:
    config = write(tmp_path)
    status = ran(cli(config, "run", str(disk), *RUN))

    assert status["state"] == "completed" and status["phases"]["gallery"] == 100
    assert status["targets"] == []  # gallery only: no managed image anywhere
    [version] = versions(config)
    assert version.name == "1.0.0" and version.provisioning_state == "Succeeded"
    # The fleet's regions, and the gallery's own (where Azure replicates first).
    assert completed_in(version) == {"eastus", "japaneast", "westeurope"}
    assert version.tags["imagedist-job"] == status["job"]
    assert creations(config, "1.0.0") == 1


def test_images_and_gallery_at_once(tmp_path: Path, cli: Cli, disk: Path) -> None:
    config = write(tmp_path, to=["images", "gallery"])
    status = ran(cli(config, "run", str(disk), *RUN))

    assert status["state"] == "completed"
    assert {t["state"] for t in status["targets"]} == {"done"} and len(status["targets"]) == 4
    assert [v.name for v in versions(config)] == ["1.0.0"]


def test_each_job_takes_the_next_patch_or_the_version_given(
    tmp_path: Path, cli: Cli, disk: Path
) -> None:
    config = write(tmp_path)
    ran(cli(config, "run", str(disk), *RUN))
    ran(cli(config, "run", str(disk), *RUN))
    ran(cli(config, "run", str(disk), *RUN, "--version", "2.0.0"))
    ran(cli(config, "run", str(disk), *RUN))

    assert [v.name for v in versions(config)] == ["1.0.0", "1.0.1", "2.0.0", "2.0.1"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--version", "1.0.0"), "exists already"),
        (("--version", "1.2"), "MAJOR.MINOR.PATCH"),
        (("--version", "1.0.99999999999"), "MAJOR.MINOR.PATCH"),
        (("--image-name", "silver"), "[gallery.definitions.silver]"),
    ],
)
def test_a_bad_gallery_submission_is_refused_and_changes_nothing(
    tmp_path: Path, cli: Cli, disk: Path, args: tuple[str, ...], needle: str
) -> None:
    config = write(tmp_path)
    ran(cli(config, "run", str(disk), *RUN))  # version 1.0.0 exists
    jobs_before = ran(cli(config, "jobs", "--json"))

    base = ["--image-name", "gold", "--os-type", "linux"]
    if "--image-name" in args:
        base = ["--os-type", "linux"]
    result = cli(config, "submit", str(disk), *base, *args)

    assert result.exit_code == 2, result.output
    assert len(result.stderr.splitlines()) == 1 and needle in result.stderr, result.stderr
    assert ran(cli(config, "jobs", "--json")) == jobs_before


def test_a_definition_the_gallery_holds_otherwise_is_refused(
    tmp_path: Path, cli: Cli, disk: Path
) -> None:
    config = write(tmp_path)
    ran(cli(config, "run", str(disk), *RUN))
    config = write(tmp_path, sku="24_04")

    result = cli(config, "submit", str(disk), "--image-name", "gold", "--os-type", "linux")

    assert result.exit_code == 2
    assert "sku" in result.stderr and "cannot change" in result.stderr, result.stderr


def test_a_failed_region_is_retried_alone_without_a_new_version(
    tmp_path: Path, cli: Cli, disk: Path
) -> None:
    config = write(tmp_path, fail_regions=["japaneast"])
    status = ran(cli(config, "run", str(disk), *RUN), code=1)
    regions = status["gallery"][0]["regions"]
    assert status["state"] == "failed"
    assert regions["japaneast"]["state"] == "failed" and regions["japaneast"]["error"]
    assert regions["eastus"]["state"] == "completed"

    config = write(tmp_path)  # the region heals
    retried = ran(cli(config, "retry", status["job"], "--failed-only", "--wait", "--json"))

    assert retried["retried"] == ["gallery/central"]
    assert ran(cli(config, "status", status["job"], "--json"))["state"] == "completed"
    [version] = versions(config)
    assert completed_in(version) == {"eastus", "japaneast", "westeurope"}
    assert creations(config, "1.0.0") == 1  # replicated again, never made again


def test_a_region_added_to_the_fleet_later_is_added_to_the_version(
    tmp_path: Path, cli: Cli, disk: Path
) -> None:
    config = write(tmp_path)
    job = ran(cli(config, "run", str(disk), *RUN))["job"]
    config = write(tmp_path, regions=["eastus", "japaneast", "brazilsouth"])

    ran(cli(config, "retry", job, "--wait", "--json"))

    [version] = versions(config)
    assert completed_in(version) == {"eastus", "japaneast", "westeurope", "brazilsouth"}
    assert creations(config, "1.0.0") == 1


def test_a_disabled_target_region_is_left_out(tmp_path: Path, cli: Cli, disk: Path) -> None:
    config = write(tmp_path)
    for subscription in ("sub-a", "sub-b"):
        result = cli(config, "targets", "disable", "--name", f"{subscription}/japaneast")
        assert result.exit_code == 0, result.output
    ran(cli(config, "run", str(disk), *RUN))

    [version] = versions(config)
    assert completed_in(version) == {"eastus", "westeurope"}


def test_per_subscription_galleries_copy_the_central_version(
    tmp_path: Path, cli: Cli, disk: Path
) -> None:
    config = write(tmp_path, share="per-subscription")
    status = ran(cli(config, "run", str(disk), *RUN))

    assert status["state"] == "completed"
    assert [g["key"] for g in status["gallery"]] == ["central", "sub-a", "sub-b"]
    [central] = versions(config)
    assert completed_in(central) == {"westeurope"}
    for subscription in ("sub-a", "sub-b"):
        [local] = versions(config, GalleryRef(subscription, GALLERY.resource_group, GALLERY.name))
        assert local.source.version_id == central.id
        assert completed_in(local) == {"eastus", "japaneast", "westeurope"}


def test_a_worker_stopped_at_any_point_resumes_without_a_second_version(
    tmp_path: Path, disk: Path
) -> None:
    """Workers cancelled at any point, again and again, then one that finishes: the version is
    made once (in each gallery), and every region ends replicated."""
    config_path = write(tmp_path, share="per-subscription")
    config = load_config(config_path)

    async def submit(app: Imagedist) -> str:
        return (await app.submit(disk, "gold", OsType.LINUX)).id

    job_id = call(config_path, submit)

    async def stop_after(app: Imagedist, seconds: float) -> bool:
        try:
            await asyncio.wait_for(app.work([job_id]), seconds)
        except TimeoutError:
            return False
        return True

    async def stopped_again_and_again() -> int:
        """Workers stopped after 0.05-0.23 s, 40 times; then one left to finish the job (how
        far the stopped ones got depends on the machine's load, not what is checked)."""
        for attempt in range(40):
            async with Imagedist(config) as app:
                if await stop_after(app, 0.05 + (attempt % 7) * 0.03):
                    return attempt
        async with Imagedist(config) as app:
            await app.work([job_id])
        return 40

    assert asyncio.run(stopped_again_and_again()) > 0  # it was stopped at least once

    async def state(app: Imagedist) -> str:
        return (await app.status(job_id)).state.value

    assert call(config_path, state) == "completed"
    assert [v.name for v in versions(config_path)] == ["1.0.0"]
    assert creations(config_path, "1.0.0") == 1
    for subscription in ("sub-a", "sub-b"):
        gallery = GalleryRef(subscription, GALLERY.resource_group, GALLERY.name)
        assert creations(config_path, "1.0.0", gallery) == 1


def test_versions_list_rollback_and_retire(tmp_path: Path, cli: Cli, disk: Path) -> None:
    config = write(tmp_path)
    for _ in range(3):
        ran(cli(config, "run", str(disk), *RUN))

    listed = json.loads(cli(config, "versions", "list", "gold", "--json").stdout)
    assert [v["version"] for v in listed] == ["1.0.2", "1.0.1", "1.0.0"]

    rolled = json.loads(cli(config, "versions", "rollback", "gold", "--json").stdout)
    assert rolled == {"excluded": "1.0.2", "latest": "1.0.1"}

    retired = json.loads(cli(config, "versions", "retire", "gold", "--keep", "1", "--json").stdout)
    # 1.0.2 is kept; 1.0.1, the only version left in "latest", is spared; 1.0.0 retires.
    assert retired["kept"] == ["1.0.2"] and retired["retired"] == ["1.0.0"]
    assert "latest" in retired["spared"]["1.0.1"]
    by_name = {v.name: v for v in versions(config)}
    assert by_name["1.0.0"].exclude_from_latest and by_name["1.0.0"].end_of_life
    assert not by_name["1.0.1"].exclude_from_latest


def test_rollback_needs_a_previous_version(tmp_path: Path, cli: Cli, disk: Path) -> None:
    config = write(tmp_path)
    ran(cli(config, "run", str(disk), *RUN))
    result = cli(config, "versions", "rollback", "gold")
    assert result.exit_code == 2 and "previous" in result.stderr, result.output


def write_full(folder: Path, *, share: str = "direct", sku: str = "22_04") -> Path:
    """A config whose definition is stated in full (OS type and generation): setup makes it."""
    path = folder / "imagedist.toml"
    definition = {**DEFINITION, "sku": sku, "os_type": "linux", "hyper_v_generation": "V1"}
    text = config_text(
        fleet={"subscriptions": ["sub-a", "sub-b"], "regions": ["eastus"]},
        publish={"to": ["gallery"]},
        gallery={
            "name": GALLERY.name,
            "share": share,
            "tenants": ["72f988bf-86f1-41af-91ab-2d7cd011db47"],
            "definitions": {"gold": definition},
        },
    )
    path.write_text(text, encoding="utf-8")
    return path


def test_setup_makes_the_gallery_its_definitions_and_sharing_then_check_passes(
    tmp_path: Path, cli: Cli
) -> None:
    config = write_full(tmp_path)
    planned = ran(cli(config, "setup", "--dry-run", "--json"))["changes"]
    gallery_changes = {(c["action"], c["kind"], c["name"]) for c in planned}
    assert {
        ("create", "gallery", GALLERY.name),
        ("create", "image definition", "gold"),
        ("share", "gallery", GALLERY.name),
    } <= gallery_changes

    assert cli(config, "setup").exit_code == 0
    assert cli(config, "check").exit_code == 0, cli(config, "check").output
    again = ran(cli(config, "setup", "--dry-run", "--json"))["changes"]
    assert again == []  # idempotent

    async def sharing(app: Imagedist) -> tuple[set[str], str]:
        assert app.ctx.backend.gallery is not None
        shared = await app.ctx.backend.gallery.get_sharing(GALLERY)
        definition = await app.ctx.backend.gallery.get_definition(GALLERY, "gold")
        return {*shared.subscriptions, *shared.tenants}, definition.sku

    shared, sku = call(config, sharing)
    assert shared == {"sub-a", "sub-b", "72f988bf-86f1-41af-91ab-2d7cd011db47"} and sku == "22_04"


def test_check_reports_a_definition_azure_cannot_change(tmp_path: Path, cli: Cli) -> None:
    assert cli(write_full(tmp_path), "setup").exit_code == 0
    result = cli(write_full(tmp_path, sku="24_04"), "check")

    assert result.exit_code == 1
    [line] = [line for line in result.output.splitlines() if "definition gold" in line]
    assert "sku: 24_04 != 22_04" in line and "cannot change" in line


def test_setup_makes_a_gallery_in_each_subscription_per_subscription(
    tmp_path: Path, cli: Cli
) -> None:
    config = write_full(tmp_path, share="per-subscription")
    planned = ran(cli(config, "setup", "--dry-run", "--json"))["changes"]
    galleries = {c["subscription"] for c in planned if c["kind"] == "gallery"}
    assert galleries == {"sub-staging", "sub-a", "sub-b"}
    assert not any(c["action"] == "share" for c in planned)


def test_plan_prices_gallery_mode_beside_managed_images(tmp_path: Path, cli: Cli) -> None:
    """The same fleet planned both ways: the gallery's replication time and egress (each
    region but the gallery's own receives the disk once) next to the broadcast fan-out's."""
    # The default poll and lease (a plan follows hours of virtual replication: seconds of CPU).
    config = write(tmp_path, to=["images", "gallery"], regions=["eastus", "japaneast"], fast=False)
    args = ("plan", "--disk-size", "8GiB", "--occupied", "4GiB", "--json")

    both = ran(cli(config, *args))
    gallery = ran(cli(config, *args, "--target", "gallery"))
    images = ran(cli(config, *args, "--target", "images"))

    assert both["publish"] == ["images", "gallery"] and gallery["publish"] == ["gallery"]
    assert gallery["gallery_seconds"] > gallery["phases"]["upload"]
    assert images["gallery_seconds"] is None
    occupied_gb = 4 * 1024**3 / 1e9
    # eastus and japaneast get the version from westeurope (the staging region): $0.02/GB.
    assert gallery["gallery_cross_region_gb"] == pytest.approx(2 * occupied_gb)
    assert gallery["gallery_egress_cost"] == pytest.approx(2 * occupied_gb * 0.02)
    assert gallery["outcome"] == "completed" and images["outcome"] == "completed"
