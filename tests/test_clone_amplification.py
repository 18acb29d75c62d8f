"""Clone amplification (issue 13): each region's seed is cloned in its own account, so every
other target of the region copies in the next round; the copy tree is two rounds deep whatever
the region's size, and each region still gets exactly one cross-region copy."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imagedist import Imagedist, JobStatus, OsType
from imagedist._backends.sim import SimModel, open_sim_backend, preload_tier0, run_virtual
from imagedist._backends.sim.scenario import _sparse_fixed_vhd, scenario_config
from imagedist._config import Config
from imagedist._domain import JobState, SourceKind, SourceRow, TargetRow, TargetState
from imagedist._domain.events import LogLevel
from imagedist._engine import EngineContext, Worker, submit_job

from helpers import call, make_disk, write_config

GIB = 1024**3
RATE = 20e6  # a fixed copy rate, so rounds are whole copy times


def _config(subscriptions: int, regions: int, max_reads: int, clones: int | str) -> Config:
    config = scenario_config(
        subscriptions,
        regions,
        tier1_copies="auto",  # type: ignore[arg-type]
        max_reads_per_source=max_reads,
        copies=100_000,  # no cap of the worker's: the rounds are the fan-out's alone
        images=100_000,
        copy_method="async",  # Copy Blob at the fixed RATE: rounds of whole copy times
    )
    fanout = config.fanout.model_copy(update={"region_clones": clones})
    return config.model_copy(update={"fanout": fanout})


def _distribute(config: Config) -> tuple[JobState, list[SourceRow], list[TargetRow]]:
    async def drive(folder: Path) -> tuple[JobState, list[SourceRow], list[TargetRow]]:
        model = SimModel(copy_rate_min=RATE, copy_rate_max=RATE)
        backend = open_sim_backend(config, model=model, seed=1)
        ctx = EngineContext(backend, config, worker_id="w-1")
        disk = _sparse_fixed_vhd(folder / "golden.vhd", 2 * GIB)
        job = await submit_job(ctx, disk, "golden", OsType.LINUX, "test")
        await preload_tier0(backend, job, GIB)
        await Worker(ctx, [job.id]).run()
        state = backend.state
        ended = await state.get_job(job.id)
        return ended.state, await state.list_sources(job.id), await state.list_targets(job.id)

    with tempfile.TemporaryDirectory() as folder:
        return run_virtual(drive(Path(folder)))


def _rounds(sources: list[SourceRow], targets: list[TargetRow]) -> dict[str, int]:
    """Each target's depth in the copy tree, in cross-account copies (clones cost no round)."""
    parent = {s.source_id: s.parent_id or "" for s in sources if s.kind is not SourceKind.TIER0}
    by_name = {t.target: t for t in targets}

    def depth(source: str) -> int:
        if source.startswith("target:"):
            return 1 + depth(by_name[source.removeprefix("target:")].source_id or "")
        return depth(parent[source]) if parent.get(source) else 0

    return {t.target: 1 + depth(t.source_id or "") for t in targets}


def _region_of(source: str, sources: list[SourceRow], targets: list[TargetRow]) -> str:
    regions = {f"target:{t.target}": t.region for t in targets}
    by_account = {t.blob.account: t.region for t in targets}
    for row in sources:
        if row.source_id == source and row.kind is SourceKind.CLONE:
            return by_account[row.blob.account]
    return regions.get(source, targets[0].region if source else "")


@settings(max_examples=25)
@given(
    subscriptions=st.integers(2, 12),
    regions=st.integers(1, 5),
    max_reads=st.integers(1, 4),
)
def test_every_region_fills_in_the_round_after_its_seed(
    subscriptions: int, regions: int, max_reads: int
) -> None:
    state, sources, targets = _distribute(_config(subscriptions, regions, max_reads, "auto"))
    assert state is JobState.COMPLETED
    assert all(t.state is TargetState.DONE for t in targets)
    assert max(_rounds(sources, targets).values()) <= 2
    # One cross-region copy per region but the staging one (whose region is the first).
    staging = sorted({t.region for t in targets})[0]
    crossing = [t for t in targets if _region_of(t.source_id or "", sources, targets) != t.region]
    assert len(crossing) == regions - 1
    assert staging not in {t.region for t in crossing}
    # Every clone lives in the account of a target of its region, and is gone at the end.
    clones = [s for s in sources if s.kind is SourceKind.CLONE]
    accounts = {t.blob.account for t in targets}
    assert all(s.blob.account in accounts and s.deleted for s in clones)


def test_without_clones_a_large_region_needs_more_rounds() -> None:
    # The same fleet with clones off: the tree deepens (so the test above can fail).
    state, sources, targets = _distribute(_config(12, 2, 2, 0))
    assert state is JobState.COMPLETED
    assert max(_rounds(sources, targets).values()) > 2
    assert not [s for s in sources if s.kind is SourceKind.CLONE]


def _local_config(folder: Path, **fanout: Any) -> Path:
    path = write_config(folder)
    text = path.read_text().replace(
        "[fanout]\n", "[fanout]\n" + "".join(f"{k} = {v}\n" for k, v in fanout.items())
    )
    text = text.replace("tier1_copies = 2\n", "", 1) if "tier1_copies" in fanout else text
    text = (
        text.replace("max_reads_per_source = 3\n", "", 1)
        if "max_reads_per_source" in fanout
        else text
    )
    path.write_text(text)
    return path


def _run(path: Path, disk: Path, image: str, disabled: list[str]) -> JobStatus:
    async def body(app: Imagedist) -> JobStatus:
        if disabled:
            await app.set_enabled(False, names=disabled)
        job = await app.submit(disk, image, OsType.LINUX)
        await app.upload(job.id)
        await app.work([job.id])
        errors = [r.message for r in await app.logs(job.id) if r.level == LogLevel.ERROR]
        assert not errors  # no source failed on the way, not even one the job could spare
        return await app.status(job.id)

    return call(path, body)


def test_a_region_whose_designated_seed_is_disabled_is_still_seeded(tmp_path: Path) -> None:
    # The clones wait for the designated target's copy (the first by name in its region);
    # with that target disabled the region is seeded by another, and no clone is waited for.
    path = _local_config(tmp_path, region_clones=2, max_reads_per_source=1)
    status = _run(path, make_disk(tmp_path / "d.vhd"), "golden", ["sub-a/eastus"])
    assert status.state is JobState.COMPLETED, [t.error for t in status.targets]
    skipped = {t.target for t in status.targets if t.state is TargetState.SKIPPED}
    assert skipped == {"sub-a/eastus"}
    assert all(t.state is TargetState.DONE for t in status.targets if t.target not in skipped)


@pytest.mark.parametrize("image_name", ["tier1-001", "clone-eastus-001"])
def test_an_image_named_like_an_intermediate_source_is_distributed(
    tmp_path: Path, image_name: str
) -> None:
    # The upload is named after the image; a tier-1 copy or clone of the same name would be
    # the upload itself (a copy onto its own source).
    path = _local_config(tmp_path, region_clones=2)
    status = _run(path, make_disk(tmp_path / "d.vhd"), image_name, [])
    assert status.state is JobState.COMPLETED, [t.error for t in status.targets]
    assert all(t.state is TargetState.DONE for t in status.targets)
