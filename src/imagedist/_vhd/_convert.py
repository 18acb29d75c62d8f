"""Converting any disk image to a fixed VHD that Azure boots.

Raw files and VHDs are converted natively; qcow2, VMDK and VHDX go through
``qemu-img convert -O raw`` straight into the output file, which then gets its footer.
The output is written to a hidden temporary file next to ``OUT`` and renamed at the end:
on failure nothing is left behind.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .._exceptions import InvalidInput
from ._inspect import FOREIGN, Detected, detect, open_detected, quote
from ._validate import check_size_limit
from ._writer import finish_fixed_vhd, round_up_mib, write_fixed_vhd

__all__ = ["ConvertResult", "convert_to_fixed_vhd", "qemu_img_path"]

INSTALL_QEMU = (
    "install it with `apt-get install qemu-utils` (Debian, Ubuntu) or `brew install qemu` (macOS)"
)


@dataclass(frozen=True)
class ConvertResult:
    """A finished conversion: what it read, what it wrote."""

    source: str
    source_format: str
    source_disk_type: str | None
    output: str
    virtual_size: int
    data_bytes: int  # bytes stored in the output (the rest are holes)


def qemu_img_path() -> str | None:
    return shutil.which("qemu-img")


@contextlib.contextmanager
def _staged(out: Path) -> Iterator[Path]:
    """A temporary file next to ``out``: renamed to ``out`` on success, removed on failure."""
    fd, name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".part", dir=out.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _sync_folder(out.parent)


def _sync_folder(folder: Path) -> None:
    """Make the rename durable (where folders can be opened, i.e. not on Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _check_paths(src: Path, out: Path, force: bool) -> None:
    where = quote(out)
    if out.is_dir():
        raise InvalidInput(f"{where} is a directory; give the path of the VHD file to write.")
    if not out.parent.is_dir():
        raise InvalidInput(f"The folder of {where} does not exist; create it first.")
    if out.exists() and src.exists() and os.path.samefile(src, out):
        raise InvalidInput(f"{where} is the input file itself; give another output path.")
    if out.exists() and not force:
        raise InvalidInput(f"{where} already exists; pass --force to overwrite it.")


def _run_qemu_img(found: Detected, tmp: Path) -> None:
    where = quote(found.path)
    qemu_img = qemu_img_path()
    if qemu_img is None:
        raise InvalidInput(
            f"{where} is a {found.format} image, and converting it needs qemu-img, which is not on"
            f" PATH; {INSTALL_QEMU}."
        )
    command = [
        qemu_img,
        "convert",
        "-q",
        "-f",
        found.format,
        "-O",
        "raw",
        str(found.path),
        str(tmp),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or [f"exit status {done.returncode}"]
        reason = re.sub(r"^(qemu-img: )?(Could not open '.*': )?", "", lines[-1]).rstrip(".")
        raise InvalidInput(
            f"qemu-img could not convert {where} ({reason}); check that it is a valid"
            f" {found.format} image."
        )


def _convert_foreign(found: Detected, tmp: Path) -> tuple[int, int]:
    check_size_limit(round_up_mib(found.virtual_size), quote(found.path))
    _run_qemu_img(found, tmp)
    fd = os.open(tmp, os.O_RDWR)
    try:
        size = finish_fixed_vhd(fd, os.fstat(fd).st_size, quote(found.path))
        os.fsync(fd)
        stored = os.fstat(fd).st_blocks * 512
    finally:
        os.close(fd)
    return size, stored


def convert_to_fixed_vhd(src: Path, out: Path, force: bool = False) -> ConvertResult:
    """Convert ``src`` (raw, VHD, qcow2, VMDK, VHDX) to a fixed VHD at ``out``.

    Raises InvalidInput for a damaged or unusable input, an existing ``out`` without
    ``force``, or a foreign format without qemu-img.
    """
    _check_paths(src, out, force)
    found = detect(src)
    disk_type: str | None = None
    try:
        if found.format in FOREIGN:
            with _staged(out) as tmp:
                size, stored = _convert_foreign(found, tmp)
        else:
            with open_detected(found) as disk, _staged(out) as tmp:
                disk_type = disk.disk_type
                result = write_fixed_vhd(disk, tmp)
                size, stored = result.virtual_size, result.data_bytes
    except OSError as exc:
        raise InvalidInput(
            f"Converting {quote(src)} to {quote(out)} failed ({exc.strerror or exc}); check the"
            " free space and permissions of the output folder."
        ) from exc
    return ConvertResult(str(src), found.format, disk_type, str(out), size, stored)
