"""The VHD on-disk structures: the 512-byte footer, the dynamic disk header and the BAT.

Written from Microsoft's "Virtual Hard Disk Image Format Specification" (version 1.0):
every field is big-endian; the footer sits in the last 512 bytes of the file (dynamic and
differencing disks also keep a copy at offset 0); a dynamic disk's header ("cxsparse") sits at
the footer's data offset and points to the block allocation table (BAT), one big-endian
uint32 sector number per block, 0xFFFFFFFF for a block that is not allocated. Each allocated
block is a sector bitmap (padded to a whole sector) followed by the block's data.

Parsing here only unpacks; :mod:`._inspect` decides what is acceptable.
"""

from __future__ import annotations

import struct
import time
import uuid
from dataclasses import dataclass, replace

__all__ = [
    "BAT_UNUSED",
    "COOKIE",
    "DISK_DIFFERENCING",
    "DISK_DYNAMIC",
    "DISK_FIXED",
    "DYNAMIC_COOKIE",
    "FOOTER_SIZE",
    "HEADER_SIZE",
    "NO_DATA_OFFSET",
    "SECTOR",
    "VERSION",
    "DynamicHeader",
    "Footer",
    "bitmap_size",
    "chs_geometry",
    "fixed_footer",
    "parse_bat",
    "vhd_checksum",
]

SECTOR = 512
FOOTER_SIZE = 512
HEADER_SIZE = 1024
COOKIE = b"conectix"
DYNAMIC_COOKIE = b"cxsparse"
VERSION = 0x0001_0000
FEATURES_RESERVED = 0x0000_0002  # "must always be set"
NO_DATA_OFFSET = 0xFFFF_FFFF_FFFF_FFFF
BAT_UNUSED = 0xFFFF_FFFF
DISK_FIXED, DISK_DYNAMIC, DISK_DIFFERENCING = 2, 3, 4
VHD_EPOCH = 946_684_800  # 2000-01-01T00:00:00Z as a Unix timestamp
# Readers size a VHD by its footer's current size for the creator apps they know do that
# (Hyper-V's "win " above all), but some (qemu-img before 10.0) size it by the CHS geometry,
# which rounds down, for any app they do not know. So we write what Hyper-V writes.
CREATOR_APP = b"win "
CREATOR_VERSION = 0x000A_0000
CREATOR_HOST_OS = b"Wi2k"

# cookie, features, version, data offset, timestamp, creator app, creator version,
# creator host OS, original size, current size, cylinders, heads, sectors per track,
# disk type, checksum, unique id, saved state, reserved
_FOOTER = struct.Struct(">8sIIQI4sI4sQQHBBII16sB427s")
_FOOTER_CHECKSUM_AT = 64
# cookie, data offset, table offset, header version, max table entries, block size,
# checksum, parent unique id, parent timestamp, reserved, parent name, locators, reserved
_HEADER = struct.Struct(">8sQQIIII16sI4s512s192s256s")
_HEADER_CHECKSUM_AT = 36
assert _FOOTER.size == FOOTER_SIZE and _HEADER.size == HEADER_SIZE


def vhd_checksum(data: bytes, checksum_at: int) -> int:
    """One's complement of the sum of every byte except the 4-byte checksum field."""
    total = sum(data) - sum(data[checksum_at : checksum_at + 4])
    return ~total & 0xFFFF_FFFF


def chs_geometry(size: int) -> tuple[int, int, int]:
    """(cylinders, heads, sectors per track) for a disk of ``size`` bytes, per the spec's algorithm."""
    total = min(size // SECTOR, 65535 * 16 * 255)
    if total >= 65535 * 16 * 63:
        sectors, heads = 255, 16
        cyl_heads = total // sectors
    else:
        sectors = 17
        cyl_heads = total // sectors
        heads = max((cyl_heads + 1023) // 1024, 4)
        if cyl_heads >= heads * 1024 or heads > 16:
            sectors, heads = 31, 16
            cyl_heads = total // sectors
        if cyl_heads >= heads * 1024:
            sectors, heads = 63, 16
            cyl_heads = total // sectors
    return cyl_heads // heads, heads, sectors


@dataclass(frozen=True)
class Footer:
    """The hard disk footer, field by field."""

    cookie: bytes
    features: int
    version: int
    data_offset: int
    timestamp: int
    creator_app: bytes
    creator_version: int
    creator_host_os: bytes
    original_size: int
    current_size: int
    geometry: tuple[int, int, int]
    disk_type: int
    checksum: int
    unique_id: bytes
    saved_state: int
    reserved: bytes = bytes(427)  # kept as read: the checksum covers it

    @classmethod
    def unpack(cls, raw: bytes) -> Footer:
        """Unpack 512 bytes without judging them (see :attr:`checksum_ok`)."""
        (cookie, features, version, data_offset, timestamp, app, app_version, host_os,
         original, current, cylinders, heads, sectors, disk_type, checksum, unique_id,
         saved, reserved) = _FOOTER.unpack(raw[:FOOTER_SIZE])  # fmt: skip
        return cls(
            cookie, features, version, data_offset, timestamp, app, app_version, host_os,
            original, current, (cylinders, heads, sectors), disk_type, checksum, unique_id, saved,
            reserved,
        )  # fmt: skip

    @property
    def computed_checksum(self) -> int:
        return vhd_checksum(self._pack(self.checksum), _FOOTER_CHECKSUM_AT)

    def pack(self) -> bytes:
        """The 512 bytes, with the checksum computed from the other fields."""
        return self._pack(self.computed_checksum)

    def with_fresh_checksum(self) -> Footer:
        return replace(self, checksum=self.computed_checksum)

    def _pack(self, checksum: int) -> bytes:
        cylinders, heads, sectors = self.geometry
        return _FOOTER.pack(
            self.cookie, self.features, self.version, self.data_offset, self.timestamp,
            self.creator_app, self.creator_version, self.creator_host_os, self.original_size,
            self.current_size, cylinders, heads, sectors, self.disk_type, checksum,
            self.unique_id, self.saved_state, self.reserved,
        )  # fmt: skip


def fixed_footer(size: int, unique_id: bytes | None = None, when: float | None = None) -> Footer:
    """A fresh, checksummed footer for a fixed disk of ``size`` bytes."""
    seconds = int(time.time() if when is None else when) - VHD_EPOCH
    footer = Footer(
        cookie=COOKIE,
        features=FEATURES_RESERVED,
        version=VERSION,
        data_offset=NO_DATA_OFFSET,
        timestamp=max(seconds, 0) & 0xFFFF_FFFF,
        creator_app=CREATOR_APP,
        creator_version=CREATOR_VERSION,
        creator_host_os=CREATOR_HOST_OS,
        original_size=size,
        current_size=size,
        geometry=chs_geometry(size),
        disk_type=DISK_FIXED,
        checksum=0,
        unique_id=unique_id if unique_id is not None else uuid.uuid4().bytes,
        saved_state=0,
    )
    return footer.with_fresh_checksum()


@dataclass(frozen=True)
class DynamicHeader:
    """The dynamic disk header's fields that matter for reading (parent fields are kept raw)."""

    cookie: bytes
    data_offset: int
    table_offset: int
    version: int
    max_table_entries: int
    block_size: int
    checksum: int
    raw: bytes

    @classmethod
    def unpack(cls, raw: bytes) -> DynamicHeader:
        cookie, data_offset, table_offset, version, entries, block_size, checksum, *_ = (
            _HEADER.unpack(raw[:HEADER_SIZE])
        )
        return cls(
            cookie, data_offset, table_offset, version, entries, block_size, checksum,
            bytes(raw[:HEADER_SIZE]),
        )  # fmt: skip

    @property
    def computed_checksum(self) -> int:
        return vhd_checksum(self.raw, _HEADER_CHECKSUM_AT)

    @staticmethod
    def build(table_offset: int, entries: int, block_size: int) -> bytes:
        """A checksummed header for a dynamic disk (used by tests to craft images)."""
        fields = (DYNAMIC_COOKIE, NO_DATA_OFFSET, table_offset, VERSION, entries, block_size)
        raw = _HEADER.pack(*fields, 0, bytes(16), 0, bytes(4), bytes(512), bytes(192), bytes(256))
        checksum = vhd_checksum(raw, _HEADER_CHECKSUM_AT)
        return (
            raw[:_HEADER_CHECKSUM_AT] + checksum.to_bytes(4, "big") + raw[_HEADER_CHECKSUM_AT + 4 :]
        )


def bitmap_size(block_size: int) -> int:
    """Bytes of the sector bitmap before each block: one bit per sector, padded to a sector."""
    bitmap_bytes = -(-(block_size // SECTOR) // 8)
    return -(-bitmap_bytes // SECTOR) * SECTOR


def parse_bat(raw: bytes, entries: int) -> tuple[int, ...]:
    """The BAT's ``entries`` big-endian uint32 sector numbers."""
    return struct.unpack(f">{entries}I", raw[: 4 * entries])
