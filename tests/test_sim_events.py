"""The simulation driven by events: a worker does not pass over every row every poll interval,
nor look at every copy and image each time, and what `plan` predicts is what polling predicts."""

from __future__ import annotations

import dataclasses

import pytest

from imagedist._backends.sim import (
    MIB,
    MemoryStateStore,
    SimBlobStore,
    SimFaults,
    SimImageService,
    SimModel,
    SimStats,
    SimStorage,
    VirtualClock,
    run_virtual,
    scenario_config,
)
from imagedist._domain import BlobRef, Job, OsType, TargetRow, TargetState
from imagedist._engine import Worker
from imagedist._plan import Plan, plan_distribution
from imagedist.abc import CopyStatus

GIB = 1024 * MIB
SRC = BlobRef("staging", "c", "golden.vhd")
DEST = BlobRef("target", "c", "golden.vhd")
POLL = 7.0


def test_a_copy_is_waited_for_until_its_end_and_no_longer() -> None:
    async def main() -> tuple[float, CopyStatus]:
        clock = VirtualClock()
        locations = {"staging": ("s", "westeurope"), "target": ("s", "eastus")}
        model = SimModel(copy_rate_min=10e6, copy_rate_max=10e6, copy_start_latency_max=1.0)
        storage = SimStorage(
            clock, locations, model=model, faults=SimFaults(), seed=0, stats=SimStats()
        )
        store = SimBlobStore(storage)
        for account in locations:
            await store.ensure_container(account, "c")
        await store.create_page_blob(SRC, GIB)
        storage.blob(SRC).add_range(0, 100 * 10**6)  # 10 s at 10 MB/s, after 1 s to start
        start = clock.now()
        await store.start_copy(SRC, DEST)
        assert await store.wait_for_copy(DEST, 3600.0)
        return clock.now() - start, (await store.get_properties(DEST)).copy_status

    took, status = run_virtual(main())
    assert status is CopyStatus.SUCCESS
    assert took == pytest.approx(11.0, abs=1e-3)


def _plan(monkeypatch: pytest.MonkeyPatch, strategy: str, *, polled: bool) -> Plan:
    if polled:  # the backend cannot tell an end: the engine looks every poll interval
        monkeypatch.setattr(SimBlobStore, "wait_for_copy", _cannot_tell_copy)
        monkeypatch.setattr(SimImageService, "wait_for_image", _cannot_tell_image)
    config = scenario_config(
        3, 4, copies=5, images=3, poll_interval_seconds=POLL, copy_method="async"
    )
    plan = plan_distribution(
        config, disk_bytes=2 * GIB, occupied_bytes=GIB, strategy=strategy, seed=4
    )
    monkeypatch.undo()
    return plan


async def _cannot_tell_copy(self: SimBlobStore, ref: BlobRef, longest: float) -> bool:
    return False


async def _cannot_tell_image(
    self: SimImageService, sub: str, group: str, name: str, longest: float, every: float
) -> bool:
    return False


@pytest.mark.parametrize("strategy", ["broadcast", "original"])
def test_waiting_for_ends_predicts_what_polling_predicts(
    monkeypatch: pytest.MonkeyPatch, strategy: str
) -> None:
    polled = _plan(monkeypatch, strategy, polled=True)
    waited = _plan(monkeypatch, strategy, polled=False)
    assert polled.outcome == waited.outcome == "completed"
    # Looks fall on the same grid of poll intervals; which of two things due at one instant
    # runs first may differ by a float's rounding, so a hop may be seen an interval apart.
    assert waited.makespan_seconds == pytest.approx(polled.makespan_seconds, abs=3 * POLL)
    assert waited.done_at == pytest.approx(polled.done_at, abs=3 * POLL)
    assert (waited.copies, waited.arm_writes) == (polled.copies, polled.arm_writes)
    assert waited.arm_reads == pytest.approx(polled.arm_reads, rel=0.05)


def test_a_quiet_stretch_costs_no_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    """One copy slot and hours of copying at a 1 s poll: the worker passes over the rows when
    something was written, not every second (it took ~10,000 passes)."""
    passes = 0
    tick = Worker.tick

    async def counted(self: Worker, group: object) -> int:
        nonlocal passes
        passes += 1
        return await tick(self, group)  # type: ignore[arg-type]

    monkeypatch.setattr(Worker, "tick", counted)
    config = scenario_config(
        2, 2, copies=1, images=1, poll_interval_seconds=1.0, copy_method="async"
    )
    model = SimModel(copy_rate_min=4e6, copy_rate_max=4e6)
    plan = plan_distribution(
        config, disk_bytes=8 * GIB, occupied_bytes=8 * GIB, strategy="broadcast", model=model
    )
    assert plan.outcome == "completed"
    assert plan.makespan_seconds > 4 * 2000  # four copies, one at a time, ~2,150 s each
    assert passes < 200


def test_the_memory_store_lists_what_changed_and_counts_news_only() -> None:
    async def main() -> None:
        store = MemoryStateStore()
        job = Job(
            id="j",
            image_name="i",
            os_type=OsType.LINUX,
            source_path="disk.vhd",
            size_bytes=512,
            created_at=0.0,
        )
        rows = [_row(name) for name in ("a", "b", "c")]
        await store.create_job(job, [], rows)
        every, cursor = await store.list_targets_changed("j", 0)
        assert [r.target for r in every] == ["a", "b", "c"]
        before = store.revision()
        b = every[1]
        b = await store.put_target(dataclasses.replace(b, lease_until=99.0))  # a renewal
        assert store.revision() == before
        changed, cursor = await store.list_targets_changed("j", cursor)
        assert [r.target for r in changed] == ["b"]
        await store.put_target(dataclasses.replace(b, state=TargetState.COPYING))
        assert store.revision() == before + 1
        changed, cursor = await store.list_targets_changed("j", cursor)
        assert [(r.target, r.state) for r in changed] == [("b", TargetState.COPYING)]
        assert await store.list_targets_changed("j", cursor) == ([], cursor)

    run_virtual(main())


def _row(name: str) -> TargetRow:
    return TargetRow(
        job_id="j",
        target=name,
        subscription="s",
        region="westeurope",
        resource_group="g",
        image_name=f"img-{name}",
        blob=BlobRef("acct", "c", f"{name}.vhd"),
    )
