"""Recognising a disk image by its magic, opening it, and judging it for Azure."""

from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._exceptions import InvalidInput
from .._files import NotARegularFile, open_regular_file
from ._footer import COOKIE, DISK_DIFFERENCING, DISK_FIXED, FOOTER_SIZE, SECTOR, VERSION, Footer
from ._foreign import external_reference, read_vhdx_metadata
from ._reader import DiskImage, DynamicVhd, FixedVhd, RawDisk
from ._validate import check_fixed, check_footer, check_size_limit, read_dynamic

__all__ = [
    "Detected",
    "FileIdentity",
    "Inspection",
    "detect",
    "file_identity",
    "inspect_image",
    "open_detected",
    "quote",
]

MiB = 1024 * 1024
FOREIGN = ("qcow2", "vmdk", "vhdx")
CONVERT = "convert it with `imagedist vhd convert`"


def quote(path: Path) -> str:
    return repr(str(path))


FileIdentity = tuple[int, int, int, int, int]  # device, inode, size, mtime_ns, ctime_ns


def file_identity(path: Path) -> FileIdentity | None:
    """What changes whenever the file is rewritten or replaced; None if it is gone."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


@dataclass(frozen=True)
class Detected:
    """What the magic says: the format, the file's size, and the footer or header-given size."""

    path: Path
    format: str  # raw, vhd, vhdx, qcow2, vmdk
    file_size: int
    footer: Footer | None = None
    virtual_size: int = 0  # for qcow2 and vmdk, from their headers; 0 when unknown


@dataclass(frozen=True)
class Inspection:
    """A disk image's format, size and allocation, and whether Azure can boot it as it is."""

    path: str
    format: str
    disk_type: str | None
    virtual_size: int
    occupied_bytes: int
    problems: tuple[str, ...] = field(default=())

    @property
    def whole_mib(self) -> bool:
        return self.virtual_size % MiB == 0

    @property
    def azure_ready(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "format": self.format,
            "disk_type": self.disk_type,
            "virtual_size": self.virtual_size,
            "whole_mib": self.whole_mib,
            "occupied_bytes": self.occupied_bytes,
            "azure_ready": self.azure_ready,
            "problems": list(self.problems),
        }


def _open_regular(path: Path) -> int:
    """A read-only descriptor of ``path``, which must be a regular file.

    Opened without blocking, so a FIFO cannot hang us; refused, like a device, since a disk
    image is a file whose size and holes mean something.
    """
    where = quote(path)
    if not path.exists():
        raise InvalidInput(f"File {where} does not exist; give the path of a disk image.")
    if path.is_dir():
        raise InvalidInput(f"{where} is a directory; give the path of a disk image file.")
    try:
        return open_regular_file(path)
    except NotARegularFile:
        raise InvalidInput(
            f"{where} is not a regular file (a pipe, socket or device); copy the disk into an"
            " image file first and give its path."
        ) from None
    except OSError as exc:
        raise InvalidInput(
            f"{where} cannot be read ({exc.strerror}); check its permissions."
        ) from exc


def _read_ends(path: Path) -> tuple[int, bytes, bytes]:
    fd = _open_regular(path)
    try:
        size = os.fstat(fd).st_size
        head = os.pread(fd, 1024, 0)
        tail = os.pread(fd, 1024, max(size - 1024, 0))
    except OSError as exc:
        raise InvalidInput(
            f"{quote(path)} cannot be read ({exc.strerror}); check its permissions."
        ) from exc
    finally:
        os.close(fd)
    return size, head, tail


def _vmdk_size(head: bytes, path: Path) -> int:
    if head[:4] == b"KDMV":  # capacity: a 64-bit sector count after magic, version, flags
        return int(struct.unpack_from("<Q", head, 12)[0]) * SECTOR if len(head) >= 20 else 0
    if head[:4] == b"COWD":  # the older sparse format counts sectors in 32 bits
        return int(struct.unpack_from("<I", head, 12)[0]) * SECTOR if len(head) >= 16 else 0
    with path.open("rb") as file:
        text = file.read(64 * 1024).decode("utf-8", "replace")
    # At most 19 digits, as a 64-bit sector count has: a longer run is no size (and would be slow
    # and refused to turn into an int).
    extents = re.findall(r"^\s*(?:RW|RDONLY|NOACCESS)\s+(\d{1,19})(?!\d)", text, re.MULTILINE)
    return sum(int(sectors) for sectors in extents) * SECTOR


def _vhdx_size(path: Path) -> int:
    try:
        return read_vhdx_metadata(path).virtual_size
    except ValueError:
        return 0  # unknown: inspect_image says why


def _foreign(path: Path, size: int, head: bytes) -> Detected | None:
    if head.startswith(b"vhdxfile"):
        return Detected(path, "vhdx", size, virtual_size=_vhdx_size(path))
    if head.startswith(b"QFI\xfb"):
        virtual = int.from_bytes(head[24:32], "big") if len(head) >= 32 else 0
        return Detected(path, "qcow2", size, virtual_size=virtual)
    if head[:4] in (b"KDMV", b"COWD") or head.lstrip().startswith(b"# Disk DescriptorFile"):
        return Detected(path, "vmdk", size, virtual_size=_vmdk_size(head, path))
    return None


def _looks_like_footer(sector: bytes) -> bool:
    """A last sector with a footer's version and disk type but perhaps a damaged cookie."""
    footer = Footer.unpack(sector)
    return footer.version == VERSION and DISK_FIXED <= footer.disk_type <= DISK_DIFFERENCING


def detect(path: Path) -> Detected:
    """Recognise ``path`` by its magic; InvalidInput for an empty, cut or damaged file."""
    size, head, tail = _read_ends(path)
    where = quote(path)
    if size == 0:
        raise InvalidInput(f"{where} is empty (0 bytes); give the path of a disk image.")
    foreign = _foreign(path, size, head)
    if foreign is not None:
        return foreign
    if size % SECTOR:
        cut = tail.rfind(COOKIE)
        if cut >= 0 and len(tail) - cut < FOOTER_SIZE:
            raise InvalidInput(
                f"{where} ends with a VHD footer cut short ({len(tail) - cut} of 512 bytes); the"
                " file is truncated: copy it again from its source."
            )
        raise InvalidInput(
            f"{where} is {size} bytes, not a whole number of 512-byte sectors, so it is not a raw"
            " disk image; check that it was copied completely."
        )
    last = tail[-FOOTER_SIZE:]
    if last.startswith(COOKIE) or _looks_like_footer(last):
        return Detected(path, "vhd", size, footer=check_footer(last, where))
    if head.startswith(COOKIE):
        raise InvalidInput(
            f"{where} starts with a VHD footer copy but has no footer at its end; the file is"
            " truncated: copy it again from its source."
        )
    check_size_limit(size, where)
    return Detected(path, "raw", size, virtual_size=size)


def open_detected(found: Detected) -> DiskImage:
    """A reader for a raw file or a fixed or dynamic VHD, after checking its structures."""
    where = quote(found.path)
    if found.format in FOREIGN:
        raise InvalidInput(
            f"{where} is a {found.format} image, which imagedist cannot read itself; {CONVERT}"
            " (it uses qemu-img) to a fixed VHD first."
        )
    if found.footer is None:
        return RawDisk(found.path, found.file_size)
    if found.footer.disk_type == DISK_FIXED:
        check_fixed(found.footer, found.file_size, where)
        return FixedVhd(found.path, found.footer)
    with found.path.open("rb") as file:
        header, bat = read_dynamic(file.fileno(), found.footer, found.file_size, where)
    return DynamicVhd(found.path, found.footer, header, bat)


def _problems(kind: str, virtual_size: int) -> tuple[str, ...]:
    problems = []
    if kind != "fixed VHD":
        problems.append(f"It is a {kind}, and Azure boots only fixed VHDs: {CONVERT}.")
    if virtual_size % MiB:
        problems.append(
            f"Its virtual size of {virtual_size} bytes is not a whole number of MiB, as Azure"
            f" requires: {CONVERT} to round it up."
        )
    return tuple(problems)


def _problems_of_foreign(found: Detected) -> tuple[str, ...]:
    problems = _problems(f"{found.format} image", found.virtual_size)
    reference = external_reference(found.path, found.format)
    if reference is not None:
        problems = (
            f"It names {reference}, and imagedist reads nothing outside the file it is given:"
            " merge the image into one self-contained file first.",
            *problems,
        )
    return problems


def _check_vhdx(path: Path) -> None:
    try:
        read_vhdx_metadata(path)
    except ValueError as exc:
        raise InvalidInput(
            f"{quote(path)} is a VHDX image whose headers cannot be read ({exc}); the file is"
            " corrupt: copy it again from its source."
        ) from None


def inspect_image(path: Path) -> Inspection:
    """Inspect ``path``; InvalidInput if it is unreadable, damaged or too large for Azure.

    qcow2, VMDK and VHDX images are inspected from their headers alone (no qemu-img needed);
    one that names another file (a backing file, an extent, a parent) has that as a problem.
    """
    found = detect(path)
    if found.format == "vhdx":
        _check_vhdx(path)
    if found.format in FOREIGN:
        check_size_limit(found.virtual_size, quote(path))
        occupied = os.stat(path).st_blocks * 512
        return Inspection(str(path), found.format, None, found.virtual_size, occupied,
                          _problems_of_foreign(found))  # fmt: skip
    with open_detected(found) as disk:
        kind = "raw image" if disk.disk_type is None else f"{disk.disk_type} VHD"
        return Inspection(
            str(path), disk.format, disk.disk_type, disk.virtual_size, disk.allocated_bytes(),
            _problems(kind, disk.virtual_size),
        )  # fmt: skip
