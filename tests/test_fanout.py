"""Fan-out strategies: the region-seeded broadcast tree and the original's chain + round-robin."""

from __future__ import annotations

from pathlib import Path

import pytest

from imagedist import Imagedist, JobStatus, OsType, TargetState
from imagedist._domain import BlobRef, SourceKind, SourceRow, SourceState, TargetRow
from imagedist._engine._sources import BroadcastFanout, OriginalFanout

from helpers import call, make_disk, write_config


def _source(source_id: str, state: SourceState = SourceState.READY) -> SourceRow:
    kind = SourceKind.TIER0 if source_id == "tier0" else SourceKind.TIER1
    return SourceRow("j", source_id, kind, BlobRef("staging", "c", source_id), state=state)


def _target(
    name: str, region: str, state: TargetState = TargetState.PENDING, source: str | None = None
) -> TargetRow:
    return TargetRow(
        "j",
        name,
        "sub",
        region,
        BlobRef(name.replace("/", ""), "c", "d.vhd"),
        "rg",
        "img",
        state=state,
        source_id=source,
    )


def test_broadcast_seeds_each_region_once_then_waits_for_the_seed() -> None:
    targets = [_target(f"t{i}/east", "east") for i in range(3)]
    fanout = BroadcastFanout(
        [_source("tier0"), _source("tier1-001")], targets, staging_region="west", max_reads=4
    )
    chosen = [fanout.target_source(t) for t in targets]
    assert [c.source_id if c else None for c in chosen] == ["tier0", None, None]


def test_broadcast_copies_within_a_seeded_region_from_its_finished_copies() -> None:
    targets = [
        _target("seed/east", "east", TargetState.DONE, "tier0"),
        _target("a/east", "east"),
        _target("b/east", "east"),
        _target("c/north", "north"),
    ]
    fanout = BroadcastFanout([_source("tier0")], targets, staging_region="west", max_reads=1)
    assert fanout.target_source(targets[1]).source_id == "target:seed/east"  # type: ignore[union-attr]
    assert fanout.target_source(targets[2]) is None  # the seed serves one copy at a time here
    assert fanout.target_source(targets[3]).source_id == "tier0"  # type: ignore[union-attr]


def test_broadcast_never_exceeds_the_reads_per_source() -> None:
    targets = [_target(f"t{i}/west", "west") for i in range(10)]
    fanout = BroadcastFanout(
        [_source("tier0"), _source("tier1-001")], targets, staging_region="west", max_reads=3
    )
    chosen = [fanout.target_source(t) for t in targets]
    assert sum(c is not None for c in chosen) == 6


def test_original_chains_tier1_then_waits_for_all_of_them() -> None:
    sources = [
        _source("tier0"),
        *(_source(f"tier1-{i:03d}", SourceState.PENDING) for i in range(1, 13)),
    ]
    sources[1] = _source("tier1-001")  # ready
    fanout = OriginalFanout(
        sources, [_target("a/x", "x")], job_id="j", staging_region="w", max_reads=4
    )
    assert fanout.tier1_parent(sources[2]).source_id == "tier1-001"  # type: ignore[union-attr]
    assert fanout.tier1_parent(sources[3]) is None  # tier1-002 is not ready yet
    assert fanout.target_source(_target("a/x", "x")) is None  # the barrier
    ready = [_source(s.source_id) for s in sources]
    fanout = OriginalFanout(
        ready, [_target("a/x", "x")], job_id="j", staging_region="w", max_reads=4
    )
    parent = fanout.tier1_parent(ready[12])  # tier1-012: a random earlier one
    assert parent is not None and parent.source_id < "tier1-012"
    assert fanout.target_source(_target("a/x", "x")) is not None


@pytest.mark.parametrize(("strategy", "cross_region"), [("broadcast", 2), ("original", 6)])
def test_cross_region_copies_per_strategy(tmp_path: Path, strategy: str, cross_region: int) -> None:
    config = write_config(tmp_path)
    text = config.read_text().replace("[fanout]", f'[fanout]\nstrategy = "{strategy}"')
    config.write_text(text)
    disk = make_disk(tmp_path / "disk.vhd")

    async def body(app: Imagedist) -> JobStatus:
        job = await app.submit(disk, "golden", OsType.LINUX)
        await app.upload(job.id)
        await app.work([job.id])
        return await app.status(job.id)

    status = call(config, body)
    assert status.completed
    region = {f"target:{t.target}": t.region for t in status.targets}
    crossing = [
        t for t in status.targets if region.get(t.source_id or "", "westeurope") != t.region
    ]
    # broadcast: one seed each for eastus and japaneast; original: every target outside the
    # staging region (westeurope) crosses.
    assert len(crossing) == cross_region
    if strategy == "original":
        assert all((t.source_id or "").startswith("tier") for t in status.targets)
