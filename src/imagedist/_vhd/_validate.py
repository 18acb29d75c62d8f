"""Checking VHD structures: each defect raises InvalidInput with one sentence naming it and the fix."""

from __future__ import annotations

import itertools
import os

from .._exceptions import InvalidInput
from ._footer import (
    BAT_UNUSED,
    COOKIE,
    DISK_DIFFERENCING,
    DISK_DYNAMIC,
    DISK_FIXED,
    DYNAMIC_COOKIE,
    FOOTER_SIZE,
    HEADER_SIZE,
    SECTOR,
    VERSION,
    DynamicHeader,
    Footer,
    bitmap_size,
    parse_bat,
)

__all__ = [
    "MAX_VIRTUAL_SIZE",
    "check_fixed",
    "check_footer",
    "check_size_limit",
    "fixed_footer_problem",
    "human",
    "read_dynamic",
]

GiB = 1024**3
MAX_VIRTUAL_SIZE = 4095 * GiB  # Azure's limit for an uploaded VHD (plus its 512-byte footer)
RECOPY = "the file is corrupt: copy it again from its source"
TRUNCATED = "the file is truncated: copy it again from its source"


def human(size: int) -> str:
    """``5368709120`` → ``"5 GiB"``; one decimal for sizes that are not whole units."""
    value = float(size)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def check_size_limit(size: int, where: str) -> None:
    if size > MAX_VIRTUAL_SIZE:
        raise InvalidInput(
            f"{where} holds a disk of {size} bytes ({human(size)}), larger than Azure accepts"
            f" ({human(MAX_VIRTUAL_SIZE)}); shrink the disk's partitions and the disk below that first."
        )


def check_footer(raw: bytes, where: str) -> Footer:
    """The footer in ``raw`` (512 bytes), or InvalidInput naming what is wrong with it."""
    footer = Footer.unpack(raw)
    if footer.cookie != COOKIE:
        raise InvalidInput(
            f"{where} ends with a VHD footer whose cookie is {footer.cookie!r} instead of"
            f" b'conectix'; {RECOPY}."
        )
    if footer.checksum != footer.computed_checksum:
        raise InvalidInput(
            f"{where} has a bad VHD footer checksum (stored 0x{footer.checksum:08x}, computed"
            f" 0x{footer.computed_checksum:08x}); {RECOPY}."
        )
    if footer.version != VERSION:
        raise InvalidInput(
            f"{where} has VHD format version 0x{footer.version:08x}, which is unsupported (only"
            " 0x00010000 is); convert it to a fixed VHD with Hyper-V or qemu-img first."
        )
    if footer.disk_type == DISK_DIFFERENCING:
        raise InvalidInput(
            f"{where} is a differencing VHD, which is useless without its parent disk; merge it"
            " with its parent first (Hyper-V Merge-VHD, or `qemu-img convert` the child to raw)."
        )
    if footer.disk_type not in (DISK_FIXED, DISK_DYNAMIC):
        raise InvalidInput(
            f"{where} has VHD disk type {footer.disk_type}, which is neither fixed (2) nor"
            f" dynamic (3); {RECOPY}."
        )
    _check_virtual_size(footer.current_size, where)
    return footer


def fixed_footer_problem(raw: bytes, file_size: int) -> str | None:
    """Why ``raw`` is not the footer of a fixed VHD of ``file_size`` bytes (as a clause), or None.

    For files imagedist made or accepted as fixed VHDs: a damaged footer here means the file
    changed after it was checked.
    """
    if len(raw) != FOOTER_SIZE:
        return f"it ends in {len(raw)} bytes where a 512-byte VHD footer belongs"
    footer = Footer.unpack(raw)
    if footer.cookie != COOKIE:
        return "it does not end in a VHD footer"
    if footer.checksum != footer.computed_checksum:
        return "its VHD footer's checksum is wrong"
    if footer.disk_type != DISK_FIXED:
        return f"its VHD footer gives disk type {footer.disk_type}, not fixed (2)"
    if footer.current_size != file_size - FOOTER_SIZE:
        return (
            f"its VHD footer gives a disk of {footer.current_size} bytes, not the"
            f" {file_size - FOOTER_SIZE} bytes before it"
        )
    return None


def _check_virtual_size(size: int, where: str) -> None:
    if size == 0:
        raise InvalidInput(
            f"{where} is a VHD of virtual size 0; give the path of a disk with data."
        )
    if size % SECTOR:
        raise InvalidInput(
            f"{where} has a VHD footer giving a virtual size of {size} bytes, not a whole number"
            f" of 512-byte sectors; {RECOPY}."
        )
    check_size_limit(size, where)


def check_fixed(footer: Footer, file_size: int, where: str) -> None:
    """A fixed VHD's file is exactly its disk plus the footer."""
    expected = footer.current_size + FOOTER_SIZE
    if file_size < expected:
        raise InvalidInput(
            f"{where} is a fixed VHD cut short: the file is {file_size} bytes but its footer"
            f" says {footer.current_size} bytes of disk plus the 512-byte footer; {TRUNCATED}."
        )
    if file_size > expected:
        raise InvalidInput(
            f"{where} is {file_size} bytes, which does not match the size its fixed VHD footer"
            f" gives ({footer.current_size} + 512 bytes); re-create the VHD or convert the source"
            " again."
        )


def read_dynamic(
    fd: int, footer: Footer, file_size: int, where: str
) -> tuple[DynamicHeader, tuple[int, ...]]:
    """The dynamic disk header and the BAT, checked against each other and the file."""
    end = file_size - FOOTER_SIZE
    at = footer.data_offset
    if at % SECTOR or at < FOOTER_SIZE or at + HEADER_SIZE > end:
        raise InvalidInput(
            f"{where} is a dynamic VHD whose footer puts the dynamic disk header at offset {at},"
            f" past the end of the file ({file_size} bytes) or misaligned; {RECOPY}."
        )
    header = DynamicHeader.unpack(os.pread(fd, HEADER_SIZE, at))
    _check_header(header, where)
    needed = -(-footer.current_size // header.block_size)
    if header.max_table_entries < needed:
        raise InvalidInput(
            f"{where} has a block allocation table of {header.max_table_entries} entries of"
            f" {header.block_size} bytes, too few for its {footer.current_size}-byte disk; {RECOPY}."
        )
    table_end = header.table_offset + 4 * needed
    if header.table_offset % SECTOR or header.table_offset < FOOTER_SIZE or table_end > end:
        raise InvalidInput(
            f"{where} has its block allocation table at offset {header.table_offset} with"
            f" {needed} entries, which runs past the end of the file or is misaligned; {TRUNCATED}."
        )
    table_end = _round_up_sector(table_end)  # the table is padded to a whole sector
    if header.table_offset < at + HEADER_SIZE and at < table_end:
        raise InvalidInput(
            f"{where} has its block allocation table (offset {header.table_offset}) overlapping"
            f" its dynamic disk header (offset {at}); {RECOPY}."
        )
    bat = parse_bat(os.pread(fd, 4 * needed, header.table_offset), needed)
    _check_bat(bat, header.block_size, max(at + HEADER_SIZE, table_end), end, where)
    return header, bat


def _round_up_sector(offset: int) -> int:
    return -(-offset // SECTOR) * SECTOR


def _check_header(header: DynamicHeader, where: str) -> None:
    if header.cookie != DYNAMIC_COOKIE:
        raise InvalidInput(
            f"{where} has a dynamic disk header whose cookie is {header.cookie!r} instead of"
            f" b'cxsparse'; {RECOPY}."
        )
    if header.checksum != header.computed_checksum:
        raise InvalidInput(
            f"{where} has a bad dynamic disk header checksum (stored 0x{header.checksum:08x},"
            f" computed 0x{header.computed_checksum:08x}); {RECOPY}."
        )
    if header.version != VERSION:
        raise InvalidInput(
            f"{where} has dynamic disk header version 0x{header.version:08x}, which is"
            " unsupported (only 0x00010000 is); convert it with Hyper-V or qemu-img first."
        )
    size = header.block_size
    if size < SECTOR or size & (size - 1):
        raise InvalidInput(
            f"{where} has a dynamic disk block size of {size} bytes, which is not a power of two"
            f" of at least 512; {RECOPY}."
        )


def _check_bat(bat: tuple[int, ...], block_size: int, first: int, end: int, where: str) -> None:
    """Every allocated block (sector bitmap and data) lies wholly in ``[first, end)``, between
    the headers and table and the footer, and no two blocks overlap: otherwise reading the disk
    would read its own metadata, or one block's bytes as another's."""
    span = bitmap_size(block_size) + block_size
    blocks = []
    for index, entry in enumerate(bat):
        if entry == BAT_UNUSED:
            continue
        start = entry * SECTOR
        if start + span > end:
            raise InvalidInput(
                f"{where} has block allocation table entry {index} pointing at offset {start},"
                f" outside the file (a block of {span} bytes must fit between its footers);"
                f" {RECOPY}."
            )
        if start < first:
            raise InvalidInput(
                f"{where} has block allocation table entry {index} pointing at offset {start},"
                f" inside its footer copy, dynamic disk header or block allocation table (blocks"
                f" start at offset {first} at the earliest); {RECOPY}."
            )
        blocks.append((start, index))
    blocks.sort()
    for (start, index), (later, other) in itertools.pairwise(blocks):
        if later < start + span:
            raise InvalidInput(
                f"{where} has block allocation table entries {index} and {other} pointing at"
                f" overlapping blocks (offsets {start} and {later}, {span} bytes each); {RECOPY}."
            )
