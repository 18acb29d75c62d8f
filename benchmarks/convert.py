"""Raw -> fixed VHD: imagedist's converter against `qemu-img convert -O vpc -o subformat=fixed`.

    .venv/bin/python benchmarks/convert.py [--size-gib 8] [--data-gib 1] [--repeat 3]

Prints a markdown table (median of the repeats) of seconds and ratios to qemu-img.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import GIB, sparse_disk, table, timed

from imagedist._vhd import convert_to_fixed_vhd


def _run_and_sync(command: list[str]) -> None:
    subprocess.run(command, check=True)
    subprocess.run(["sync"], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-gib", type=int, default=8)
    parser.add_argument("--data-gib", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=3)
    options = parser.parse_args()
    qemu = shutil.which("qemu-img")
    if qemu is None:
        sys.exit("qemu-img is not installed (apt-get install qemu-utils)")
    with tempfile.TemporaryDirectory(prefix="imagedist-bench-") as folder:
        work = Path(folder)
        raw = sparse_disk(
            work / "disk.raw", options.size_gib * GIB, int(options.data_gib * GIB), extents=8
        )
        ours, theirs = [], []
        for i in range(options.repeat):
            out = work / f"ours-{i}.vhd"
            ours.append(
                timed("imagedist", lambda o=out: convert_to_fixed_vhd(raw, o, force=True))[0]
            )
            out.unlink()
            out = work / f"qemu-{i}.vhd"
            command = [
                qemu,
                "convert",
                "-f",
                "raw",
                "-O",
                "vpc",
                "-o",
                "subformat=fixed,force_size=on",
                str(raw),
                str(out),
            ]
            # qemu-img returns before its data reaches the disk; sync for a fair comparison,
            # since ours fsyncs.
            theirs.append(timed("qemu-img", lambda c=command: _run_and_sync(c))[0])
            out.unlink()
    rows = [
        ("qemu-img convert -O vpc (fixed) + sync", statistics.median(theirs)),
        ("imagedist vhd convert", statistics.median(ours)),
    ]
    print()
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
