"""Disk images for Azure: recognise, inspect, read and convert them to fixed VHDs.

Azure boots only fixed VHDs (the disk's bytes followed by a 512-byte footer) whose virtual
size is a whole number of MiB and at most 4095 GiB. This package reads raw files and fixed and
dynamic VHDs itself, recognises VHDX, qcow2 and VMDK by their magic, and converts those with
qemu-img, refusing any image that names another file (a backing file, an external extent, a
parent): nothing outside the file given is ever read.

For the upload path::

    inspection = validate_for_azure(path)     # InvalidInput unless Azure can boot it as is
    with open_disk(path) as disk:
        for offset, length in disk.iter_data_extents():
            upload(offset, disk.read(offset, length))
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .._exceptions import InvalidInput
from .._lazy import lazy_names
from ._validate import MAX_VIRTUAL_SIZE, fixed_footer_problem, human

if TYPE_CHECKING:
    from ._convert import ConvertResult, check_self_contained, convert_to_fixed_vhd, qemu_img_path
    from ._firmware import Firmware, boot_firmware
    from ._inspect import Inspection, detect, inspect_image
    from ._prepare import PreparedImage, converted_path, prepare_image
    from ._reader import DiskImage

__all__ = [
    "MAX_VIRTUAL_SIZE",
    "ConvertResult",
    "DiskImage",
    "Firmware",
    "Inspection",
    "PreparedImage",
    "boot_firmware",
    "check_self_contained",
    "convert_to_fixed_vhd",
    "converted_path",
    "detect",
    "disk_firmware",
    "fixed_footer_problem",
    "human",
    "inspect_image",
    "open_disk",
    "prepare_image",
    "qemu_img_path",
    "validate_for_azure",
]


# Where the other public names live, imported on first use: checking a footer (the engine's
# verification, a command's size limit) needs none of the readers, converters or qemu-img's
# helpers, and `imagedist status` should not load them (issue 13).
_HOME = {
    **dict.fromkeys(
        ["ConvertResult", "check_self_contained", "convert_to_fixed_vhd", "qemu_img_path"],
        "._convert",
    ),
    **dict.fromkeys(["Firmware", "boot_firmware"], "._firmware"),
    **dict.fromkeys(["Inspection", "detect", "inspect_image"], "._inspect"),
    **dict.fromkeys(["PreparedImage", "converted_path", "prepare_image"], "._prepare"),
    "DiskImage": "._reader",
}


__getattr__ = lazy_names(__name__, _HOME, globals())


def open_disk(path: str | Path) -> DiskImage:
    """Open a raw file or a fixed or dynamic VHD for reading (use it as a context manager).

    Raises InvalidInput for a damaged file and for formats it cannot read (qcow2, VMDK, VHDX).
    """
    from ._inspect import detect, open_detected

    return open_detected(detect(Path(path)))


def validate_for_azure(path: str | Path) -> Inspection:
    """The inspection of ``path`` if Azure can boot it as is; InvalidInput saying why not otherwise."""
    from ._inspect import inspect_image, quote

    inspection = inspect_image(Path(path))
    if not inspection.azure_ready:
        reasons = "; ".join(p[0].lower() + p[1:].rstrip(".") for p in inspection.problems)
        raise InvalidInput(f"{quote(Path(path))} is not ready for Azure: {reasons}.")
    return inspection


def disk_firmware(path: str | Path) -> Firmware | None:
    """The firmware the disk at ``path`` boots with, from its partition table; ``None`` for a
    format read only once converted (VHDX, qcow2, VMDK) or a file that cannot be read (its
    validation says why). Blocking."""
    from ._firmware import boot_firmware

    try:
        disk = open_disk(path)
    except InvalidInput:
        return None
    with disk:
        return boot_firmware(disk.read, disk.virtual_size)
