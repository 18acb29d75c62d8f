"""Our VHD code against qemu-img: it reads what qemu-img writes and qemu-img reads what it writes."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from imagedist._vhd import convert_to_fixed_vhd, inspect_image, open_disk
from imagedist._vhd._footer import chs_geometry

MiB = 1024 * 1024
QEMU_IMG = shutil.which("qemu-img")

pytestmark = pytest.mark.skipif(
    QEMU_IMG is None,
    reason="qemu-img is not on PATH (install qemu-utils: `apt-get install qemu-utils`)",
)

SIZE = 24 * MiB + 7 * 512  # not a whole MiB, not a whole 2 MiB block
PIECES = {0: 4096, 512 * 1024: 200_000, 5 * MiB + 512: 70_000, 17 * MiB: 3 * MiB, SIZE - 8192: 8192}


def qemu_img(*args: str) -> subprocess.CompletedProcess[str]:
    assert QEMU_IMG is not None
    return subprocess.run([QEMU_IMG, *args], capture_output=True, text=True, check=False)


def virtual_size(path: Path, fmt: str) -> int:
    done = qemu_img("info", "--output=json", "-f", fmt, str(path))
    assert done.returncode == 0, done.stderr
    return int(json.loads(done.stdout)["virtual-size"])


def assert_same(raw: Path, other: Path, fmt: str) -> None:
    done = qemu_img("compare", "-f", "raw", "-F", fmt, str(raw), str(other))
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert "Images are identical" in done.stdout


@pytest.fixture
def raw_source(tmp_path: Path) -> tuple[Path, bytes]:
    """A sparse raw disk with random data at several offsets, and its content."""
    path = tmp_path / "source.raw"
    with path.open("wb") as file:
        file.truncate(SIZE)
        for offset, length in PIECES.items():
            file.seek(offset)
            file.write(os.urandom(length))
    return path, path.read_bytes()


def test_our_fixed_vhd_is_read_by_qemu_img(raw_source: tuple[Path, bytes], tmp_path: Path) -> None:
    raw, _ = raw_source
    out = tmp_path / "ours.vhd"
    convert_to_fixed_vhd(raw, out)
    check = qemu_img("check", "-f", "vpc", str(out))
    if "does not support checks" not in check.stderr:
        assert check.returncode == 0, check.stderr
    info = json.loads(qemu_img("info", "--output=json", "-f", "vpc", str(out)).stdout)
    assert info["format"] == "vpc"
    assert info["virtual-size"] == 25 * MiB  # rounded up to a whole MiB
    assert_same(raw, out, "vpc")
    # qemu-img must use the footer's current size, not the CHS geometry
    footer = out.read_bytes()[-512:]
    assert struct.unpack_from(">HBB", footer, 56) == chs_geometry(25 * MiB)


@pytest.mark.parametrize(
    "options",
    ["subformat=fixed,force_size=on", "subformat=dynamic,force_size=on", "subformat=dynamic"],
)
def test_we_read_qemu_made_vhds(
    raw_source: tuple[Path, bytes], tmp_path: Path, options: str
) -> None:
    raw, content = raw_source
    vhd = tmp_path / "qemu.vhd"
    done = qemu_img("convert", "-f", "raw", "-O", "vpc", "-o", options, str(raw), str(vhd))
    assert done.returncode == 0, done.stderr
    with open_disk(vhd) as disk:
        assert disk.disk_type == options.split(",")[0].removeprefix("subformat=")
        assert disk.virtual_size == virtual_size(vhd, "vpc")
        data = disk.read(0, disk.virtual_size)
        extents = list(disk.iter_data_extents())
    assert data[: len(content)] == content[: len(data)]
    assert data[len(content) :] == bytes(max(len(data) - len(content), 0))
    # the extents cover every non-zero byte, and little else
    rebuilt = bytearray(len(data))
    for offset, length in extents:
        rebuilt[offset : offset + length] = data[offset : offset + length]
    assert bytes(rebuilt) == data
    assert sum(length for _, length in extents) <= sum(PIECES.values()) + 2 * 64 * 1024 * len(
        PIECES
    )


def test_dynamic_to_fixed_natively_equals_the_data(
    raw_source: tuple[Path, bytes], tmp_path: Path
) -> None:
    raw, _ = raw_source
    dynamic, fixed = tmp_path / "dyn.vhd", tmp_path / "fixed.vhd"
    opts = "subformat=dynamic,force_size=on"
    assert (
        qemu_img("convert", "-f", "raw", "-O", "vpc", "-o", opts, str(raw), str(dynamic)).returncode
        == 0
    )
    result = convert_to_fixed_vhd(dynamic, fixed)
    assert result.source_disk_type == "dynamic"
    assert result.data_bytes < 6 * MiB
    assert_same(raw, fixed, "vpc")
    assert inspect_image(fixed).azure_ready


@pytest.mark.parametrize("fmt", ["qcow2", "vmdk", "vhdx"])
def test_foreign_formats_convert_through_qemu_img(
    raw_source: tuple[Path, bytes], tmp_path: Path, fmt: str
) -> None:
    raw, _ = raw_source
    image, fixed = tmp_path / f"disk.{fmt}", tmp_path / "fixed.vhd"
    done = qemu_img("convert", "-f", "raw", "-O", fmt, str(raw), str(image))
    assert done.returncode == 0, done.stderr
    result = convert_to_fixed_vhd(image, fixed)
    assert result.source_format == fmt
    assert fixed.stat().st_size == 25 * MiB + 512
    assert_same(raw, fixed, "vpc")
    inspection = inspect_image(fixed)
    assert inspection.azure_ready, inspection.problems
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".part")] == []


@pytest.mark.parametrize("fmt", ["qcow2", "vmdk"])
def test_inspect_reads_foreign_sizes(tmp_path: Path, fmt: str) -> None:
    image = tmp_path / f"disk.{fmt}"
    assert qemu_img("create", "-f", fmt, str(image), "10M").returncode == 0
    inspection = inspect_image(image)
    assert (inspection.format, inspection.virtual_size) == (fmt, 10 * MiB)
    assert not inspection.azure_ready
    assert f"It is a {fmt} image" in inspection.problems[0]


@pytest.mark.parametrize("size_mib", [10, 127, 1024, 40 * 1024, 200 * 1024])
def test_geometry_matches_qemu(tmp_path: Path, size_mib: int) -> None:
    """Without force_size, qemu-img sizes a VHD by the spec's CHS algorithm: so do we."""
    vhd = tmp_path / "g.vhd"
    assert qemu_img("create", "-f", "vpc", str(vhd), f"{size_mib}M").returncode == 0
    footer = vhd.read_bytes()[-512:]
    current_size = struct.unpack_from(">Q", footer, 48)[0]
    cylinders, heads, sectors = struct.unpack_from(">HBB", footer, 56)
    if size_mib < 127 * 1024:  # beyond what CHS can address, the geometry is the maximum
        assert current_size == cylinders * heads * sectors * 512
    assert chs_geometry(current_size) == (cylinders, heads, sectors)
    with open_disk(vhd) as disk:
        assert disk.virtual_size == virtual_size(vhd, "vpc") == current_size
