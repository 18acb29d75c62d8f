"""`imagedist vhd inspect` and `imagedist vhd convert` as a user runs them."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result

from imagedist._cli._vhd_cmds import vhd
from imagedist._exceptions import InvalidInput
from imagedist._vhd import _reader

MiB = 1024 * 1024


@click.group()
def root() -> None:
    """Stands in for the imagedist group, which registers `vhd` the same way."""


root.add_command(vhd)


def run(*args: str, **kwargs: Any) -> Result:
    return CliRunner().invoke(root, ["vhd", *args], **kwargs)


def bad_input(result: Result, needle: str) -> str:
    assert result.exit_code == 2, (result.output, result.exception)
    assert "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and lines[0].endswith("."), lines
    assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def raw_disk(tmp_path: Path) -> Path:
    """A 5 MiB + 1 KiB sparse raw disk with data in three places."""
    path = tmp_path / "golden.raw"
    with path.open("wb") as file:
        file.truncate(5 * MiB + 1024)
        for offset in (0, 2 * MiB + 512, 5 * MiB):
            file.seek(offset)
            file.write(os.urandom(1024))
    return path


def test_help_lists_both_commands() -> None:
    result = run("--help")
    assert result.exit_code == 0
    assert "inspect" in result.output and "convert" in result.output


def test_inspect_json_of_a_raw_disk(raw_disk: Path) -> None:
    result = run("inspect", "--json", str(raw_disk))
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["format"] == "raw" and data["disk_type"] is None
    assert (data["virtual_size"], data["whole_mib"], data["azure_ready"]) == (
        5 * MiB + 1024,
        False,
        False,
    )
    assert 0 < data["occupied_bytes"] <= 3 * 4096 * 4
    assert len(data["problems"]) == 2
    assert "raw image" in data["problems"][0] and "whole number of MiB" in data["problems"][1]


def test_convert_then_inspect_says_ready(raw_disk: Path, tmp_path: Path) -> None:
    out = tmp_path / "golden.vhd"
    result = run("convert", str(raw_disk), str(out))
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"Wrote {out}: fixed VHD of 6291456 (6 MiB) from raw")
    assert out.stat().st_size == 6 * MiB + 512
    assert out.read_bytes()[: 5 * MiB + 1024] == raw_disk.read_bytes()
    table = run("inspect", str(out))
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    assert "format        vhd" in lines and "disk type     fixed" in lines
    assert "virtual size  6291456 (6 MiB)" in lines and "azure ready   yes" in lines
    assert not any(line.startswith("problem") for line in lines)


def test_inspect_table_lists_the_problems(raw_disk: Path) -> None:
    result = run("inspect", str(raw_disk))
    assert result.exit_code == 0, result.output
    assert "azure ready   no" in result.stdout
    assert result.stdout.count("\nproblem       ") == 2


def test_convert_refuses_to_overwrite_without_force(raw_disk: Path, tmp_path: Path) -> None:
    out = tmp_path / "taken.vhd"
    out.write_bytes(b"keep me")
    bad_input(run("convert", str(raw_disk), str(out)), "already exists; pass --force")
    assert out.read_bytes() == b"keep me"
    result = run("convert", "--force", str(raw_disk), str(out))
    assert result.exit_code == 0, result.output
    assert out.stat().st_size == 6 * MiB + 512


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("absent.raw", "out.vhd"), "does not exist"),
        (("golden.raw", "golden.raw", "--force"), "is the input file itself"),
        (("golden.raw", "nowhere/out.vhd"), "does not exist; create it first"),
        (("golden.raw", "."), "is a directory"),
    ],
)
def test_convert_bad_paths(
    raw_disk: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    args: tuple[str, ...],
    needle: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    bad_input(run("convert", *args), needle)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["golden.raw"]


def test_failed_conversion_leaves_nothing_behind(
    raw_disk: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "old.vhd"
    out.write_bytes(b"previous")
    original = _reader.DiskImage.mappings

    def failing(self: _reader.DiskImage) -> Iterator[tuple[int, int, int]]:
        for item in original(self):
            yield item
            raise InvalidInput("The source went away mid-copy; try again.")

    # Both copy paths (in the kernel, and through Python) walk the disk's mappings.
    monkeypatch.setattr(_reader.DiskImage, "mappings", failing)
    bad_input(run("convert", "--force", str(raw_disk), str(out)), "went away mid-copy")
    assert out.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["golden.raw", "old.vhd"]


def test_write_errors_are_bad_input(
    raw_disk: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(fd: int, data: Any, offset: int) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "pwrite", full)
    message = bad_input(run("convert", str(raw_disk), str(tmp_path / "out.vhd")), "No space left")
    assert "check the free space" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["golden.raw"]


def test_inspect_vmdk_descriptor_without_qemu(tmp_path: Path) -> None:
    path = tmp_path / "disk.vmdk"
    path.write_text(
        '# Disk DescriptorFile\nversion=1\ncreateType="monolithicFlat"\n'
        'RW 20480 FLAT "disk-flat.vmdk" 0\nRW 2048 FLAT "disk-2.vmdk" 0\n',
        encoding="utf-8",
    )
    data = json.loads(run("inspect", "--json", str(path)).stdout)
    assert (data["format"], data["virtual_size"], data["azure_ready"]) == ("vmdk", 11 * MiB, False)
