"""`imagedist vhd`: inspect a disk image and convert it to the fixed VHD Azure boots."""

from __future__ import annotations

from pathlib import Path

import click

from .._exceptions import InvalidInput
from .._files import check_regular_file, kind_of
from .._vhd import convert_to_fixed_vhd, inspect_image
from .._vhd._validate import human
from ._common import echo_json, friendly_errors, json_option

__all__ = ["vhd"]

FILE = click.Path(dir_okay=True, path_type=Path)
DISK_FIX = "give the path of a disk image file"


@click.group()
def vhd() -> None:
    """Disk images: check that Azure can boot one, convert one to a fixed VHD."""


def _size(size: int) -> str:
    return f"{size} ({human(size)})"


@vhd.command("inspect")
@click.argument("file", type=FILE)
@json_option
@friendly_errors
def inspect_cmd(file: Path, as_json: bool) -> None:
    """Show FILE's format, virtual size and allocation, and whether Azure can boot it.

    Exits 0 when FILE could be inspected, ready or not (the verdict says which), and 2 when
    it is unreadable or damaged.
    """
    check_regular_file(file, DISK_FIX)  # before any open: a FIFO would block it
    inspection = inspect_image(file)
    if as_json:
        echo_json(inspection.to_dict())
        return
    rows = [
        ("file", str(file)),
        ("format", inspection.format),
        ("disk type", inspection.disk_type or "-"),
        ("virtual size", _size(inspection.virtual_size)),
        ("whole MiB", "yes" if inspection.whole_mib else "no"),
        ("occupied", _size(inspection.occupied_bytes)),
        ("azure ready", "yes" if inspection.azure_ready else "no"),
        *(("problem", problem) for problem in inspection.problems),
    ]
    for label, value in rows:
        click.echo(f"{label:<13} {value}")


def _check_output(out: Path) -> None:
    """OUT may be new or a regular file: writing to a FIFO or a device blocks or goes nowhere."""
    try:
        kind = kind_of(out.stat().st_mode)
    except OSError:
        return  # does not exist yet (or cannot be looked at: the conversion will say why)
    if kind is not None:
        raise InvalidInput(
            f"{str(out)!r} is {kind}, not a regular file; give a new file's path as OUT."
        )


@vhd.command("convert")
@click.argument("source", metavar="IN", type=FILE)
@click.argument("out", metavar="OUT", type=FILE)
@click.option("--force", is_flag=True, help="Overwrite OUT if it exists.")
@friendly_errors
def convert_cmd(source: Path, out: Path, force: bool) -> None:
    """Convert IN (raw, VHD, VHDX, qcow2 or VMDK) to a fixed VHD at OUT, rounded up to a whole MiB.

    OUT is sparse: only the data is written. VHDX, qcow2 and VMDK need qemu-img.
    """
    check_regular_file(source, DISK_FIX)
    _check_output(out)
    result = convert_to_fixed_vhd(source, out, force=force)
    kind = result.source_format + (f" {result.source_disk_type}" if result.source_disk_type else "")
    click.echo(
        f"Wrote {result.output}: fixed VHD of {_size(result.virtual_size)} from {kind}"
        f" {result.source}, {human(result.data_bytes)} of data."
    )
