"""`imagedist vhd`: inspect a disk image and convert it to the fixed VHD Azure boots."""

from __future__ import annotations

from pathlib import Path

import click

from .._api import Imagedist
from .._vhd import human
from ._common import echo_json, friendly_errors, json_option

__all__ = ["vhd"]

FILE = click.Path(dir_okay=True, path_type=Path)


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
    inspection = Imagedist.inspect_disk(file)
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


@vhd.command("convert")
@click.argument("source", metavar="IN", type=FILE)
@click.argument("out", metavar="OUT", type=FILE)
@click.option("--force", is_flag=True, help="Overwrite OUT if it exists.")
@friendly_errors
def convert_cmd(source: Path, out: Path, force: bool) -> None:
    """Convert IN (raw, VHD, VHDX, qcow2 or VMDK) to a fixed VHD at OUT, rounded up to a whole MiB.

    OUT is sparse: only the data is written. VHDX, qcow2 and VMDK need qemu-img.
    """
    result = Imagedist.convert_disk(source, out, force=force)
    kind = result.source_format + (f" {result.source_disk_type}" if result.source_disk_type else "")
    click.echo(
        f"Wrote {result.output}: fixed VHD of {_size(result.virtual_size)} from {kind}"
        f" {result.source}, {human(result.data_bytes)} of data."
    )
