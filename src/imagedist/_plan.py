"""`imagedist plan`: predict a distribution before moving a byte, by running the real engine on
the simulated backend in virtual time (no cloud is touched)."""

from __future__ import annotations

import random
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ._backends.sim import SimModel, open_sim_backend, preload_tier0, run_virtual, sim_world
from ._backends.sim.scenario import _sparse_fixed_vhd
from ._config import Config
from ._domain import JobState, OsType, TargetRow
from ._domain.events import EngineEvent, EventKind
from ._domain.regions import EGRESS_PRICE_PER_GB, zone_of
from ._engine import EngineContext, Worker, submit_job

__all__ = ["Plan", "plan_distribution"]

GB = 1e9


@dataclass(frozen=True)
class Plan:
    """What a distribution is predicted to take and cost."""

    strategy: str
    targets: int
    regions: int
    disk_bytes: int
    occupied_bytes: int
    makespan_seconds: float  # upload + distribution
    phases: dict[str, float]  # seconds from the job's start to the end of each phase
    copies: int
    cross_region_copies: int
    cross_region_gb: float
    egress_cost: float  # in the price table's currency (USD list prices)
    arm_writes: int  # throttled per subscription: a bucket of 200, 10 more a second
    arm_reads: int  # polls of image creations, mostly: `concurrency.poll_interval_seconds`
    arm_throttled: int
    outcome: str


def plan_distribution(
    config: Config,
    *,
    disk_bytes: int,
    occupied_bytes: int,
    strategy: str | None = None,
    upload_rate: float = 60 * 1024 * 1024,
    model: SimModel | None = None,
    seed: int = 0,
) -> Plan:
    """Simulate one job over the config's fleet; ``upload_rate`` (bytes/s) prices the upload."""
    if strategy is not None:
        fanout = config.fanout.model_copy(update={"strategy": strategy})
        config = config.model_copy(update={"fanout": fanout})
    with tempfile.TemporaryDirectory(prefix="imagedist-plan-") as folder:
        work = config.model_copy(
            update={"upload": config.upload.model_copy(update={"work_dir": folder})}
        )
        return run_virtual(
            _simulate(
                work,
                disk_bytes,
                occupied_bytes,
                upload_rate,
                model or SimModel(),
                seed,
                Path(folder),
            )
        )


async def _simulate(
    config: Config,
    disk_bytes: int,
    occupied: int,
    upload_rate: float,
    model: SimModel,
    seed: int,
    folder: Path,
) -> Plan:
    backend = open_sim_backend(config, model=model, seed=seed)
    rng = random.Random(seed)
    events: list[EngineEvent] = []
    ctx = EngineContext(
        backend,
        config,
        worker_id="w-plan",
        random_suffix=lambda: f"{rng.getrandbits(16):04x}",
        on_event=events.append,
    )
    disk = _sparse_fixed_vhd(folder / "golden.vhd", disk_bytes)  # a hole and a footer: instant
    job = await submit_job(ctx, disk, "golden", OsType.LINUX, "plan")
    await preload_tier0(backend, job, occupied)
    await Worker(ctx, [job.id]).run()
    job = await backend.state.get_job(job.id)
    targets = await backend.state.list_targets(job.id)
    upload = occupied / upload_rate
    stats = sim_world(backend).stats
    crossing = _cross_region_sources(config, targets)
    occupied_gb = occupied / GB
    return Plan(
        strategy=config.fanout.strategy,
        targets=len(targets),
        regions=len({t.region for t in targets}),
        disk_bytes=disk_bytes,
        occupied_bytes=occupied,
        makespan_seconds=upload + ((job.finished_at or job.created_at) - job.created_at),
        phases={"upload": upload, **_phase_ends(events, job.created_at, upload)},
        copies=stats.copies_started,
        cross_region_copies=len(crossing),
        cross_region_gb=stats.cross_region_bytes / GB,
        egress_cost=sum(occupied_gb * EGRESS_PRICE_PER_GB[zone_of(r)] for r in crossing),
        arm_writes=stats.arm_writes,
        arm_reads=stats.arm_reads,
        arm_throttled=stats.throttled,
        outcome=job.state.value if job.state is not JobState.ACTIVE else "unfinished",
    )


# The event that ends an item of each phase.
PHASE_ENDS = {
    "tier-1 copies": EventKind.TIER1_READY,
    "target copies": EventKind.COPY_VERIFIED,
    "images": EventKind.IMAGE_SUCCEEDED,
}


def _phase_ends(events: list[EngineEvent], start: float, upload: float) -> dict[str, float]:
    """When the last item of each phase finished, from the engine's events (after the upload)."""
    ends = {}
    for phase, kind in PHASE_ENDS.items():
        times = [e.ts for e in events if e.kind is kind]
        ends[phase] = upload + (max(times) - start if times else 0.0)
    return ends


def _cross_region_sources(config: Config, targets: list[TargetRow]) -> list[str]:
    """The source region of every copy that crossed regions (where its egress is billed)."""
    region = {f"target:{t.target}": t.region for t in targets}
    crossing = []
    for row in targets:
        source_region = region.get(row.source_id or "", config.staging.region)
        if row.source_id and source_region != row.region:
            crossing.append(source_region)
    return crossing
