"""Raw -> fixed VHD: `imagedist vhd convert` against `qemu-img convert -O vpc -o subformat=fixed`.

    .venv/bin/python benchmarks/convert.py [--size-gib 8] [--data-gib 1] [--repeat 3]

Both run as a user runs them, each in its own process: imagedist through its command line (its
start-up included), which fsyncs its output before it exits; qemu-img, which does not, followed
by an fsync of its output file alone (not a machine-wide `sync`, which would also charge it with
whatever else the machine has to write). Prints a markdown table (median of the repeats) of
seconds and ratios to qemu-img.
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import GIB, imagedist_command, sparse_disk, table, timed


def _run(command: list[str]) -> None:
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)


def _run_and_fsync(command: list[str], out: Path) -> None:
    """Run ``command``, then fsync ``out``: its data on the disk, as ours leaves it."""
    _run(command)
    fd = os.open(out, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _ours(raw: Path, out: Path, seconds: list[float]) -> None:
    command = [*imagedist_command(), "vhd", "convert", str(raw), str(out)]
    seconds.append(timed("imagedist vhd convert", functools.partial(_run, command))[0])
    out.unlink()


def _theirs(qemu: str, raw: Path, out: Path, seconds: list[float]) -> None:
    options = ["-f", "raw", "-O", "vpc", "-o", "subformat=fixed,force_size=on"]
    command = [qemu, "convert", *options, str(raw), str(out)]
    # qemu-img returns before its data reaches the disk; ours fsyncs its output.
    seconds.append(timed("qemu-img", functools.partial(_run_and_fsync, command, out))[0])
    out.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-gib", type=int, default=8)
    parser.add_argument("--data-gib", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=3)
    options = parser.parse_args()
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)  # an installed package has its caches
    qemu = shutil.which("qemu-img")
    if qemu is None:
        sys.exit("qemu-img is not installed (apt-get install qemu-utils)")
    with tempfile.TemporaryDirectory(prefix="imagedist-bench-") as folder:
        work = Path(folder)
        raw = sparse_disk(
            work / "disk.raw", options.size_gib * GIB, int(options.data_gib * GIB), extents=8
        )
        ours: list[float] = []
        theirs: list[float] = []
        for i in range(options.repeat):
            runs = [
                functools.partial(_ours, raw, work / f"ours-{i}.vhd", ours),
                functools.partial(_theirs, qemu, raw, work / f"qemu-{i}.vhd", theirs),
            ]
            for run in runs if i % 2 == 0 else reversed(runs):  # neither always runs first
                run()
    rows = [
        ("qemu-img", statistics.median(theirs)),
        ("imagedist", statistics.median(ours)),
    ]
    print()
    print("qemu-img: `qemu-img convert -f raw -O vpc -o subformat=fixed,force_size=on IN OUT`,")
    print("          then an fsync of OUT")
    print("imagedist: `imagedist vhd convert IN OUT`, its start-up included (it fsyncs OUT)\n")
    print(
        table(
            f"raw → fixed VHD, {options.size_gib} GiB disk, {options.data_gib} GiB of data"
            f" (median of {options.repeat})",
            rows,
            rows[0][0],
        )
    )


if __name__ == "__main__":
    main()
