"""The simulator's own cost: real seconds and CPU seconds to plan a broadcast distribution of N
targets, and how the cost per target grows with N (the baseline is the smallest size, measured in
the same run).

    .venv/bin/python benchmarks/simulator.py [--sizes 300x30,3000x60,10000x60]

To measure an older commit with the same script: check it out in a git worktree and run this
file with ``PYTHONPATH=<worktree>/src``.

A 30 GiB disk half full, copies at a fixed 20 MB/s, no concurrency cap (as benchmarks/fanout.py).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import GIB

from imagedist._plan import plan_distribution

try:
    from imagedist._backends.sim import SimModel, scenario_config
except ImportError:  # a checkout from before the adapters moved (to measure "before")
    from imagedist._sim import SimModel, scenario_config  # type: ignore[import-not-found,no-redef]


def measure(subscriptions: int, regions: int) -> tuple[int, float, float]:
    """(targets, real seconds, CPU seconds) of one broadcast plan."""
    config = scenario_config(
        subscriptions,
        regions,
        copies=100_000,
        images=100_000,
        max_reads_per_source=3,
        poll_interval_seconds=30.0,
        lease_seconds=600.0,
        tier1_copies="auto",  # type: ignore[arg-type]
    )
    model = SimModel(copy_rate_min=20e6, copy_rate_max=20e6)
    wall, cpu = time.perf_counter(), time.process_time()
    plan_distribution(
        config, disk_bytes=30 * GIB, occupied_bytes=15 * GIB, strategy="broadcast", model=model
    )
    return subscriptions * regions, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="300x30,3000x60,10000x60")
    sizes = [
        tuple(int(n) for n in item.split("x")) for item in parser.parse_args().sizes.split(",")
    ]
    print("| targets | real s | CPU s | CPU ms per target | × per-target CPU of the first |")
    print("|---:|---:|---:|---:|---:|")
    base = None
    for targets_wanted, regions in sizes:
        targets, wall, cpu = measure(max(1, targets_wanted // regions), regions)
        per_target = cpu / targets
        base = base or per_target
        print(
            f"| {targets:,} | {wall:.1f} | {cpu:.1f} | {per_target * 1000:.2f} |"
            f" {per_target / base:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
