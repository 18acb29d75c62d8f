"""`imagedist plan`: predict a distribution before moving a byte, by running the real engine on
the simulated backend in virtual time (no cloud is touched)."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import pickle
import random
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ._backends.sim import (
    SimModel,
    SimStats,
    open_sim_backend,
    preload_tier0,
    run_virtual,
    sim_world,
)
from ._backends.sim.scenario import _sparse_fixed_vhd
from ._config import Config
from ._config_gallery import GalleryDefinitionSpec, GallerySpec
from ._domain import JobState, OsType, SourceKind, SourceRow, TargetRow
from ._domain.events import EngineEvent, EventKind
from ._domain.publications import PublicationRow
from ._domain.regions import EGRESS_PRICE_PER_GB, zone_of
from ._engine import EngineContext, Worker, submit_job
from ._plan_path import Caps, Leg, bound_by, critical_path

__all__ = ["MethodCost", "Plan", "plan_distribution"]

#: Estimated worker CPU of one blob request through the SDK (an estimate, to be measured).
BLOB_CALL_CPU_SECONDS = 0.001
RANGE_REQUEST_CPU_SECONDS = 0.001

GB = 1e9
# From this many targets the other copy method is simulated in a second process (a simulation
# of 1,000 targets takes about as long as starting one).
IN_PARALLEL_FROM_TARGETS = 1_000

logger = logging.getLogger("imagedist.plan")
PLAN_LEASE_SECONDS = 86_400.0  # the longest a config allows


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
    # Gallery mode (issue 11): what the job publishes to; when the gallery's replication ends
    # (from the job's start), its cross-region bytes and their egress cost.
    publish: tuple[str, ...] = ("images",)
    gallery_seconds: float | None = None
    gallery_cross_region_gb: float = 0.0
    gallery_egress_cost: float = 0.0
    # Seconds from the job's start (the upload included) at which each target got its image,
    # in rising order: the curve of targets done over time.
    done_at: tuple[float, ...] = ()
    # What shaped the makespan (issue 13): the critical path, leg by leg, and the limit that
    # bound it, in a sentence.
    critical_path: tuple[Leg, ...] = ()
    bound_by: str = ""
    # How target copies moved ([fanout] copy_method, issue 13), and what each method would cost
    # on this fleet: the other one is simulated too.
    copy_method: str = "auto"
    copy_methods: dict[str, MethodCost] = field(default_factory=dict)


@dataclass(frozen=True)
class MethodCost:
    """What one copy method costs a distribution: time, blob requests and the worker's CPU.

    ``worker_cpu_seconds`` is estimated: each Put Page From URL request costs the worker
    ``RANGE_REQUEST_CPU_SECONDS`` (building, signing and reading one HTTPS request); an
    asynchronous Copy Blob costs it only the polls, counted among ``blob_calls``.
    """

    makespan_seconds: float
    blob_calls: int  # every blob request, modelled Put Page From URL requests included
    range_requests: int
    worker_cpu_seconds: float


def plan_distribution(
    config: Config,
    *,
    disk_bytes: int,
    occupied_bytes: int,
    strategy: str | None = None,
    upload_rate: float = 60 * 1024 * 1024,
    model: SimModel | None = None,
    seed: int = 0,
    publish: Sequence[str] | None = None,
    compare_methods: bool = True,
) -> Plan:
    """Simulate one job over the config's fleet; ``upload_rate`` (bytes/s) prices the upload.

    ``compare_methods``: simulate the other copy method too, for :attr:`Plan.copy_methods`
    (a second simulation: in a second process when two cores are free, else it doubles the
    plan's time).

    ``publish`` ("images", "gallery"; default ``[publish] to``) says where the job goes; a
    config without a gallery plans one with the defaults, in the staging subscription and region.
    """
    if strategy is not None:
        fanout = config.fanout.model_copy(update={"strategy": strategy})
        config = config.model_copy(update={"fanout": fanout})
    # One worker that never dies: its leases need no renewing, and a renewal is a wake-up
    # (and a write) per item in flight every half lease, which would cost more than the rest
    # of a long plan. No figure of the plan depends on the lease.
    concurrency = config.concurrency.model_copy(update={"lease_seconds": PLAN_LEASE_SECONDS})
    config = config.model_copy(update={"concurrency": concurrency})
    publish = tuple(publish or config.publish.to)
    if "gallery" in publish:
        config = _with_plan_gallery(config)

    run = functools.partial(
        _simulate_in_folder,
        disk_bytes=disk_bytes,
        occupied_bytes=occupied_bytes,
        upload_rate=upload_rate,
        model=model or SimModel(),
        seed=seed,
        publish=publish,
    )
    if "images" not in publish or not compare_methods:
        return run(config)
    # Both methods, side by side (issue 13): the other one is simulated on the same fleet, in
    # a second process where a second core is free (each simulation is single-threaded).
    other = "ranged" if config.fanout.copy_method == "async" else "async"
    fanout = config.fanout.model_copy(update={"copy_method": other})
    other_config = config.model_copy(update={"fanout": fanout})
    if len(config.fleet_targets()) < IN_PARALLEL_FROM_TARGETS or _free_cores() < 2:
        plan, alternative = run(config), run(other_config)
    else:
        with _elsewhere(run.keywords, other_config) as alternative_plan:
            plan = run(config)
            alternative = alternative_plan()
    methods = {**plan.copy_methods, **alternative.copy_methods}
    return replace(plan, copy_methods=methods)


def _free_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def _elsewhere(options: dict[str, Any], config: Config) -> Iterator[Callable[[], Plan]]:
    """One simulation started in a Python process of its own (``imagedist._plan_process``:
    arguments and result pickled through files, so nothing of the caller's process, its main
    module or its threads, is copied or run again); the context gives the call that waits for
    its plan. Where that process cannot run, the plan is simulated here when asked for."""
    package_root = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [package_root, *filter(None, [os.environ.get("PYTHONPATH")])]
    )}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="imagedist-plan-") as folder:
        given, taken = Path(folder) / "arguments.pickle", Path(folder) / "plan.pickle"
        errors = Path(folder) / "errors.txt"
        given.write_bytes(pickle.dumps((config, options)))
        command = [sys.executable, "-m", "imagedist._plan_process", str(given), str(taken)]
        try:
            with errors.open("wb") as stderr:
                child = subprocess.Popen(command, env=env, stderr=stderr)
        except OSError:
            yield functools.partial(_simulate_in_folder, config, **options)
            return

        def result() -> Plan:
            child.wait()
            if child.returncode != 0 or not taken.exists():
                # Whatever stopped it (a missing module, memory) stops nothing here.
                why = errors.read_text(errors="replace")[-500:]
                logger.warning("plan: the second simulation's process failed: %s", why)
                return _simulate_in_folder(config, **options)
            plan: Plan = pickle.loads(taken.read_bytes())
            return plan

        try:
            yield result
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()


def _simulate_in_folder(
    config: Config,
    *,
    disk_bytes: int,
    occupied_bytes: int,
    upload_rate: float,
    model: SimModel,
    seed: int,
    publish: tuple[str, ...],
) -> Plan:
    """One simulated job, its files in a folder of its own (a module-level function, so a
    second process can run it)."""
    with tempfile.TemporaryDirectory(prefix="imagedist-plan-") as folder:
        work = config.model_copy(
            update={"upload": config.upload.model_copy(update={"work_dir": folder})}
        )
        return run_virtual(
            _simulate(
                work, disk_bytes, occupied_bytes, upload_rate, model, seed, Path(folder), publish
            )
        )


def _with_plan_gallery(config: Config) -> Config:
    """The config with a gallery holding a definition for the planned image ("golden")."""
    definition = GalleryDefinitionSpec(publisher="plan", offer="plan", sku="plan")
    gallery = config.gallery or GallerySpec(name="imagedist_plan")
    definitions = {**gallery.definitions, "golden": definition}
    return config.model_copy(
        update={"gallery": gallery.model_copy(update={"definitions": definitions})}
    )


async def _simulate(
    config: Config,
    disk_bytes: int,
    occupied: int,
    upload_rate: float,
    model: SimModel,
    seed: int,
    folder: Path,
    publish: tuple[str, ...],
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
    job = await submit_job(ctx, disk, "golden", OsType.LINUX, "plan", publish=publish)
    await preload_tier0(backend, job, occupied)
    await Worker(ctx, [job.id]).run()
    job = await backend.state.get_job(job.id)
    targets = await backend.state.list_targets(job.id)
    upload = occupied / upload_rate
    stats = sim_world(backend).stats
    sources = await backend.state.list_sources(job.id)
    crossing = _cross_region_sources(config, sources, targets)
    path = critical_path(events, sources, start=job.created_at, upload_seconds=upload)
    caps = Caps(
        config.concurrency.copies, config.concurrency.images, config.fanout.max_reads_per_source
    )
    occupied_gb = occupied / GB
    publications = await backend.state.list_publications(job.id)
    gallery_gb = occupied_gb * sum(len(_replicated_away(p)) for p in publications)
    gallery_cost = sum(
        occupied_gb * EGRESS_PRICE_PER_GB[zone_of(p.region)] * len(_replicated_away(p))
        for p in publications
    )
    gallery_end = [
        e.ts
        for e in events
        if e.kind is EventKind.IMAGE_SUCCEEDED and e.target.startswith("gallery/")
    ]
    makespan = upload + ((job.finished_at or job.created_at) - job.created_at)
    return Plan(
        strategy=config.fanout.strategy,
        targets=len(targets),
        regions=len({t.region for t in targets}),
        disk_bytes=disk_bytes,
        occupied_bytes=occupied,
        makespan_seconds=makespan,
        phases={"upload": upload, **_phase_ends(events, job.created_at, upload)},
        # Target copies of either method (restarts included) and same-account clones.
        copies=sum(1 for e in events if e.kind is EventKind.COPY_STARTED) + stats.clones,
        cross_region_copies=len(crossing),
        cross_region_gb=stats.cross_region_bytes / GB,
        egress_cost=sum(occupied_gb * EGRESS_PRICE_PER_GB[zone_of(r)] for r in crossing),
        arm_writes=stats.arm_writes,
        arm_reads=stats.arm_reads,
        arm_throttled=stats.throttled,
        outcome=job.state.value if job.state is not JobState.ACTIVE else "unfinished",
        publish=publish,
        gallery_seconds=upload + max(gallery_end) - job.created_at if gallery_end else None,
        gallery_cross_region_gb=gallery_gb,
        gallery_egress_cost=gallery_cost,
        done_at=_images_done(events, job.created_at, upload),
        critical_path=tuple(path),
        bound_by=bound_by(path, events, caps, occupied),
        copy_method=config.fanout.copy_method,
        copy_methods={config.fanout.copy_method: _method_cost(stats, makespan)},
    )


def _method_cost(stats: SimStats, makespan: float) -> MethodCost:
    """What the simulated copies cost: every blob request, a range copy call counted as the
    4 MiB requests it stands for, and the worker CPU they take (estimated per request)."""
    other_calls = stats.blob_calls - stats.by_call.get("copy_range", 0)
    return MethodCost(
        makespan_seconds=makespan,
        blob_calls=other_calls + stats.range_requests,
        range_requests=stats.range_requests,
        worker_cpu_seconds=other_calls * BLOB_CALL_CPU_SECONDS
        + stats.range_requests * RANGE_REQUEST_CPU_SECONDS,
    )


def _replicated_away(row: PublicationRow) -> list[str]:
    """The regions a version is replicated to from its own (each gets the disk's bytes once;
    replicas within a region are copies inside it, which cost no egress)."""
    return [name for name in row.regions if name != row.region]


# The event that ends an item of each phase.
PHASE_ENDS = {
    "tier-1 copies": EventKind.TIER1_READY,
    "target copies": EventKind.COPY_VERIFIED,
    "images": EventKind.IMAGE_SUCCEEDED,
}


def _images_done(events: list[EngineEvent], start: float, upload: float) -> tuple[float, ...]:
    """When each target's image succeeded, from the job's start (a gallery version is none)."""
    return tuple(
        sorted(
            upload + e.ts - start
            for e in events
            if e.kind is EventKind.IMAGE_SUCCEEDED and not e.target.startswith("gallery/")
        )
    )


def _phase_ends(events: list[EngineEvent], start: float, upload: float) -> dict[str, float]:
    """When the last item of each phase finished, from the engine's events (after the upload)."""
    ends = {}
    for phase, kind in PHASE_ENDS.items():
        # A gallery version's events name it "gallery/...": not a target's image.
        times = [e.ts for e in events if e.kind is kind and not e.target.startswith("gallery/")]
        ends[phase] = upload + (max(times) - start if times else 0.0)
    return ends


def _cross_region_sources(
    config: Config, sources: list[SourceRow], targets: list[TargetRow]
) -> list[str]:
    """The source region of every copy that crossed regions (where its egress is billed)."""
    region = {f"target:{t.target}": t.region for t in targets}
    account_region = {t.blob.account: t.region for t in targets}
    for source in sources:
        if source.kind is SourceKind.CLONE:  # in a target's account, in its region
            region[source.source_id] = account_region.get(source.blob.account, "")
    crossing = []
    for row in targets:
        source_region = region.get(row.source_id or "", config.staging.region)
        if row.source_id and source_region != row.region:
            crossing.append(source_region)
    return crossing
