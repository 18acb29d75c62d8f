"""qcow2, VMDK and VHDX headers, read natively: every other file an image names, and a VHDX's size.

qemu-img follows the names an image holds on its own: converting a qcow2 whose backing file is
``/etc/shadow`` copies that file into the disk we upload. imagedist reads nothing outside the
file it is given, so an image naming any other file (a backing file, an external data file, a
VMDK extent, a parent) is refused before qemu-img ever opens it. The parsing here is meant to be
more suspicious than qemu's: whatever qemu could take for a reference to a file counts as one.
"""

from __future__ import annotations

import os
import re
import struct
import uuid
from dataclasses import dataclass
from pathlib import Path

__all__ = ["VhdxMetadata", "external_reference", "read_at", "read_vhdx_metadata"]

KiB, MiB = 1024, 1024 * 1024

# qcow2 (and qcow v1, which shares the magic and the backing-file fields)
QCOW2_INCOMPAT_DATA_FILE = 1 << 2
QCOW2_EXT_DATA_FILE = 0x4441_5441  # "DATA": the external data file's name
QCOW2_NAME_MAX = 1023  # qemu reads at most this much of a backing file's name

# VMDK: qemu reads a text descriptor's first MiB, and looks for a parent in DESC_SIZE bytes at
# offset 0 (text) or 0x200 (the descriptor embedded in a sparse file), whatever its header says.
VMDK_DESCRIPTOR_LIMIT = MiB
VMDK_EMBEDDED_AT, VMDK_DESC_SIZE = 0x200, 20 * 512
VMDK_PARENT = b"parentFileNameHint"
# Where qemu could start parsing an extent line ("RW 2048 FLAT "name" 0"): the first character
# that is not white space after each line start (sscanf skips white space, newlines included).
_LINE_STARTS = re.compile(rb"^\s*(?=\S)", re.MULTILINE)
# Any access word, a sector count, any type (or none), then a quoted name, with or without its
# closing quote (qemu's sscanf takes the name either way): a superset of what qemu accepts. The
# quantifiers are possessive so that no line, however long, makes the match backtrack.
_EXTENT = re.compile(rb'\S++\s++[+-]?\d++\s*+[^\s"]*+\s*+"([^"\r\n]*+)')
_PARENT_NAME = re.compile(rb'parentFileNameHint\s*=\s*"([^"\r\n]*)')

# VHDX: two region tables, each pointing at the metadata region, whose items we look up by GUID
VHDX_REGION_TABLES = (192 * KiB, 256 * KiB)
VHDX_MAX_ENTRIES = 2047
VHDX_METADATA_REGION = uuid.UUID("8b7ca206-4790-4b9a-b8fe-575f050f886e").bytes_le
VHDX_FILE_PARAMETERS = uuid.UUID("caa16737-fa36-4d43-b3b6-33f0aa44e76b").bytes_le
VHDX_VIRTUAL_DISK_SIZE = uuid.UUID("2fa54224-cd1b-4876-b211-5dbed83bf4b8").bytes_le
VHDX_PARENT_LOCATOR = uuid.UUID("a8d35f2d-b30b-454d-abf7-d3d84834ab0c").bytes_le
VHDX_HAS_PARENT = 1 << 1  # in the file parameters' flags


def read_at(path: Path, offset: int, length: int) -> bytes:
    """Up to ``length`` bytes at ``offset`` (fewer at the end of the file, none past it: offsets
    come from the image's own headers, which may say anything)."""
    with path.open("rb", buffering=0) as file:
        size = os.fstat(file.fileno()).st_size
        if offset < 0 or offset >= size or length <= 0:
            return b""
        return os.pread(file.fileno(), min(length, size - offset), offset)


def _name(raw: bytes) -> str:
    """A file name from an image, fit for an error message (quoted, escaped, at most 200 chars)."""
    text = raw.split(b"\0", 1)[0].decode("utf-8", "replace")
    return repr(text if len(text) <= 200 else text[:200] + "...")


def external_reference(path: Path, fmt: str) -> str | None:
    """What other file ``path`` (a ``fmt`` image) names, as a phrase such as ``"a backing file
    ('/x')"``, or None when the image is self-contained.

    Raw files and VHDs are read by imagedist itself, which follows no reference (differencing
    VHDs, the only VHDs with a parent, are refused when their footer is read).
    """
    if fmt == "qcow2":
        return _qcow2_reference(path)
    if fmt == "vmdk":
        return _vmdk_reference(path)
    if fmt == "vhdx":
        return _vhdx_reference(path)
    return None


# qcow2


def _qcow2_reference(path: Path) -> str | None:
    head = read_at(path, 0, 112)
    if len(head) < 20:
        return None  # too short to name anything: qemu-img refuses it as broken
    backing_offset, backing_size = struct.unpack_from(">QI", head, 8)
    if backing_offset or backing_size:
        raw = read_at(path, backing_offset, min(backing_size, QCOW2_NAME_MAX))
        return f"a backing file ({_name(raw)})" if raw.strip(b"\0") else "a backing file"
    version = struct.unpack_from(">I", head, 4)[0]
    # Feature bits exist from version 3 on; in version 2 the header extensions start there.
    incompatible = struct.unpack_from(">Q", head, 72)[0] if version >= 3 and len(head) >= 80 else 0
    data_file = _qcow2_data_file_name(path, head, version)
    if incompatible & QCOW2_INCOMPAT_DATA_FILE or data_file is not None:
        return "an external data file" + (f" ({_name(data_file)})" if data_file else "")
    return None


def _qcow2_data_file_name(path: Path, head: bytes, version: int) -> bytes | None:
    """The name in the "data file" header extension, if there is one.

    The extensions follow the header (72 bytes in version 2, ``header_length`` in 3) up to the
    end of the first cluster, each a type, a length and the data padded to 8 bytes.
    """
    if len(head) < 24:
        return None
    cluster_bits = min(max(struct.unpack_from(">I", head, 20)[0], 9), 21)
    start = struct.unpack_from(">I", head, 100)[0] if version >= 3 and len(head) >= 104 else 72
    area = read_at(path, 0, 1 << cluster_bits)
    at = start
    while at >= 0 and at + 8 <= len(area):
        kind, length = struct.unpack_from(">II", area, at)
        if kind == 0:
            return None
        if kind == QCOW2_EXT_DATA_FILE:
            return area[at + 8 : at + 8 + length]
        at += 8 + -(-length // 8) * 8
    return None


# VMDK


def _vmdk_reference(path: Path) -> str | None:
    head = read_at(path, 0, 512)
    if head[:4] == b"KDMV" and len(head) >= 36:
        capacity, _grain, descriptor_at = struct.unpack_from("<QQQ", head, 12)
        if capacity == 0 and descriptor_at:
            # qemu then opens the embedded descriptor as a descriptor file, extents and all
            return "the extent files listed by the descriptor its sparse header embeds"
    if head[:4] in (b"KDMV", b"COWD"):
        return _vmdk_parent(read_at(path, VMDK_EMBEDDED_AT, VMDK_DESC_SIZE))
    text = read_at(path, 0, VMDK_DESCRIPTOR_LIMIT)
    return _vmdk_parent(text) or _vmdk_extent(path, text)


def _vmdk_parent(text: bytes) -> str | None:
    if VMDK_PARENT not in text:
        return None
    named = _PARENT_NAME.search(text)
    return f"a parent disk ({_name(named.group(1))})" if named else "a parent disk"


def _vmdk_extent(path: Path, text: bytes) -> str | None:
    for start in _LINE_STARTS.finditer(text):
        extent = _EXTENT.match(text, start.end())
        if extent is not None and not _is_itself(path, extent.group(1)[:511]):
            return f"an extent in another file ({_name(extent.group(1))})"
    return None


def _is_itself(path: Path, name: bytes) -> bool:
    """Whether the extent ``name`` (relative to the descriptor's folder, as qemu reads it) is
    the descriptor file itself: the one file we agreed to read."""
    if not name:
        return False
    target = Path(os.fsdecode(name))
    if not target.is_absolute():
        target = path.absolute().parent / target
    try:
        return os.path.samefile(target, path)
    except (OSError, ValueError):
        return False


# VHDX


@dataclass(frozen=True)
class VhdxMetadata:
    """The VHDX metadata items imagedist needs: the disk's size and whether it has a parent."""

    virtual_size: int
    has_parent: bool


def read_vhdx_metadata(path: Path) -> VhdxMetadata:
    """The metadata of the first readable region table's metadata region.

    :raises ValueError: naming what is damaged, when no region table leads to the metadata.
    """
    found: list[VhdxMetadata] = []
    problem = "it has no region table"
    for table_at in VHDX_REGION_TABLES:
        try:
            found.append(_vhdx_metadata_from_table(path, table_at))
        except ValueError as exc:
            problem = str(exc)
    if not found:
        raise ValueError(problem)
    # Either table may be the one qemu trusts: a parent in either counts.
    return VhdxMetadata(found[0].virtual_size, any(m.has_parent for m in found))


def _vhdx_metadata_from_table(path: Path, table_at: int) -> VhdxMetadata:
    head = read_at(path, table_at, 16)
    if head[:4] != b"regi":
        raise ValueError(f"it has no region table at offset {table_at}")
    count = struct.unpack_from("<I", head, 8)[0]
    if count > VHDX_MAX_ENTRIES:
        raise ValueError(f"its region table at offset {table_at} claims {count} entries")
    entries = read_at(path, table_at + 16, 32 * count)
    for at in range(0, len(entries) - 31, 32):
        guid, offset, _length = struct.unpack_from("<16sQI", entries, at)
        if guid == VHDX_METADATA_REGION:
            return _vhdx_metadata(path, offset)
    raise ValueError(f"its region table at offset {table_at} has no metadata region")


def _vhdx_metadata(path: Path, region_at: int) -> VhdxMetadata:
    head = read_at(path, region_at, 32)
    if head[:8] != b"metadata":
        raise ValueError(f"it has no metadata table at offset {region_at}")
    count = struct.unpack_from("<H", head, 10)[0]
    if count > VHDX_MAX_ENTRIES:
        raise ValueError(f"its metadata table claims {count} entries")
    entries = read_at(path, region_at + 32, 32 * count)
    items: dict[bytes, int] = {}
    for at in range(0, len(entries) - 31, 32):
        guid, offset, _length = struct.unpack_from("<16sII", entries, at)
        items[guid] = region_at + offset
    if VHDX_VIRTUAL_DISK_SIZE not in items:
        raise ValueError("its metadata gives no virtual disk size")
    size_raw = read_at(path, items[VHDX_VIRTUAL_DISK_SIZE], 8).ljust(8, b"\0")
    flags = 0
    if VHDX_FILE_PARAMETERS in items:
        params = read_at(path, items[VHDX_FILE_PARAMETERS], 8).ljust(8, b"\0")
        flags = struct.unpack_from("<I", params, 4)[0]
    has_parent = bool(flags & VHDX_HAS_PARENT) or VHDX_PARENT_LOCATOR in items
    return VhdxMetadata(struct.unpack("<Q", size_raw)[0], has_parent)


def _vhdx_reference(path: Path) -> str | None:
    try:
        metadata = read_vhdx_metadata(path)
    except ValueError:
        return None  # damaged: qemu-img refuses it before reading anything else
    return "a parent disk (it is a differencing VHDX)" if metadata.has_parent else None
