"""Shared by the benchmark scripts: sample disks, timing, and the results table."""

from __future__ import annotations

import os
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
MIB = 1024 * 1024
GIB = 1024 * MIB


def sparse_disk(path: Path, size: int, data: int, extents: int, seed: int = 1) -> Path:
    """A sparse raw disk of ``size`` bytes holding ``data`` random bytes in ``extents`` places."""
    rng = random.Random(seed)
    piece = data // extents
    slot = size // extents
    with path.open("wb") as file:
        file.truncate(size)
        for i in range(extents):
            start = i * slot + rng.randrange(0, slot - piece, MIB)
            file.seek(start)
            for _ in range(piece // (64 * MIB)):
                file.write(os.urandom(64 * MIB))
            file.write(os.urandom(piece % (64 * MIB)))
    return path


def imagedist_command() -> list[str]:
    """`imagedist` as a user runs it: the installed entry point beside this Python, else
    `python -m imagedist`."""
    script = Path(sys.executable).with_name("imagedist")
    return [str(script)] if script.exists() else [sys.executable, "-m", "imagedist"]


def timed(label: str, fn: Callable[[], T]) -> tuple[float, T]:
    print(f"  running: {label} ...", flush=True)
    start = time.perf_counter()
    result = fn()
    elapsed = time.perf_counter() - start
    print(f"  {label}: {elapsed:.2f} s", flush=True)
    return elapsed, result


def table(title: str, rows: list[tuple[str, float]], baseline: str) -> str:
    """Markdown rows of seconds and the ratio to ``baseline`` (measured in the same run)."""
    base = dict(rows)[baseline]
    lines = [f"### {title}", "", "| method | seconds | × " + baseline + " |", "|---|---:|---:|"]
    lines += [f"| {name} | {secs:.2f} | {secs / base:.2f} |" for name, secs in rows]
    return "\n".join(lines)


def drop_caches_hint() -> None:
    os.sync()
