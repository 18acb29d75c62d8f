"""Which firmware a disk can boot with, from its partition table: the Hyper-V generation it needs.

A generation 1 VM boots with BIOS, from an MBR disk or a GPT disk with a BIOS boot partition; a
generation 2 VM boots with UEFI, from an EFI system partition. A GPT disk with an EFI system
partition and no BIOS boot partition (every Windows GPT install, most cloud Linux images since
2021) boots only as generation 2: made into a V1 image, its VMs never start.

Only the first sectors of the disk are read (the MBR, the GPT header and its partition entries,
bounded); nothing here follows a pointer outside the file.
"""

from __future__ import annotations

import enum
import struct
import uuid
from collections.abc import Callable

__all__ = ["Firmware", "boot_firmware"]

SECTOR = 512
MBR_SIGNATURE = b"\x55\xaa"
MBR_PROTECTIVE = 0xEE  # the one MBR partition of a GPT disk
MBR_ESP = 0xEF
GPT_SIGNATURE = b"EFI PART"
ESP_TYPE = uuid.UUID("c12a7328-f81f-11d2-ba4b-00a0c93ec93b")
BIOS_BOOT_TYPE = uuid.UUID("21686148-6449-6e6f-744e-656564454649")
MAX_ENTRIES_BYTES = 1024 * 1024  # the spec's minimum is 16 KiB; anything past 1 MiB is crafted


class Firmware(enum.StrEnum):
    """What the disk's partition table says it boots with."""

    BIOS = "bios"  # generation 1 only
    UEFI = "uefi"  # generation 2 only
    BOTH = "both"  # a GPT disk with an EFI system partition and a BIOS boot partition
    UNKNOWN = "unknown"  # no partition table we can read: nothing to say

    def refuses(self, generation: str) -> bool:
        """Whether a VM of Hyper-V ``generation`` ("V1"/"V2") cannot boot this disk: a V1
        (BIOS) VM never boots a disk that has only an EFI system partition. (A V2 VM may still
        boot an MBR disk whose firmware finds a boot loader on a FAT partition: not refused.)"""
        return self is Firmware.UEFI and generation == "V1"


Read = Callable[[int, int], bytes]  # (offset, length) -> bytes, inside the disk


def boot_firmware(read: Read, size: int) -> Firmware:
    """The firmware the disk of ``size`` bytes, read through ``read``, boots with."""
    mbr = _read(read, 0, SECTOR, size)
    if len(mbr) < SECTOR or mbr[510:512] != MBR_SIGNATURE:
        return Firmware.UNKNOWN
    types = [mbr[446 + 16 * i + 4] for i in range(4)]
    if MBR_PROTECTIVE in types:
        return _gpt_firmware(read, size)
    if not any(types):
        return Firmware.UNKNOWN
    return Firmware.UEFI if MBR_ESP in types else Firmware.BIOS


def _gpt_firmware(read: Read, size: int) -> Firmware:
    header = _read(read, SECTOR, 92, size)
    if len(header) < 92 or header[:8] != GPT_SIGNATURE:
        return Firmware.UNKNOWN
    entries_lba, count, entry_size = struct.unpack_from("<QII", header, 72)
    if entry_size < 128 or entry_size % 8 or count * entry_size > MAX_ENTRIES_BYTES:
        return Firmware.UNKNOWN
    table = _read(read, entries_lba * SECTOR, count * entry_size, size)
    types = {
        uuid.UUID(bytes_le=table[i : i + 16])
        for i in range(0, len(table) - entry_size + 1, entry_size)
    }
    esp, bios = ESP_TYPE in types, BIOS_BOOT_TYPE in types
    if esp and bios:
        return Firmware.BOTH
    if esp:
        return Firmware.UEFI
    return Firmware.BIOS if bios else Firmware.UNKNOWN


def _read(read: Read, offset: int, length: int, size: int) -> bytes:
    """Up to ``length`` bytes at ``offset``, never past the end of the disk."""
    if offset >= size:
        return b""
    return read(offset, min(length, size - offset))
