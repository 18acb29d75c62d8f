"""The sim backend: Azure's figures in virtual time, and the real engine running on it."""

from __future__ import annotations

import asyncio
import itertools
import math
import os
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

from imagedist._backends.sim import (
    MB,
    MIB,
    ArmThrottle,
    SimBlobStore,
    SimFaults,
    SimImageService,
    SimModel,
    SimStats,
    SimStorage,
    VirtualClock,
    run_scenario,
    run_virtual,
    scenario_config,
)
from imagedist._backends.sim.blobs import SIM_RANGE_BYTES
from imagedist._backends.sim.state import MemoryStateStore
from imagedist._backends.sim.storage import SimBlob
from imagedist._domain import BlobRef, JobState, OsType
from imagedist._engine import EngineContext
from imagedist._engine._ranged import copy_ranged
from imagedist._exceptions import TransientError
from imagedist.abc import CopyStatus, ImageSpec

T = TypeVar("T")
GIB = 1024 * MIB
LOCATIONS = {
    "staging": ("sub-s", "westeurope"),
    "weu": ("sub-a", "westeurope"),
    **{f"t{i:02d}": ("sub-a", f"region{i:02d}") for i in range(12)},
}
SRC = BlobRef("staging", "c", "golden.vhd")
#: targets of the engine test; IMAGEDIST_SIM_TARGETS=10000 for a big run by hand
BIG_TARGETS = int(os.environ.get("IMAGEDIST_SIM_TARGETS", "1000"))


def fixed(rate: float, latency: float = 5.0, **changes: Any) -> SimModel:
    """A model whose copies all run at ``rate`` after exactly ``latency`` seconds."""
    return SimModel(
        copy_rate_min=rate,
        copy_rate_max=rate,
        copy_start_latency_min=latency,
        copy_start_latency_max=latency,
        **changes,
    )


def in_world(
    body: Callable[[SimBlobStore, VirtualClock, SimStorage], Awaitable[T]],
    model: SimModel | None = None,
    seed: int = 0,
) -> T:
    """Run ``body`` against a fresh simulated storage whose staging account holds a 30 GiB disk."""

    async def main() -> T:
        clock = VirtualClock()
        storage = SimStorage(
            clock, LOCATIONS, model=model or SimModel(), faults=SimFaults(), seed=seed,
            stats=SimStats(),
        )  # fmt: skip
        store = SimBlobStore(storage, seed=seed)
        for account in LOCATIONS:
            await store.ensure_container(account, "c")
        await store.create_page_blob(SRC, 32 * GIB)
        storage.blob(SRC).add_range(0, 30 * GIB)
        return await body(store, clock, storage)

    return run_virtual(main())


async def finish_time(store: SimBlobStore, clock: VirtualClock, ref: BlobRef, step: float) -> float:
    """Seconds from now until the copy into ``ref`` succeeds, to within ``step``."""
    start = clock.now()
    while (props := await store.get_properties(ref)).copy_status is CopyStatus.PENDING:
        await clock.sleep(step)
    assert props.copy_status is CopyStatus.SUCCESS, props.copy_error
    assert props.copy_progress == props.copy_total == 30 * GIB
    return clock.now() - start


@pytest.mark.parametrize("rate", [20 * MB, 100 * MB])
def test_one_copy_takes_latency_plus_d_over_its_rate(rate: float) -> None:
    async def body(store: SimBlobStore, clock: VirtualClock, storage: SimStorage) -> float:
        await store.start_copy(SRC, BlobRef("t00", "c", "golden.vhd"))
        return await finish_time(store, clock, BlobRef("t00", "c", "golden.vhd"), 1.0)

    took = in_world(body, fixed(rate))
    expected = 5.0 + 30 * GIB / min(rate, 60 * MIB)
    assert expected <= took < expected + 1.0


def test_progress_is_reported_while_pending() -> None:
    async def body(store: SimBlobStore, clock: VirtualClock, storage: SimStorage) -> list[int]:
        dest = BlobRef("t00", "c", "golden.vhd")
        await store.start_copy(SRC, dest)
        seen = []
        for _ in range(3):
            await clock.sleep(100)
            seen.append((await store.get_properties(dest)).copy_progress)
        return seen

    seen = in_world(body, fixed(10 * MB, latency=0.0))
    assert seen == [1000 * MB, 2000 * MB, 3000 * MB]


def test_readers_of_one_source_share_its_bandwidth() -> None:
    async def body(store: SimBlobStore, clock: VirtualClock, storage: SimStorage) -> list[float]:
        dests = [BlobRef(f"t{i:02d}", "c", "golden.vhd") for i in range(10)]
        start = clock.now()
        for dest in dests:
            await store.start_copy(SRC, dest)
        assert storage.copies.readers(SRC) == 0  # still in their start latency
        await clock.sleep(6)
        storage.now()  # the world is brought up to date when it is looked at
        assert storage.copies.readers(SRC) == 10
        finished: dict[BlobRef, float] = {}
        while len(finished) < len(dests):
            for dest in dests:
                props = await store.get_properties(dest)
                if dest not in finished and props.copy_status is CopyStatus.SUCCESS:
                    finished[dest] = clock.now() - start
            await clock.sleep(5.0)
        return list(finished.values())

    times = in_world(body, fixed(45 * MB))
    alone = 5 + 30 * GIB / (45 * MB)
    shared = 5 + 30 * GIB / (60 * MIB / 10)  # 10 readers at 6 MiB/s each
    assert all(shared <= t < shared + 6 for t in times)
    assert shared > 5 * alone


def test_a_same_account_copy_is_a_fast_clone_whatever_its_size() -> None:
    async def body(store: SimBlobStore, clock: VirtualClock, storage: SimStorage) -> float:
        dest = BlobRef("staging", "c", "tier1-001.vhd")
        await store.start_copy(SRC, dest)
        return await finish_time(store, clock, dest, 0.5)

    model = SimModel()
    took = in_world(body, model)
    assert model.clone_seconds_min <= took <= model.clone_seconds_max + 0.5


def test_account_egress_caps_the_copies_out_of_it() -> None:
    async def body(store: SimBlobStore, clock: VirtualClock, storage: SimStorage) -> float:
        dest = BlobRef("t00", "c", "golden.vhd")
        await store.start_copy(SRC, dest)
        return await finish_time(store, clock, dest, 1.0)

    took = in_world(body, fixed(45 * MB, account_egress=5 * MB))
    assert 5 + 30 * GIB / (5 * MB) <= took < 5 + 30 * GIB / (5 * MB) + 1


def test_cross_region_bytes_are_counted() -> None:
    async def body(store: SimBlobStore, clock: VirtualClock, storage: SimStorage) -> SimStats:
        await store.start_copy(SRC, BlobRef("weu", "c", "same-region.vhd"))
        await store.start_copy(SRC, BlobRef("t01", "c", "other-region.vhd"))
        await clock.sleep(10_000)
        await store.get_properties(SRC)
        return storage.stats

    stats = in_world(body, fixed(45 * MB))
    assert (stats.copies_succeeded, stats.cross_region_copies) == (2, 1)
    assert (stats.bytes_copied, stats.cross_region_bytes) == (60 * GIB, 30 * GIB)


def test_a_burst_of_image_creations_is_throttled_with_retry_after() -> None:
    async def main() -> tuple[list[float], SimStats]:
        clock, stats, model, faults = VirtualClock(), SimStats(), SimModel(), SimFaults()
        storage = SimStorage(clock, LOCATIONS, model=model, faults=faults, seed=1, stats=stats)
        images = SimImageService(storage, ArmThrottle(clock, model, faults, stats, seed=1))
        await images.ensure_resource_group("sub-a", "rg", "westeurope")
        waits = []
        for i in range(300):
            spec = ImageSpec("sub-a", "rg", f"img-{i}", "westeurope", BlobRef("weu", "c", "x.vhd"),
                             OsType.LINUX)  # fmt: skip
            try:
                await images.begin_create_image(spec)
            except TransientError as exc:
                assert exc.retry_after is not None
                waits.append(exc.retry_after)
        await clock.sleep(max(waits))
        await images.begin_create_image(spec)  # the bucket has refilled
        return waits, stats

    waits, stats = run_virtual(main())
    assert len(waits) == 300 - 199  # 200 tokens, one taken by the resource group
    assert stats.throttled == len(waits)
    assert all(w >= 1 for w in waits)


def small_fleet(**changes: Any) -> Any:
    return scenario_config(3, 10, tier1_copies=2, max_reads_per_source=4, copies=16, **changes)


def test_same_seed_same_run_other_seed_other_run() -> None:
    # Copy Blob: its rates are drawn from the seed (ranged copies run at the model's rate).
    fleet = small_fleet(copy_method="async")
    runs = [run_scenario(fleet, occupied=4 * GIB, seed=seed) for seed in (5, 5, 6)]
    first, again, other = runs
    assert (first.makespan, first.stats) == (again.makespan, again.stats)
    assert first.makespan != other.makespan


def test_engine_distributes_300_targets_in_30_regions() -> None:
    config = scenario_config(10, 30, tier1_copies=4, max_reads_per_source=8, copies=64)
    result = run_scenario(config, seed=1)
    print(result.summary())
    assert result.state.value == "completed"
    assert result.counts == {"done": 300}
    assert result.stats.images_succeeded == 300
    assert result.stats.cross_region_bytes > 0
    # no copy can beat one blob's read bandwidth, and every target needs its image after its copy
    assert result.makespan >= 30 * GIB / (60 * MIB) + SimModel().image_create_seconds * 0.75


def test_engine_survives_worker_crashes_without_repeating_an_image() -> None:
    config = small_fleet(lease_seconds=60.0, copy_method="async")  # crashes timed for Copy Blob
    result = run_scenario(config, occupied=2 * GIB, seed=3,
                          crashes=[150.0, 420.0], random_crashes=1, crash_window=600.0)  # fmt: skip
    print(result.summary())
    assert result.workers == 4
    assert result.state.value == "completed"
    assert result.stats.images_started == 30


def test_ranged_copies_survive_worker_crashes_and_resume_what_landed() -> None:
    """Workers killed while ranged copies run (15 GiB at ~190 MB/s: about 80 s each): the next
    worker resumes each copy from the ranges that landed, so the bytes moved stay those of one
    copy per target, up to the ranges in flight when a worker died."""
    config = small_fleet(lease_seconds=60.0, copy_method="ranged")
    result = run_scenario(config, occupied=15 * GIB, seed=3, crashes=[40.0, 100.0])
    print(result.summary())
    assert (result.workers, result.state.value, result.counts) == (3, "completed", {"done": 30})
    assert result.stats.images_started == 30
    assert result.stats.range_requests > 0 and result.stats.copies_started == 2  # tier-1 clones
    one_copy_each = 30 * (15 * GIB + 512)
    in_flight_at_crashes = 2 * 30 * 32 * SIM_RANGE_BYTES  # at most, per crash
    assert one_copy_each <= result.stats.bytes_copied <= one_copy_each + in_flight_at_crashes


def test_ranged_copies_are_the_default_across_accounts_and_faster() -> None:
    ranged = run_scenario(small_fleet(), occupied=15 * GIB, seed=2)
    slow = run_scenario(small_fleet(copy_method="async"), occupied=15 * GIB, seed=2)
    print(ranged.summary(), slow.summary(), sep="\n")
    assert ranged.state.value == slow.state.value == "completed"
    assert ranged.stats.range_requests > 0 and slow.stats.range_requests == 0
    assert ranged.makespan * 2 < slow.makespan


def test_ranged_copies_back_off_on_server_busy_and_complete() -> None:
    faults = SimFaults(copy_range_busy=0.2)
    result = run_scenario(
        small_fleet(copy_method="ranged"), occupied=4 * GIB, seed=4, faults=faults
    )
    print(result.summary())
    assert result.state.value == "completed"
    assert result.stats.range_busy_errors > 0


def test_engine_under_faults_ends_with_every_target_settled() -> None:
    faults = SimFaults(copy_failure=0.1, blob_busy=0.01, arm_throttle=0.02, image_failure=0.05)
    result = run_scenario(small_fleet(), occupied=2 * GIB, seed=11, faults=faults)
    print(result.summary())
    assert result.state.value in ("completed", "failed")
    assert set(result.counts) <= {"done", "failed"}
    assert result.stats.blob_busy_errors > 0


def test_engine_at_scale() -> None:
    """N targets (1,000 here; 10,000 with IMAGEDIST_SIM_TARGETS) in a few seconds of real time."""
    regions = 50 if BIG_TARGETS >= 1000 else 10
    config = scenario_config(
        BIG_TARGETS // regions, regions, tier1_copies=100, max_reads_per_source=20,
        copies=2000, images=200, poll_interval_seconds=10.0,
    )  # fmt: skip
    result = run_scenario(config, occupied=int(os.environ.get("IMAGEDIST_SIM_GIB", "1")) * GIB)
    print(result.summary())
    assert result.state.value == "completed"
    assert result.counts == {"done": BIG_TARGETS}


@pytest.mark.parametrize("range_mib", [256, 1024])
def test_a_pipelined_copy_ends_about_a_look_after_its_parent(range_mib: int) -> None:
    """A chain of copies, each from the one before while it is still being made (issue 13,
    pipelining): the last ends about one copy time plus one look per hop, not one copy time per
    hop, and not one simulated call per hop either: a call stands for 4 MiB requests that a
    follower sends as its parent's land, so the model's resolution does not lengthen the
    chain. No hop lands a range before the hop it follows."""
    data, hops = 8 * GIB, 3

    async def chain() -> tuple[list[float], list[SimBlob]]:
        clock = VirtualClock()
        storage, store, refs = _chain_world(clock, data, hops, range_mib)
        start, ended = clock.now(), []

        async def hop(i: int) -> None:
            origin = refs[0] if i > 1 else None
            await copy_ranged(store, refs[i - 1], refs[i], clock=clock, origin=origin)
            ended.append(clock.now() - start)

        await asyncio.gather(*(hop(i) for i in range(1, hops + 1)))
        blobs = [storage.blob(ref) for ref in refs]
        assert all(blob.ranges == [(0, data)] for blob in blobs)  # every byte moved
        return ended, blobs

    ended, blobs = run_virtual(chain())
    one_copy = data / SimModel().ranged_copy_rate
    look = 1.0  # copy_ranged's follow_seconds
    assert max(ended) < one_copy + hops * (look + 0.1)
    for parent, child in itertools.pairwise(blobs[1:]):
        for offset, (_, landed) in child.landing.items():
            assert landed > parent.landing[offset][1]


def test_a_copy_of_a_finished_copy_takes_a_whole_copy_time() -> None:
    """The follower's credit is for time it was following: a copy started after its source's
    ranges all landed moves every byte from its own start, at the blob's rate."""
    data = 8 * GIB

    async def later_copy() -> float:
        clock = VirtualClock()
        _, store, refs = _chain_world(clock, data, 2, 1024)
        await copy_ranged(store, refs[0], refs[1], clock=clock)
        await clock.sleep(600.0)
        start = clock.now()
        await copy_ranged(store, refs[1], refs[2], clock=clock)
        return clock.now() - start

    assert run_virtual(later_copy()) >= data / SimModel().ranged_copy_rate


def _chain_world(
    clock: VirtualClock, data: int, hops: int, range_mib: int
) -> tuple[SimStorage, SimBlobStore, list[BlobRef]]:
    """Accounts in one region, the first holding ``data`` of a disk twice that size."""
    accounts = {f"acct{i}": ("sub-a", "westeurope") for i in range(hops + 1)}
    storage = SimStorage(clock, accounts, model=SimModel(), faults=SimFaults(), seed=1,
                         stats=SimStats())  # fmt: skip
    store = SimBlobStore(storage, range_bytes=range_mib * MIB)
    refs = [BlobRef(account, "c", "disk.vhd") for account in accounts]
    for ref in refs:
        storage.ensure_container(ref.account, "c")
    storage.create(refs[0], 2 * data, overwrite=True).add_range(0, data)
    for ref in refs[1:]:
        storage.create(ref, 2 * data, overwrite=True)
    return storage, store, refs


@pytest.mark.parametrize("ranges", [1, 2, 3, 32])
def test_two_range_calls_at_once_keep_a_simulated_blob_as_busy_as_many(ranges: int) -> None:
    """The simulator tells the engine that two calls in flight into a blob are enough (each
    stands for many requests into a blob that moves at one rate): a ranged copy ends at the
    same instant as with every range in flight, and never has more than two calls out."""

    async def copy(at_once: int) -> tuple[float, int]:
        clock = VirtualClock()
        accounts = {"a": ("sub-a", "westeurope"), "b": ("sub-a", "westeurope")}
        storage = SimStorage(clock, accounts, model=SimModel(), faults=SimFaults(), seed=1,
                             stats=SimStats())  # fmt: skip
        store = SimBlobStore(storage, range_bytes=256 * MIB)
        store.copy_range_calls_at_once = at_once
        source, dest = BlobRef("a", "c", "disk.vhd"), BlobRef("b", "c", "disk.vhd")
        for ref in (source, dest):
            storage.ensure_container(ref.account, "c")
        storage.create(source, 16 * GIB, overwrite=True).add_range(0, ranges * 256 * MIB)
        in_flight, most = 0, 0
        land = store.copy_range

        async def counted(src: BlobRef, dst: BlobRef, offset: int, length: int) -> None:
            nonlocal in_flight, most
            in_flight += 1
            most = max(most, in_flight)
            try:
                await land(src, dst, offset, length)
            finally:
                in_flight -= 1

        store.copy_range = counted  # type: ignore[method-assign,assignment]
        start = clock.now()
        await copy_ranged(store, source, dest, clock=clock)
        assert storage.blob(dest).ranges == [(0, ranges * 256 * MIB)]
        return clock.now() - start, most

    two, most_of_two = run_virtual(copy(2))
    every, most_of_every = run_virtual(copy(0))
    assert two == pytest.approx(every, rel=1e-9)
    assert most_of_two == min(2, ranges)
    assert most_of_every >= min(ranges, 3)  # without the hint, more went out at once


def test_a_follower_wakes_at_the_look_that_sees_a_range_and_its_looks_are_counted() -> None:
    """The simulator's event-driven follow (wait_for_ranges) is what polling every ``every``
    seconds would do: the follower wakes at the first look at or after the range landed, and
    each listing it spared counts as the call it would have been."""
    parent = BlobRef("t00", "c", "parent.vhd")

    async def body(store: SimBlobStore, clock: VirtualClock, storage: SimStorage) -> None:
        await store.create_page_blob(parent, 32 * GIB)
        start = clock.now()
        landing = asyncio.ensure_future(store.copy_range(SRC, parent, 0, SIM_RANGE_BYTES))
        before = storage.stats.by_call.get("page_ranges", 0)
        assert await store.wait_for_ranges(parent, 3600.0, 2.0)
        landed_after = SIM_RANGE_BYTES / SimModel().ranged_copy_rate
        looks = math.ceil(landed_after / 2.0)
        assert landing.done()
        assert clock.now() - start == pytest.approx(looks * 2.0)
        assert storage.stats.by_call.get("page_ranges", 0) - before == looks - 1
        # Nothing lands: it gives up after ``longest``, at a look.
        start = clock.now()
        assert await store.wait_for_ranges(parent, 7.0, 2.0)
        assert clock.now() - start == pytest.approx(8.0)

    in_world(body)


@pytest.mark.parametrize("copies", [1, 100])
def test_an_idle_worker_wakes_at_the_look_that_sees_news_as_polling_would(
    monkeypatch: pytest.MonkeyPatch, copies: int
) -> None:
    """A worker with nothing to do sleeps until the first look (on its grid of poll intervals)
    after a write, a task's end or a lease's end, where the store can tell when it is written:
    the job goes as when it looks every poll interval, at a fraction of the wake-ups. (Events
    at the same virtual instant as a look may fall either side of it, in either mode: with one
    copy at a time, that shifts a few of the nine copies by a look.)"""
    config = scenario_config(3, 3, copies=copies, images=100, poll_interval_seconds=2.0)
    pauses = 0
    pause = EngineContext.pause

    async def counted(self: EngineContext) -> None:
        nonlocal pauses
        pauses += 1
        await pause(self)

    monkeypatch.setattr(EngineContext, "pause", counted)
    woken = run_scenario(config, occupied=GIB)
    woken_pauses, pauses = pauses, 0
    monkeypatch.setattr(MemoryStateStore, "wake_on_write", lambda self, waiter: False)
    polled = run_scenario(config, occupied=GIB)
    assert woken.state is polled.state is JobState.COMPLETED
    assert woken.makespan == pytest.approx(polled.makespan, rel=0.05)
    assert woken.counts == polled.counts
    assert woken_pauses * 2 < pauses
