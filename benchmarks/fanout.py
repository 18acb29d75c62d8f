"""Fan-out: the original's strategy against the region-seeded broadcast tree, in the simulator,
with the model's analytical lower bound computed in the same run.

    .venv/bin/python benchmarks/fanout.py [--sizes 300x30,3000x60,10000x60] [--rate-mb 20]

A 30 GiB disk, 50 % occupied. Copy rates are fixed at ``--rate-mb`` MB/s (the model's default
draws them from 4-45 MB/s) so the closed-form bound applies; docs/benchmarks.md derives it.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import GIB

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


def run(strategy: str, subscriptions: int, regions: int, model: SimModel) -> tuple[Plan, float]:
    config = scenario_config(
        subscriptions,
        regions,
        copies=100_000,
        images=100_000,
        max_reads_per_source=MAX_READS,
        poll_interval_seconds=float(os.environ.get("POLL", "30")),
        lease_seconds=600.0,
        tier1_copies="auto",  # type: ignore[arg-type]
    )
    began = time.perf_counter()
    plan = plan_distribution(
        config, disk_bytes=DISK, occupied_bytes=OCCUPIED, strategy=strategy, model=model
    )
    return plan, time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="300x30,3000x60,10000x60")
    parser.add_argument("--rate-mb", type=float, default=20.0)
    options = parser.parse_args()
    rate = options.rate_mb * 1e6
    model = SimModel(copy_rate_min=rate, copy_rate_max=rate)
    lines = [
        "| targets × regions | strategy | makespan (h) | × lower bound | copies | cross-region "
        "copies | cross-region GB | = (regions−1) × data? | egress $ | ARM writes | real s |",
        "|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for size in options.sizes.split(","):
        targets, regions = (int(part) for part in size.split("x"))
        subscriptions = targets // regions
        bound = lower_bound(model, subscriptions * regions, regions, rate)
        lines.append(
            f"| {subscriptions * regions} × {regions} | lower bound | {bound / 3600:.2f}"
            " | 1.00 | | | | | | | |"
        )
        for strategy in ("original", "broadcast"):
            plan, real = run(strategy, subscriptions, regions, model)
            print(
                f"  {size} {strategy}: {plan.makespan_seconds:.0f} s virtual, {real:.1f} s real",
                flush=True,
            )
            distribution = plan.makespan_seconds - plan.phases["upload"]
            minimal = (regions - 1) * OCCUPIED / 1e9
            lines.append(
                f"| {plan.targets} × {regions} | {strategy} | {distribution / 3600:.2f}"
                f" | {distribution / bound:.2f} | {plan.copies} | {plan.cross_region_copies}"
                f" | {plan.cross_region_gb:,.1f} | {'yes' if abs(plan.cross_region_gb - minimal) < 0.01 else 'no'}"
                f" | {plan.egress_cost:,.2f} | {plan.arm_writes:,} | {real:.1f} |"
            )
    print()
    print("\n".join(lines))


if __name__ == "__main__":
    main()
