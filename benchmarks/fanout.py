"""Fan-out: the original's strategy against the region-seeded broadcast tree (before issue 13,
with region clones, and with ranged pipelined copies), in the simulator, with the model's
analytical lower bounds computed in the same run.

    .venv/bin/python benchmarks/fanout.py [--sizes 300x30,3000x60,10000x60] [--rate-mb 20]
        [--poll 2] [--variants 0,1,2,3] [--range-mib 1024]

A 30 GiB disk, 50 % occupied. Copy Blob rates are fixed at ``--rate-mb`` MB/s (the model's
default draws them from 4-45 MB/s) so the closed-form bound applies; ranged copies run at the
model's per-blob rate. docs/benchmarks.md derives both bounds.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import GIB, MIB

from imagedist._backends.sim import SimModel, scenario_config
from imagedist._plan import Plan, plan_distribution

DISK = 30 * GIB
OCCUPIED = DISK // 2
MAX_READS = 3  # 60 MiB/s of one page blob shared by 3 copies of 20 MB/s each


def lower_bound(model: SimModel, targets: int, regions: int, rate: float) -> float:
    """Seconds a distribution that moves each region's bytes across regions once needs at least,
    with same-account clones allowed in every account (see docs/benchmarks.md). Computed from the
    model's figures alone, not from the engine."""
    # Reads per blob bound nothing here: clones are free, so there are always enough blobs.
    clone = model.clone_seconds_min
    # Round 1: the upload and its clones seed every region at once (clones are free, so the
    # staging account holds as many sources as it needs: ceil(regions / k)), unless the staging
    # account's egress cannot carry that many copies at the rate.
    cross = _round_seconds(model, rate, regions)
    # Round 2 onwards: each region's seed and its clones feed the region's other targets; the
    # seed's account carries them all, so its egress bounds the round.
    per_region = math.ceil(targets / regions)
    local = _round_seconds(model, rate, per_region - 1) if per_region > 1 else 0.0
    image = model.image_create_seconds * (1 - model.image_create_jitter)
    return clone + cross + (clone + local if local else 0.0) + image


def _round_seconds(model: SimModel, rate: float, copies: int) -> float:
    """One round of ``copies`` copies of the disk's data out of one account, each at ``rate``
    at most, all the account's egress shared: the data leaves no faster than either allows."""
    data = OCCUPIED
    return model.copy_start_latency_min + max(data / rate, copies * data / model.account_egress)


def ranged_bound(model: SimModel) -> float:
    """Seconds a distribution needs at least when copies move by ranges and a copy may follow
    one still being made: one copy's time (the last target's data must all arrive, at one
    blob's rate) and one image, whatever the fleet (see docs/benchmarks.md)."""
    image = model.image_create_seconds * (1 - model.image_create_jitter)
    return model.ranged_call_seconds + OCCUPIED / model.ranged_copy_rate + image


def ranged_reference(model: SimModel) -> float:
    """The issue's reference for the ranged goal: one ranged copy and one typical image."""
    return (
        model.ranged_call_seconds + OCCUPIED / model.ranged_copy_rate + model.image_create_seconds
    )


VARIANTS = {
    # name: (strategy, copy_method, region_clones)
    "original (Copy Blob)": ("original", "async", 0),
    "broadcast before issue 13 (Copy Blob, no region clones)": ("broadcast", "async", 0),
    "broadcast (Copy Blob, region clones)": ("broadcast", "async", "auto"),
    "broadcast (ranged, pipelined, region clones)": ("broadcast", "ranged", "auto"),
}


def run(
    variant: str, subscriptions: int, regions: int, model: SimModel, poll: float
) -> tuple[Plan, float]:
    strategy, method, clones = VARIANTS[variant]
    config = scenario_config(
        subscriptions,
        regions,
        copies=100_000,
        images=100_000,
        max_reads_per_source=MAX_READS,
        poll_interval_seconds=poll,
        lease_seconds=600.0,
        tier1_copies="auto",  # type: ignore[arg-type]
        copy_method=method,
    )
    fanout = config.fanout.model_copy(update={"region_clones": clones})
    config = config.model_copy(update={"fanout": fanout})
    began = time.perf_counter()
    plan = plan_distribution(
        config,
        disk_bytes=DISK,
        occupied_bytes=OCCUPIED,
        strategy=strategy,
        model=model,
        compare_methods=False,
    )
    return plan, time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="300x30,3000x60,10000x60")
    parser.add_argument("--rate-mb", type=float, default=20.0)
    parser.add_argument("--poll", type=float, default=2.0, help="poll interval, seconds")
    parser.add_argument("--variants", default=",".join(str(i) for i in range(len(VARIANTS))))
    parser.add_argument(
        "--range-mib",
        type=int,
        default=SimModel.ranged_call_bytes // MIB,
        help="bytes one simulated ranged call stands for (the model's resolution), MiB",
    )
    options = parser.parse_args()
    rate = options.rate_mb * 1e6
    model = SimModel(
        copy_rate_min=rate, copy_rate_max=rate, ranged_call_bytes=options.range_mib * MIB
    )
    references = []
    chosen = [list(VARIANTS)[int(i)] for i in options.variants.split(",")]
    lines = [
        "| targets × regions | variant | fan-out (h) | × its bound | copies | cross-region "
        "copies | cross-region GB | = (regions−1) × data? | egress $ | ARM writes | blob requests"
        " | est. worker CPU s | real s |",
        "|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for size in options.sizes.split(","):
        targets, regions = (int(part) for part in size.split("x"))
        subscriptions = targets // regions
        bound = lower_bound(model, subscriptions * regions, regions, rate)
        ranged = ranged_bound(model)
        n = subscriptions * regions
        lines.append(
            f"| {n} × {regions} | bound, Copy Blob | {bound / 3600:.3f} | 1.00 |" + " |" * 9
        )
        lines.append(f"| {n} × {regions} | bound, ranged | {ranged / 3600:.3f} | 1.00 |" + " |" * 9)
        for variant in chosen:
            plan, real = run(variant, subscriptions, regions, model, options.poll)
            print(
                f"  {size} {variant}: {plan.makespan_seconds:.0f} s virtual, {real:.1f} s real",
                flush=True,
            )
            print(f"    {plan.bound_by}", flush=True)
            distribution = plan.makespan_seconds - plan.phases["upload"]
            own = ranged if "ranged" in variant else bound
            minimal = (regions - 1) * OCCUPIED / 1e9
            exact = "yes" if abs(plan.cross_region_gb - minimal) < 0.01 else "no"
            cost = next(iter(plan.copy_methods.values()))
            if "ranged" in variant:
                references.append(
                    f"ranged at {plan.targets} × {regions}: {distribution:.0f} s ="
                    f" {distribution / ranged_reference(model):.2f} × (one ranged copy + one"
                    f" image = {ranged_reference(model):.0f} s), at {options.range_mib} MiB"
                    " per simulated call"
                )
            lines.append(
                f"| {plan.targets} × {regions} | {variant} | {distribution / 3600:.3f}"
                f" | {distribution / own:.2f} | {plan.copies} | {plan.cross_region_copies}"
                f" | {plan.cross_region_gb:,.1f} | {exact} | {plan.egress_cost:,.2f}"
                f" | {plan.arm_writes:,} | {cost.blob_calls:,} | {cost.worker_cpu_seconds:,.0f}"
                f" | {real:.1f} |"
            )
    print()
    print("\n".join(lines))
    print("\n".join(["", *references]))


if __name__ == "__main__":
    main()
