"""The command line's own start: `imagedist --help`, `status`, `jobs` and `logs`, wall time.

    .venv/bin/python benchmarks/startup.py [--runs 10] [--jobs 3] [--before SRC]

Makes a local-backend config in a temporary folder, runs a few small jobs to completion, then
times each command as a user runs it (a new process each time: the interpreter's start, the
imports, the config, the work and the output) and prints a markdown table of the median of
``--runs`` runs, with the ratio to ``python -c pass`` measured in the same run, and the median
CPU time (user and system) of each. Run it once before timing anything so that the bytecode
caches exist, as they do in an installed package.
The commands that read jobs take a config validated before from the cache folder (a folder of
the run's own); the row "config not remembered" has a cache folder that cannot exist, so that
``status`` validates the config in full every time, as it does on a config's first read.
``--before SRC`` also times the same commands with ``PYTHONPATH=SRC`` (another checkout's
``src``, e.g. the code before a change), in the same turns.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import MIB, imagedist_command, sparse_disk

CONFIG = """\
backend = "local"

[staging]
subscription = "sub-staging"
region = "westeurope"
account = "imgdstaging"

[fleet]
subscriptions = ["sub-alpha", "sub-bravo"]
regions = ["westeurope", "eastus"]
account_prefix = "imgd"

[local]
image_create_seconds = 0.0
"""


Command = tuple[list[str], dict[str, str]]  # the arguments and the environment


def _seconds(command: Command, cwd: Path) -> tuple[float, float]:
    """The command's wall time and CPU time (user and system), in seconds."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command[0], cwd=cwd, env=command[1], check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _medians(commands: dict[str, Command], runs: int, cwd: Path) -> list[tuple[str, float, float]]:
    """The median wall and CPU seconds of each command, run in turns so that a burst of load
    elsewhere on the machine falls on all of them alike. On a shared machine the CPU time
    stretches less than the wall time: a process waiting for a core uses none."""
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
    for _ in range(runs):
        for name, command in commands.items():
            times[name].append(_seconds(command, cwd))
    return [
        (name, statistics.median(w for w, _ in runs), statistics.median(c for _, c in runs))
        for name, runs in times.items()
    ]


def _commands(job: str, before: str | None, folder: Path) -> dict[str, Command]:
    env = _environment(folder)
    imagedist = {
        "imagedist --help": ["--help"],
        "imagedist status JOB": ["status", job],
        "imagedist status JOB --json": ["status", job, "--json"],
        "imagedist jobs": ["jobs"],
        "imagedist logs JOB": ["logs", job],
    }
    commands = {"python -c pass": ([sys.executable, "-c", "pass"], env)}
    commands |= {name: ([*imagedist_command(), *a], env) for name, a in imagedist.items()}
    # A cache folder under a file can be neither read nor made: the config is validated each time.
    unremembered = env | {"XDG_CACHE_HOME": str(folder / "imagedist.toml" / "cache")}
    commands["imagedist status JOB, config not remembered"] = (
        [*imagedist_command(), "status", job],
        unremembered,
    )
    if before is not None:
        old = env | {"PYTHONPATH": before}
        commands |= {
            f"{n} (before)": ([*imagedist_command(), *a], old) for n, a in imagedist.items()
        }
    return commands


def _environment(folder: Path) -> dict[str, str]:
    """This process's environment with a cache folder of the run's own (where the readers
    remember a validated config), so that the run neither uses nor leaves the user's."""
    return dict(os.environ) | {"XDG_CACHE_HOME": str(folder / "cache")}


def _finished_jobs(folder: Path, jobs: int) -> str:
    """Run ``jobs`` small jobs to the end in ``folder``; the id of the newest."""
    (folder / "imagedist.toml").write_text(CONFIG, encoding="utf-8")
    env = _environment(folder)
    disk = sparse_disk(folder / "disk.raw", 8 * MIB, 2 * MIB, extents=2)
    for i in range(jobs):
        command = [
            *imagedist_command(),
            "run",
            str(disk),
            "--image-name",
            f"img{i}",
            "--os-type",
            "linux",
        ]
        subprocess.run(
            command,
            cwd=folder,
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    listed = subprocess.run(
        [*imagedist_command(), "jobs", "--json"],
        cwd=folder,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return str(json.loads(listed.stdout)[0]["job"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=3)
    parser.add_argument("--before", metavar="SRC", help="also time the code in this src folder")
    options = parser.parse_args()
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)  # an installed package has its caches
    folder = Path(tempfile.mkdtemp(prefix="imagedist-startup-"))
    try:
        job = _finished_jobs(folder, options.jobs)
        commands = _commands(job, options.before, folder)
        for command in commands.values():  # warm: bytecode caches, the page cache
            _seconds(command, folder)
        rows = _medians(commands, options.runs, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    base = rows[0][1]
    print(f"median of {options.runs} runs, {options.jobs} finished jobs of 4 targets each\n")
    print("| command | seconds | × python -c pass | CPU seconds |\n|---|---:|---:|---:|")
    for name, seconds, cpu in rows:
        shown, before, _ = name.partition(" (before)")
        label = f"`{shown}`" + (" before" if before else "")
        print(f"| {label} | {seconds:.3f} | {seconds / base:.1f} | {cpu:.3f} |")


if __name__ == "__main__":
    main()
