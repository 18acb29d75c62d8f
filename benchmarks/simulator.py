"""The simulator's own cost: real seconds, CPU seconds and peak memory to `plan` a distribution
of N targets, for each strategy and copy method, with a plain default config, the fan-out
benchmark's uncapped one and a capped one, and how the CPU grows against N log N (the baseline is the smallest size of the
same strategy and config, measured in the same run).

    .venv/bin/python benchmarks/simulator.py [--sizes 300x30,1020x30,3000x60,9960x60]
        [--strategies broadcast,original] [--configs default,uncapped,capped]
        [--methods auto,ranged]

Every plan simulates both copy methods, as `imagedist plan` does: the configured one, and the
other (async, or ranged for async) in a second process from 1,000 targets on; CPU seconds are
both processes'.

Each plan runs in a fresh process, so its peak resident memory (ru_maxrss) is its own.
To measure an older commit with the same script: check it out in a git worktree and run this
file with ``PYTHONPATH=<worktree>/src``.

A 30 GiB disk half full. "default": the config holds only the fleet (every other setting its
default) and the model's own copy rates (4-45 MB/s). "uncapped": as benchmarks/fanout.py, copies
at a fixed 20 MB/s, no concurrency cap, 3 reads per source, polls every 30 s. "capped": the
default with 32 copies and 16 images at once (the defaults before issue 13: a long job).
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import GIB

from imagedist._config import Config, parse_config
from imagedist._domain.regions import REGIONS
from imagedist._plan import plan_distribution

try:
    from imagedist._backends.sim import SimModel, scenario_config
except ImportError:  # a checkout from before the adapters moved (to measure "before")
    from imagedist._sim import SimModel, scenario_config  # type: ignore[import-not-found,no-redef]


def default_config(subscriptions: int, regions: int) -> Config:
    """The fleet, and every other setting as a config that names nothing else gets it."""
    names = sorted(REGIONS)[:regions]
    return parse_config(
        {
            "backend": "local",
            "staging": {"subscription": "sub-staging", "region": names[0], "account": "imgdstg"},
            "fleet": {
                "subscriptions": [f"sub-{i:04d}" for i in range(subscriptions)],
                "regions": names,
            },
        }
    )


def uncapped_config(subscriptions: int, regions: int) -> Config:
    return scenario_config(
        subscriptions,
        regions,
        copies=100_000,
        images=100_000,
        max_reads_per_source=3,
        poll_interval_seconds=30.0,
        lease_seconds=600.0,
        tier1_copies="auto",  # type: ignore[arg-type]
    )


def measure(
    config_name: str, strategy: str, method: str, subscriptions: int, regions: int
) -> dict[str, float]:
    """One plan in this process (its second simulation, the other copy method, in a process of
    its own where the plan starts one): targets, makespan, real and CPU seconds (both
    processes), peak RSS in MiB (the larger process)."""
    if config_name == "default":
        config, model = default_config(subscriptions, regions), None
    elif config_name == "capped":
        config, model = default_config(subscriptions, regions), None
        capped = config.concurrency.model_copy(update={"copies": 32, "images": 16})
        config = config.model_copy(update={"concurrency": capped})
    else:
        config = uncapped_config(subscriptions, regions)
        model = SimModel(copy_rate_min=20e6, copy_rate_max=20e6)
    fanout = config.fanout.model_copy(update={"copy_method": method})
    config = config.model_copy(update={"fanout": fanout})
    wall, cpu = time.perf_counter(), time.process_time()
    plan = plan_distribution(
        config, disk_bytes=30 * GIB, occupied_bytes=15 * GIB, strategy=strategy, model=model
    )
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    own = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "targets": plan.targets,
        "makespan_h": plan.makespan_seconds / 3600,
        "outcome": plan.outcome == "completed",
        "wall": time.perf_counter() - wall,
        "cpu": time.process_time() - cpu + children.ru_utime + children.ru_stime,
        "rss_mib": max(own.ru_maxrss, children.ru_maxrss) / 1024,
    }


def in_child(
    config_name: str, strategy: str, method: str, size: tuple[int, int]
) -> dict[str, float]:
    subscriptions, regions = max(1, size[0] // size[1]), size[1]
    args = [config_name, strategy, method, str(subscriptions), str(regions)]
    out = subprocess.run(
        [sys.executable, __file__, "--child", *args], check=True, capture_output=True, text=True
    )
    result: dict[str, float] = json.loads(out.stdout)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="300x30,1020x30,3000x60,9960x60")
    parser.add_argument("--strategies", default="broadcast,original")
    parser.add_argument("--configs", default="default,uncapped,capped")
    parser.add_argument("--methods", default="auto,ranged", help="[fanout] copy_method values")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        config_name, strategy, method, subscriptions, regions = args.child
        print(json.dumps(measure(config_name, strategy, method, int(subscriptions), int(regions))))
        return
    sizes = [tuple(int(n) for n in item.split("x")) for item in args.sizes.split(",")]
    print(
        "| config | strategy | copy_method | targets | makespan (h) | real s | CPU s"
        " | CPU ms per target | peak MiB | CPU ÷ first | N log N ÷ first |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for config_name in args.configs.split(","):
        for strategy in args.strategies.split(","):
            for method in args.methods.split(","):
                base: tuple[float, float] | None = None
                for size in sizes:
                    r = in_child(config_name, strategy, method, (size[0], size[1]))
                    n = r["targets"]
                    base = base or (r["cpu"], n * math.log(n))
                    done = "" if r["outcome"] else " (unfinished)"
                    print(
                        f"| {config_name} | {strategy} | {method} | {n:,.0f}"
                        f" | {r['makespan_h']:.2f}{done} | {r['wall']:.1f} | {r['cpu']:.1f}"
                        f" | {r['cpu'] / n * 1000:.2f} | {r['rss_mib']:.0f}"
                        f" | {r['cpu'] / base[0]:.1f} | {n * math.log(n) / base[1]:.1f} |",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
