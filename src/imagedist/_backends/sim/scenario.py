"""Run the real engine on the simulated backend: one job, N targets, in virtual time.

The tier-0 upload is not simulated: the job is submitted with a sparse file of the disk's size
(``submit_job`` only looks at its size) and its tier-0 blob is put straight into the staging account
with the occupied bytes of the disk, then the tier-0 row is marked ready through the state store.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..._config import Config, parse_config
from ..._domain import BlobRef, Job, JobState, OsType, SourceKind, SourceState
from ..._domain.regions import REGIONS
from ..._engine import EngineContext, Worker, submit_job
from ..._vhd._footer import fixed_footer
from ...abc import Backend
from .backend import open_sim_backend, sim_world
from .loop import run_virtual
from .model import MIB, SimFaults, SimModel, SimStats

__all__ = ["ScenarioResult", "preload_tier0", "run_scenario", "scenario_config"]

GIB = 1024 * MIB


def scenario_config(
    subscriptions: int,
    regions: int,
    *,
    tier1_copies: int = 2,
    max_reads_per_source: int = 4,
    copies: int = 32,
    images: int = 16,
    poll_interval_seconds: float = 10.0,
    lease_seconds: float = 120.0,
    copy_method: str = "auto",
) -> Config:
    """A fleet of ``subscriptions`` × ``regions`` targets in the first ``regions`` real region
    names, in alphabetical order.

    :raises ValueError: if Azure has fewer regions than asked for.
    """
    names = sorted(REGIONS)
    if regions > len(names):
        raise ValueError(f"a fleet has at most {len(names)} regions: Azure has no more")
    region_names = names[:regions]
    raw: dict[str, Any] = {
        "backend": "local",  # the config schema knows no "sim"; the backend is passed in
        "staging": {
            "subscription": "sub-staging",
            "region": region_names[0],
            "account": "imgdstaging",
        },
        "fleet": {
            "subscriptions": [f"sub-{i:04d}" for i in range(subscriptions)],
            "regions": region_names,
        },
        "fanout": {
            "tier1_copies": tier1_copies,
            "max_reads_per_source": max_reads_per_source,
            "copy_method": copy_method,
        },
        "concurrency": {
            "copies": copies,
            "images": images,
            "poll_interval_seconds": poll_interval_seconds,
            "lease_seconds": lease_seconds,
        },
    }
    return parse_config(raw)


async def preload_tier0(backend: Backend, job: Job, occupied: int) -> None:
    """Put the job's tier-0 blob in place (``occupied`` bytes of data) and mark its row ready."""
    storage = sim_world(backend).storage
    state = backend.state
    tier0 = next(s for s in await state.list_sources(job.id) if s.kind is SourceKind.TIER0)
    ref: BlobRef = tier0.blob
    storage.now()
    storage.ensure_container(ref.account, ref.container)
    blob = storage.create(ref, job.size_bytes, overwrite=True)
    if occupied:
        blob.add_range(0, min(occupied, job.size_bytes))
    # What the upload leaves besides the data: the footer, which copies are verified by. No
    # MD5: the simulator moves no bytes to hash, and a made-up one would fail a re-upload.
    blob.tail = fixed_footer(job.size_bytes - 512).pack()
    blob.add_range(job.size_bytes - 512, job.size_bytes)  # the footer is data: a page range
    await state.put_source(
        dataclasses.replace(tier0, state=SourceState.READY, progress_bytes=job.size_bytes)
    )


def _sparse_fixed_vhd(path: Path, virtual_size: int) -> Path:
    """A fixed VHD of ``virtual_size`` bytes (a whole number of MiB) holding no data: a hole and
    a footer, so ``submit_job`` accepts it as it is and nothing is read or converted."""
    virtual_size = -(-virtual_size // MIB) * MIB
    with path.open("wb") as file:
        file.truncate(virtual_size)
        file.seek(virtual_size)
        file.write(fixed_footer(virtual_size).pack())
    return path


@dataclass
class ScenarioResult:
    """What a run gives: the job's outcome, its virtual makespan, and the platform's counters."""

    state: JobState
    makespan: float  # virtual seconds from submission to the job's end
    real_seconds: float
    targets: int
    counts: dict[str, int]
    stats: SimStats
    workers: int
    rebalanced: int = 0
    extra: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        s = self.stats
        return (
            f"{self.targets} targets: {self.state.value} in {self.makespan / 3600:.2f} h virtual"
            f" ({self.makespan:.0f} s), {self.real_seconds:.2f} s real, {self.workers} worker(s);"
            f" copies {s.copies_started} (clones {s.clones}, failed {s.copies_failed}),"
            f" cross-region {s.cross_region_bytes / GIB:.1f} GiB, ARM writes {s.arm_writes}"
            f" reads {s.arm_reads} throttled {s.throttled}, blob calls {s.blob_calls};"
            f" states {self.counts}"
        )


async def _drive(
    config: Config,
    *,
    disk_bytes: int,
    occupied: int,
    model: SimModel,
    faults: SimFaults,
    seed: int,
    crashes: Sequence[float],
    folder: Path,
) -> tuple[Job, Backend, int]:
    backend = open_sim_backend(config, model=model, faults=faults, seed=seed)
    disk = _sparse_fixed_vhd(folder / "golden.vhd", disk_bytes)
    ctx = EngineContext(backend, config, worker_id="w-sim-001")
    job = await submit_job(ctx, disk, "golden", OsType.LINUX, "simulated")
    await preload_tier0(backend, job, occupied)
    start = backend.clock.now()
    workers = 0
    for crash_at in [*sorted(crashes), None]:
        workers += 1
        ctx = EngineContext(backend, config, worker_id=f"w-sim-{workers:03d}")
        task = asyncio.create_task(Worker(ctx, [job.id]).run())
        if crash_at is None:
            await task
            break
        await asyncio.wait({task}, timeout=max(0.0, start + crash_at - backend.clock.now()))
        if task.done():
            task.result()
            break
        task.cancel()  # the worker dies mid-flight: its leases stay until they run out
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return await backend.state.get_job(job.id), backend, workers


def run_scenario(
    config: Config,
    *,
    disk_bytes: int = 32 * GIB,
    occupied: int = 30 * GIB,
    model: SimModel | None = None,
    faults: SimFaults | None = None,
    seed: int = 0,
    crashes: Sequence[float] = (),
    random_crashes: int = 0,
    crash_window: float = 3600.0,
) -> ScenarioResult:
    """Distribute one job to every target of ``config`` in virtual time; return how it went.

    :param crashes: virtual seconds after submission at which the running worker is killed and a
        new one (new worker id, same store) started; ``random_crashes`` more are drawn from the
        seed within ``crash_window``.
    """
    rng = random.Random(f"{seed}:crashes")
    crash_times = [*crashes, *(rng.uniform(0, crash_window) for _ in range(random_crashes))]
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="imagedist-sim-") as folder:
        job, backend, workers = run_virtual(
            _drive(
                config,
                disk_bytes=disk_bytes,
                occupied=occupied,
                model=model or SimModel(),
                faults=faults or SimFaults(),
                seed=seed,
                crashes=crash_times,
                folder=Path(folder),
            )
        )
    real = time.perf_counter() - began
    state = backend.state
    targets = run_virtual(state.list_targets(job.id))
    world = sim_world(backend)
    return ScenarioResult(
        state=job.state,
        makespan=(job.finished_at or job.created_at) - job.created_at,
        real_seconds=real,
        targets=len(targets),
        counts=dict(Counter(t.state.value for t in targets)),
        stats=world.stats,
        workers=workers,
        rebalanced=world.storage.copies.rebalanced,
    )
