"""`imagedist plan`: predicted duration, egress and API calls, from a simulation; no cloud."""

from __future__ import annotations

import dataclasses
import math
import re

import click
from rich.console import Console
from rich.table import Table

from .._api import Imagedist
from .._exceptions import InvalidInput
from .._vhd import MAX_VIRTUAL_SIZE
from ._common import State, echo_json, friendly_errors, json_option, pass_state

__all__ = ["plan"]

SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?\s*$", re.IGNORECASE)
UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
MIB, GIB = 1024**2, 1024**3
# The fastest upload worth planning for: far beyond any link a golden image goes up over.
MAX_UPLOAD_RATE = 100 * GIB


def parse_size(text: str, option: str = "Size") -> int:
    """``30GiB``, ``30G``, ``512MiB`` or a number of bytes.

    :raises InvalidInput: for anything else, naming ``option``.
    """
    match = SIZE.match(text)
    if not match:
        raise InvalidInput(
            f"{option} {text!r} is not understood; write a positive size like 30GiB or 512MiB."
        )
    value = float(match.group(1)) * UNITS[(match.group(2) or "").lower()[:1]]
    # Digits alone can still overflow a float: such a size is out of any range.
    return int(value) if math.isfinite(value) else -1


def _amount(size: int) -> str:
    """``4095 GiB``: the largest unit that divides ``size`` exactly."""
    for unit, factor in (("TiB", 1024**4), ("GiB", GIB), ("MiB", MIB), ("KiB", 1024)):
        if size % factor == 0:
            return f"{size // factor} {unit}"
    return f"{size} bytes"


def _within(size: int, text: str, option: str, low: int, high: int, what: str) -> int:
    """``size`` if ``low <= size <= high``; else one sentence naming the bounds."""
    if not low <= size <= high:
        raise InvalidInput(
            f"{option} {text!r} is out of range: {what} must be between {_amount(low)} and"
            f" {_amount(high)}."
        )
    return size


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h ({seconds:,.0f} s)"


@click.command()
@click.option("--disk-size", required=True, help="The disk's virtual size, e.g. 30GiB.")
@click.option("--occupied", help="Bytes of data in it, e.g. 15GiB (default: half the disk).")
@click.option(
    "--strategy",
    type=click.Choice(["broadcast", "original"]),
    help="Fan-out strategy (default: the config's).",
)
@click.option(
    "--upload-rate",
    default="60MiB",
    show_default=True,
    help="Upload speed per second, to price the upload.",
)
@click.option(
    "--target",
    "publish",
    multiple=True,
    type=click.Choice(["images", "gallery"]),
    help="Plan managed images, a gallery version, or both (repeat). Default: [publish] to.",
)
@click.option("--seed", default=0, show_default=True, help="The simulation's random seed.")
@json_option
@pass_state
@friendly_errors
def plan(
    state: State,
    disk_size: str,
    occupied: str | None,
    strategy: str | None,
    upload_rate: str,
    publish: tuple[str, ...],
    seed: int,
    as_json: bool,
) -> None:
    """Predict a distribution over the config's fleet before moving a byte.

    Runs the real engine on a simulated Azure (PERF-MODEL figures: copy rates,
    per-blob read bandwidth, account egress, image creation time, ARM throttling)
    in virtual time. Prints the makespan and per-phase times, copies, cross-region
    GB, egress cost at list prices, and ARM calls. Touches no cloud.
    """
    size = _within(
        parse_size(disk_size, "--disk-size"), disk_size, "--disk-size", MIB, MAX_VIRTUAL_SIZE,
        "a disk Azure makes an image from",
    )  # fmt: skip
    data = parse_size(occupied, "--occupied") if occupied else size // 2
    if not 0 < data <= size:
        raise InvalidInput(
            f"--occupied {occupied!r} must be more than 0 and at most --disk-size ({disk_size})."
        )
    rate = _within(
        parse_size(upload_rate, "--upload-rate"), upload_rate, "--upload-rate", 1024,
        MAX_UPLOAD_RATE, "the upload speed per second",
    )  # fmt: skip
    result = Imagedist(state.config).plan(
        disk_bytes=size,
        occupied_bytes=data,
        strategy=strategy,
        upload_rate=rate,
        seed=seed,
        publish=publish or None,
    )
    if as_json:
        legs = [dataclasses.asdict(leg) for leg in result.critical_path]
        methods = {name: dataclasses.asdict(cost) for name, cost in result.copy_methods.items()}
        echo_json({**result.__dict__, "critical_path": legs, "copy_methods": methods})
        return
    table = Table.grid(padding=(0, 2))
    if "images" in result.publish:
        table.add_row(
            "strategy",
            f"{result.strategy} ({result.targets} targets in"
            f" {result.regions} regions; outcome {result.outcome})",
        )
    else:
        table.add_row("gallery", f"one version, replicated by Azure (outcome {result.outcome})")
    table.add_row("makespan", _hours(result.makespan_seconds))
    images = "images" in result.publish
    for phase, end in result.phases.items():
        if images or phase == "upload":
            table.add_row(f"  {phase} done at", _hours(end))
    if result.gallery_seconds is not None:
        table.add_row("  gallery replicated at", _hours(result.gallery_seconds))
    if images:
        table.add_row("copies", f"{result.copies} ({result.cross_region_copies} cross-region)")
        table.add_row("cross-region data", f"{result.cross_region_gb:,.1f} GB")
        table.add_row("egress cost", f"${result.egress_cost:,.2f} at list prices")
    if "gallery" in result.publish:
        table.add_row(
            "gallery replication",
            f"{result.gallery_cross_region_gb:,.1f} GB cross-region,"
            f" ${result.gallery_egress_cost:,.2f} egress at list prices",
        )
    table.add_row(
        "ARM calls",
        f"{result.arm_writes:,} writes, {result.arm_reads:,} reads"
        f" ({result.arm_throttled} throttled)",
    )
    if result.bound_by:
        table.add_row("bound by", result.bound_by.removeprefix("bound by "))
    for method, cost in result.copy_methods.items():
        chosen = " (configured)" if method == result.copy_method else ""
        table.add_row(
            f"copy_method {method}{chosen}",
            f"{_hours(cost.makespan_seconds)}; {cost.blob_calls:,} blob requests"
            f" ({cost.range_requests:,} range copies), ~{cost.worker_cpu_seconds:,.0f} s of"
            " worker CPU",
        )
    Console().print(table)
