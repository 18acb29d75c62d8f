"""The VHD format code on its own (no qemu-img): footer, checksum, geometry, readers, writer."""

from __future__ import annotations

import os
import struct
from dataclasses import replace
from pathlib import Path

import pytest

from imagedist._exceptions import InvalidInput
from imagedist._vhd import (
    MAX_VIRTUAL_SIZE,
    convert_to_fixed_vhd,
    inspect_image,
    open_disk,
    validate_for_azure,
)
from imagedist._vhd._footer import (
    DISK_DYNAMIC,
    DynamicHeader,
    Footer,
    bitmap_size,
    chs_geometry,
    fixed_footer,
)

MiB = 1024 * 1024
GiB = 1024 * MiB


def write_sparse(path: Path, size: int, data: dict[int, bytes]) -> bytes:
    """A sparse file of ``size`` bytes with ``data`` at its offsets; returns its full content."""
    with path.open("wb") as file:
        file.truncate(size)
        for offset, chunk in data.items():
            file.seek(offset)
            file.write(chunk)
    return path.read_bytes() if size <= 64 * MiB else b""


def make_dynamic(
    path: Path, size: int, blocks: dict[int, bytes], block_size: int = 2 * MiB, bitmap: bytes = b""
) -> None:
    """A dynamic VHD built by hand: footer copy, header at 512, BAT at 1536, then the blocks."""
    entries = -(-size // block_size)
    bat_bytes = -(-4 * entries // 512) * 512
    footer = replace(fixed_footer(size), disk_type=DISK_DYNAMIC, data_offset=512).pack()
    bat = [0xFFFFFFFF] * entries
    body = bytearray()
    first = 1536 + bat_bytes
    for index, data in sorted(blocks.items()):
        bat[index] = (first + len(body)) // 512
        body += (bitmap or b"\xff" * (block_size // 512 // 8)).ljust(bitmap_size(block_size), b"\0")
        body += data.ljust(block_size, b"\0")
    table = struct.pack(f">{entries}I", *bat).ljust(bat_bytes, b"\xff")
    header = DynamicHeader.build(1536, entries, block_size)
    path.write_bytes(footer + header + table + body + footer)


# footer, checksum, geometry


def test_footer_round_trip_and_fields() -> None:
    footer = fixed_footer(64 * MiB, unique_id=b"u" * 16, when=946_684_800 + 1234)
    raw = footer.pack()
    assert len(raw) == 512
    assert raw[:8] == b"conectix"
    assert struct.unpack_from(">IIQI", raw, 8) == (2, 0x00010000, 0xFFFFFFFFFFFFFFFF, 1234)
    assert struct.unpack_from(">QQ", raw, 40) == (64 * MiB, 64 * MiB)
    assert struct.unpack_from(">I", raw, 60) == (2,)
    assert raw[68:84] == b"u" * 16
    assert raw[85:] == bytes(427)
    again = Footer.unpack(raw)
    assert again == footer
    assert again.pack() == raw


def test_checksum_is_ones_complement_of_byte_sum() -> None:
    raw = fixed_footer(3 * GiB).pack()
    expected = ~(sum(raw[:64]) + sum(raw[68:])) & 0xFFFFFFFF
    assert struct.unpack_from(">I", raw, 64)[0] == expected
    damaged = Footer.unpack(raw[:100] + b"\x01" + raw[101:])
    assert damaged.checksum != damaged.computed_checksum


@pytest.mark.parametrize(
    ("size", "geometry"),
    [
        (10 * MiB, (301, 4, 17)),
        (20 * MiB, (602, 4, 17)),
        (127 * MiB, (1019, 15, 17)),
        (512 * MiB, (1040, 16, 63)),
        (1 * GiB, (2080, 16, 63)),
        (3 * GiB, (6241, 16, 63)),
        (32 * GiB, (16448, 16, 255)),
        (127 * GiB, (65278, 16, 255)),
        (4095 * GiB, (65535, 16, 255)),  # capped at the maximum
    ],
)
def test_chs_geometry_follows_the_spec_algorithm(size: int, geometry: tuple[int, int, int]) -> None:
    assert chs_geometry(size) == geometry
    assert struct.unpack_from(">HBB", fixed_footer(size).pack(), 56) == geometry


def test_bitmap_size_is_padded_to_a_sector() -> None:
    assert bitmap_size(2 * MiB) == 512
    assert bitmap_size(512 * 1024) == 512
    assert bitmap_size(32 * MiB) == 8192


# readers


def test_raw_reader_extents_and_read(tmp_path: Path) -> None:
    path = tmp_path / "disk.raw"
    content = write_sparse(path, 16 * MiB, {MiB: b"\x07" * 1000, 9 * MiB: os.urandom(300_000)})
    with open_disk(path) as disk:
        assert (disk.format, disk.disk_type, disk.virtual_size) == ("raw", None, 16 * MiB)
        extents = list(disk.iter_data_extents())
        assert disk.read(0, disk.virtual_size) == content
        assert disk.read(9 * MiB + 5, 10) == content[9 * MiB + 5 : 9 * MiB + 15]
        with pytest.raises(ValueError):
            disk.read(16 * MiB - 1, 2)
    assert [offset for offset, _ in extents] == [MiB, 9 * MiB]
    covered = bytearray(len(content))
    for offset, length in extents:
        covered[offset : offset + length] = content[offset : offset + length]
    assert bytes(covered) == content
    assert sum(length for _, length in extents) <= 4 * 64 * 1024 + 300_000


def test_dynamic_reader_honours_bat_and_bitmap(tmp_path: Path) -> None:
    path = tmp_path / "dyn.vhd"
    block0, block2 = os.urandom(2 * MiB), os.urandom(2 * MiB)
    make_dynamic(path, 7 * MiB, {0: block0})
    # block 2: only its first 8 sectors are marked as in use; the rest must read as zeros
    path2 = tmp_path / "dyn-bitmap.vhd"
    make_dynamic(path2, 7 * MiB, {2: block2}, bitmap=b"\xff" + bytes(511))
    with open_disk(path) as disk:
        assert (disk.format, disk.disk_type, disk.virtual_size) == ("vhd", "dynamic", 7 * MiB)
        assert disk.read(0, 2 * MiB) == block0
        assert disk.read(2 * MiB - 10, 20) == block0[-10:] + bytes(10)
        assert list(disk.iter_data_extents()) == [(0, 2 * MiB)]
    with open_disk(path2) as disk:
        assert disk.read(4 * MiB, 2 * MiB) == block2[:4096] + bytes(2 * MiB - 4096)
        assert list(disk.iter_data_extents()) == [(4 * MiB, 4096)]
        assert disk.allocated_bytes() == 4096


def test_fixed_reader_excludes_the_footer(tmp_path: Path) -> None:
    path = tmp_path / "fixed.vhd"
    data = os.urandom(MiB)
    path.write_bytes(data + fixed_footer(MiB).pack())
    with open_disk(path) as disk:
        assert (disk.format, disk.disk_type, disk.virtual_size) == ("vhd", "fixed", MiB)
        assert disk.read(0, MiB) == data
        assert list(disk.iter_data_extents()) == [(0, MiB)]


# writer and conversion


def test_raw_to_fixed_is_sparse_rounded_and_exact(tmp_path: Path) -> None:
    src, out = tmp_path / "big.raw", tmp_path / "big.vhd"
    size = 256 * MiB - 1024  # not a whole MiB: rounds up to 256 MiB
    pieces = {0: os.urandom(100_000), 100 * MiB: os.urandom(500_000), size - 4096: b"\x01" * 4096}
    write_sparse(src, size, pieces)
    result = convert_to_fixed_vhd(src, out)
    assert result.virtual_size == 256 * MiB
    assert out.stat().st_size == 256 * MiB + 512
    assert out.stat().st_blocks * 512 < 4 * MiB  # sparse: only the data is stored
    with out.open("rb") as file:
        file.seek(256 * MiB)
        footer = Footer.unpack(file.read())
        for offset, chunk in pieces.items():
            file.seek(offset)
            assert file.read(len(chunk)) == chunk
        file.seek(size)
        assert file.read(1024) == bytes(1024)
    assert footer.checksum == footer.computed_checksum
    assert (footer.current_size, footer.disk_type) == (256 * MiB, 2)
    assert inspect_image(out).azure_ready


def test_dynamic_to_fixed_natively(tmp_path: Path) -> None:
    src, out = tmp_path / "dyn.vhd", tmp_path / "fixed.vhd"
    blocks = {1: os.urandom(2 * MiB), 3: os.urandom(MiB)}
    make_dynamic(src, 8 * MiB, blocks)
    result = convert_to_fixed_vhd(src, out)
    assert (result.source_format, result.source_disk_type) == ("vhd", "dynamic")
    expected = bytes(2 * MiB) + blocks[1] + bytes(2 * MiB) + blocks[3] + bytes(MiB)
    assert out.read_bytes()[:-512] == expected
    with open_disk(out) as disk:
        assert disk.disk_type == "fixed"
        assert disk.read(0, 8 * MiB) == expected


def test_inspection_verdicts(tmp_path: Path) -> None:
    raw = tmp_path / "disk.raw"
    write_sparse(raw, 3 * MiB, {0: b"x"})
    inspection = inspect_image(raw)
    assert (inspection.format, inspection.virtual_size, inspection.whole_mib) == (
        "raw",
        3 * MiB,
        True,
    )
    assert not inspection.azure_ready
    assert "raw image" in inspection.problems[0]
    with pytest.raises(InvalidInput, match="not ready for Azure: it is a raw image"):
        validate_for_azure(raw)
    dyn = tmp_path / "dyn.vhd"
    make_dynamic(dyn, 4 * MiB, {0: b"y" * 512})
    inspection = inspect_image(dyn)
    assert (inspection.disk_type, inspection.occupied_bytes) == ("dynamic", 2 * MiB)
    assert not inspection.azure_ready
    fixed = tmp_path / "ok.vhd"
    convert_to_fixed_vhd(raw, fixed)
    good = validate_for_azure(fixed)
    assert good.to_dict() == {
        "path": str(fixed),
        "format": "vhd",
        "disk_type": "fixed",
        "virtual_size": 3 * MiB,
        "whole_mib": True,
        "occupied_bytes": 4096,
        "azure_ready": True,
        "problems": [],
    }


def test_size_limit_is_4095_gib(tmp_path: Path) -> None:
    assert 4095 * GiB == MAX_VIRTUAL_SIZE
    path = tmp_path / "edge.vhd"
    with path.open("wb") as file:
        file.truncate(MAX_VIRTUAL_SIZE)
        file.seek(MAX_VIRTUAL_SIZE)
        file.write(fixed_footer(MAX_VIRTUAL_SIZE).pack())
    assert inspect_image(path).azure_ready
