"""Nothing is reported done that isn't (issue 8, part 2): image names that collide, staging
names that collide, adoption of an image that is not the target's own, and copies that have the
right size but not the disk."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result
from hypothesis import given
from hypothesis import strategies as st

from imagedist import Imagedist, TargetState
from imagedist._backends.sim import (
    open_sim_backend,
    preload_tier0,
    run_virtual,
    scenario_config,
    sim_world,
)
from imagedist._backends.sim.scenario import _sparse_fixed_vhd
from imagedist._config import Config
from imagedist._domain import BlobRef, OsType, SourceKind, TargetRow
from imagedist._domain.names import IMAGE_NAME
from imagedist._engine import EngineContext, Worker, submit_job
from imagedist._engine._targets import JOB_TAG, staging_name
from imagedist.abc import ImageSpec

from helpers import call

Cli = Callable[..., Result]
MIB = 1024 * 1024
LONG_NAME = "g" * 70  # "<70>.eastus" and "<70>.eastus2" share their first 75 characters

image_names = st.from_regex(IMAGE_NAME.pattern, fullmatch=True)
target_names = st.from_regex(r"[a-z0-9-]{1,20}/[a-z0-9]{1,20}", fullmatch=True)


# staging names


@given(image_names, image_names, target_names, target_names)
def test_staging_names_are_valid_and_unique_per_target(
    first: str, second: str, target_a: str, target_b: str
) -> None:
    name_a, name_b = staging_name(first, target_a), staging_name(second, target_b)
    assert IMAGE_NAME.matches(name_a) and len(name_a) <= 80
    if target_a != target_b:
        assert name_a != name_b
    if first.lower() != second.lower() and len(first) + 15 <= 80 >= len(second) + 15:
        assert name_a.lower() != name_b.lower()  # short names keep all of the name


def test_replacing_long_names_in_two_regions_never_leaves_a_region_without_an_image(
    write_config: Callable[..., Path], sample_disk: Path, cli: Cli
) -> None:
    fleet = {"subscriptions": ["sub-a"], "regions": ["eastus", "eastus2"]}
    config = write_config(fleet=fleet)
    first = cli(config, "run", str(sample_disk), "--image-name", LONG_NAME, "--os-type", "linux")
    assert first.exit_code == 0, first.output
    # The second job's image fails in eastus; eastus2's replacement succeeds. Had both staged
    # under one name, eastus would take eastus2's replacement for its own and delete its image.
    failing = write_config(fleet=fleet, local={"fail_images_in": ["sub-a/eastus"]})
    second = cli(failing, "run", str(sample_disk), "--image-name", LONG_NAME, "--os-type", "linux")
    assert second.exit_code == 1, second.output

    async def images(app: Imagedist) -> dict[str, list[tuple[str, str]]]:
        found = await app.ctx.backend.images.list_images("sub-a", "imagedist-images")
        return {
            region: [(i.name, i.tags[JOB_TAG]) for i in found if i.region == region]
            for region in ("eastus", "eastus2")
        }

    held = call(config, images)
    jobs = json.loads(cli(config, "jobs", "--json").stdout)
    first_id, second_id = jobs[1]["job"], jobs[0]["job"]
    assert held["eastus"] == [(f"{LONG_NAME}.eastus", first_id)]  # the old one, untouched
    assert held["eastus2"] == [(f"{LONG_NAME}.eastus2", second_id)]


# image names that collide


def test_submit_refuses_a_template_that_gives_two_targets_one_image(
    write_config: Callable[..., Path], sample_disk: Path, cli: Cli, tmp_path: Path
) -> None:
    config = write_config(
        fleet={"subscriptions": ["sub-a"], "regions": ["eastus", "westeurope"]},
        naming={"image_template": "{image}"},
    )
    result = cli(config, "submit", str(sample_disk), "--image-name", "gold", "--os-type", "linux")
    assert result.exit_code == 2, result.output
    assert re.search(r"image_template.*the same image in resource group", result.stderr)
    assert not (tmp_path / "state").exists()  # nothing registered, nothing uploaded


def test_config_check_refuses_a_template_that_gives_two_targets_one_image(
    write_config: Callable[..., Path], cli: Cli
) -> None:
    config = write_config(
        fleet={"subscriptions": ["sub-a", "sub-b"], "regions": ["eastus", "westeurope"]},
        naming={"image_template": "{image}.{subscription}"},
    )
    result = cli(config, "config", "check")
    assert result.exit_code == 2, result.output
    assert re.search(r"'sub-a/eastus' and 'sub-a/westeurope' the same image", result.stderr)


# the simulator: adoption and copy verification


def _sim_config() -> Config:
    return scenario_config(1, 2, tier1_copies=0, poll_interval_seconds=5.0, lease_seconds=60.0)


async def _job_on_sim(config: Config, folder: Path) -> tuple[EngineContext, str]:
    backend = open_sim_backend(config, seed=1)
    ctx = EngineContext(backend, config, worker_id="w-1")
    disk = _sparse_fixed_vhd(folder / "golden.vhd", 64 * MIB)
    job = await submit_job(ctx, disk, "golden", OsType.LINUX)
    await preload_tier0(backend, job, 8 * MIB)
    return ctx, job.id


async def _rows(ctx: EngineContext, job_id: str) -> list[TargetRow]:
    return await ctx.backend.state.list_targets(job_id)


def test_an_image_of_this_job_from_another_blob_is_never_adopted(tmp_path: Path) -> None:
    async def scenario() -> list[TargetRow]:
        ctx, job_id = await _job_on_sim(_sim_config(), tmp_path)
        victim = (await _rows(ctx, job_id))[0]
        images = ctx.backend.images
        await images.ensure_resource_group(
            victim.subscription, victim.resource_group, victim.region
        )
        # A blob of the right place but not this target's own, under this target's image name
        # with this job's tag: what a name collision (or a bug) would leave behind.
        stray = BlobRef(victim.blob.account, victim.blob.container, "stray.vhd")
        storage = sim_world(ctx.backend).storage
        storage.ensure_container(stray.account, stray.container)
        storage.create(stray, 1024 * 1024, overwrite=True)
        await images.begin_create_image(
            ImageSpec(
                victim.subscription,
                victim.resource_group,
                victim.image_name,
                victim.region,
                stray,
                OsType.LINUX,
                tags={JOB_TAG: job_id},
            )
        )
        await ctx.backend.clock.sleep(3600)
        await Worker(ctx, [job_id]).run()
        return await _rows(ctx, job_id)

    rows = run_virtual(scenario())
    victim = rows[0]
    assert victim.state is TargetState.FAILED, victim
    assert "same image name" in victim.error
    assert all(r.state is TargetState.DONE for r in rows[1:])


@pytest.mark.parametrize("verify_by", ["content-md5", "footer"])
def test_a_copy_of_the_right_size_that_is_not_the_disk_is_never_done(
    tmp_path: Path, verify_by: str
) -> None:
    async def scenario() -> list[TargetRow]:
        ctx, job_id = await _job_on_sim(_sim_config(), tmp_path)
        state = ctx.backend.state
        tier0 = next(s for s in await state.list_sources(job_id) if s.kind is SourceKind.TIER0)
        blob = sim_world(ctx.backend).storage.blob(tier0.blob)
        if verify_by == "content-md5":
            await state.put_source(
                dataclasses.replace(tier0, content_md5="ab" * 16)
            )  # what was uploaded
            blob.content_md5 = bytes(16)  # and what the blob copies carry: something else
        else:
            await state.put_source(
                dataclasses.replace(tier0, content_md5="")
            )  # no MD5: the footer decides
            blob.tail = bytes(512)  # a footer zeroed while it was uploaded
        await Worker(ctx, [job_id]).run()
        return await _rows(ctx, job_id)

    rows = run_virtual(scenario())
    assert {r.state for r in rows} == {TargetState.FAILED}
    assert all("is not the disk" in r.error for r in rows), [r.error for r in rows]


def test_an_older_job_never_replaces_a_newer_jobs_image(
    write_config: Callable[..., Path], sample_disk: Path, cli: Cli
) -> None:
    config = write_config(fleet={"subscriptions": ["sub-a"], "regions": ["eastus"]})
    submit = ("submit", str(sample_disk), "--image-name", "gold", "--os-type", "linux")
    older = cli(config, *submit).stdout.strip().splitlines()[-1]
    newer = cli(config, *submit).stdout.strip().splitlines()[-1]
    assert cli(config, "worker", "--job", newer).exit_code == 0
    assert cli(config, "worker", "--job", older).exit_code == 0

    async def held(app: Imagedist) -> list[tuple[str, str]]:
        images = await app.ctx.backend.images.list_images("sub-a", "imagedist-images")
        return [(i.name, i.tags[JOB_TAG]) for i in images]

    assert call(config, held) == [("gold.eastus", newer)]  # no staging image left behind
    status = json.loads(cli(config, "status", older, "--json").stdout)
    (target,) = status["targets"]
    assert target["state"] == "failed" and "submitted after this one" in target["error"]
