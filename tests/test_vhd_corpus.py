"""A corpus of damaged and unusable disk images: each gets its own one-sentence error, exit 2.

Every file is generated here, from a good fixed or dynamic VHD, with one defect.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from imagedist._cli._vhd_cmds import vhd
from imagedist._vhd._footer import DynamicHeader, Footer, fixed_footer
from test_vhd_format import make_dynamic

MiB = 1024 * 1024
TiB = 1024 * 1024 * MiB
HEADER_AT = 512  # where make_dynamic puts the dynamic disk header


def run(*args: str, **kwargs: Any) -> Result:
    return CliRunner().invoke(vhd, list(args), **kwargs)


def assert_one_error(result: Result, needle: str) -> str:
    """Exit 2, a single 'Error: ...' sentence on stderr, no traceback; returns the sentence."""
    assert result.exit_code == 2, (result.output, result.exception)
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ") and lines[0].endswith("."), lines[0]
    assert needle in lines[0], lines[0]
    assert result.stdout == ""
    return lines[0]


# building blocks


def fixed(path: Path, size: int = MiB, **changes: Any) -> Path:
    """A fixed VHD of random data whose footer has ``changes`` (checksum recomputed)."""
    footer = replace(fixed_footer(size), **changes).with_fresh_checksum()
    path.write_bytes(os.urandom(size) + footer.pack())
    return path


def dynamic(path: Path) -> Path:
    make_dynamic(path, 4 * MiB, {0: os.urandom(2 * MiB)})
    return path


def patch(path: Path, offset: int, data: bytes) -> Path:
    with path.open("r+b") as file:
        file.seek(offset)
        file.write(data)
    return path


def set_footer(path: Path, fresh_checksum: bool = True, **changes: Any) -> Path:
    """Rewrite the footer at the end of ``path`` with ``changes``."""
    size = path.stat().st_size
    with path.open("rb") as file:
        file.seek(size - 512)
        footer = replace(Footer.unpack(file.read()), **changes)
    raw = footer.with_fresh_checksum().pack() if fresh_checksum else footer._pack(footer.checksum)
    return patch(path, size - 512, raw)


def set_header(path: Path, offset: int, data: bytes) -> Path:
    """Change the dynamic disk header at ``offset`` (relative to it) and fix its checksum."""
    patch(path, HEADER_AT + offset, data)
    with path.open("rb") as file:
        file.seek(HEADER_AT)
        header = DynamicHeader.unpack(file.read(1024))
    return patch(path, HEADER_AT + 36, struct.pack(">I", header.computed_checksum))


def cut(path: Path, start: int, length: int) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[:start] + data[start + length :])
    return path


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def mkdir(path: Path) -> Path:
    path.mkdir()
    return path


def sparse(path: Path, size: int, tail: bytes) -> Path:
    with path.open("wb") as file:
        file.truncate(size - len(tail))
        file.seek(size - len(tail))
        file.write(tail)
    return path


Maker = Callable[[Path], Path]

CORPUS: dict[str, tuple[Maker, str]] = {
    "empty": (lambda p: write(p, b""), "is empty"),
    "missing": (lambda p: p, "does not exist"),
    "directory": (mkdir, "is a directory"),
    "raw-odd-size": (lambda p: write(p, b"\x01" * 1000), "not a whole number of 512-byte sectors"),
    "footer-cut-short": (lambda p: cut(fixed(p), MiB + 412, 100), "footer cut short (412 of 512 bytes)"),
    "bad-cookie": (lambda p: set_footer(fixed(p), cookie=b"conectiz"), "cookie is b'conectiz'"),
    "bad-checksum": (lambda p: set_footer(fixed(p), False, timestamp=7), "bad VHD footer checksum"),
    "bad-version": (lambda p: set_footer(fixed(p), version=0x00020000), "format version 0x00020000"),
    "differencing": (lambda p: set_footer(fixed(p), disk_type=4), "differencing VHD"),
    "unknown-type": (lambda p: set_footer(fixed(p), disk_type=7), "disk type 7"),
    "zero-size": (lambda p: write(p, fixed_footer(0).pack()), "virtual size 0"),
    "size-not-sectors": (lambda p: set_footer(fixed(p), current_size=MiB + 100), "not a whole number of 512-byte sectors; the file is corrupt"),
    "too-large": (lambda p: sparse(p, 2 * MiB, fixed_footer(5 * TiB).pack()), "larger than Azure accepts"),
    "fixed-truncated": (lambda p: cut(fixed(p), 1000 * 512, 4096), "fixed VHD cut short"),
    "fixed-size-mismatch": (lambda p: write(p, bytes(MiB + 512) + fixed_footer(MiB).pack()), "does not match the size"),
    "vhdx": (lambda p: write(p, b"vhdxfile" + bytes(MiB)), "VHDX image"),
    "dynamic-no-end-footer": (lambda p: cut(dynamic(p), p.stat().st_size - 512, 512), "no footer at its end"),
    "dynamic-header-past-eof": (lambda p: set_footer(dynamic(p), data_offset=1 << 30), "header at offset 1073741824"),
    "dynamic-bad-header-cookie": (lambda p: patch(dynamic(p), HEADER_AT, b"cxsparsy"), "cookie is b'cxsparsy'"),
    "dynamic-bad-header-checksum": (lambda p: patch(dynamic(p), HEADER_AT + 900, b"!"), "bad dynamic disk header checksum"),
    "dynamic-header-version": (lambda p: set_header(dynamic(p), 24, struct.pack(">I", 0x00030000)), "header version 0x00030000"),
    "dynamic-block-size-3mib": (lambda p: set_header(dynamic(p), 32, struct.pack(">I", 3 * MiB)), "not a power of two"),
    "dynamic-bat-too-small": (lambda p: set_header(dynamic(p), 28, struct.pack(">I", 1)), "too few for its"),
    "dynamic-bat-past-eof": (lambda p: set_header(dynamic(p), 16, struct.pack(">Q", 1 << 40)), "runs past the end of the file"),
    "dynamic-bat-entry-outside": (lambda p: patch(dynamic(p), 1536 + 4, struct.pack(">I", 1 << 24)), "entry 1 pointing at offset 8589934592"),
}  # fmt: skip


def make(tmp_path: Path, name: str) -> Path:
    return CORPUS[name][0](tmp_path / f"{name}.vhd")


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_inspect_names_the_problem(tmp_path: Path, name: str) -> None:
    path = make(tmp_path, name)
    assert_one_error(run("inspect", str(path)), CORPUS[name][1])
    assert_one_error(run("inspect", "--json", str(path)), CORPUS[name][1])


# converting a VHDX is qemu-img's job: it rejects the fake one (or is missing)
CONVERT_NEEDLE = {"vhdx": "qemu-img"}


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_convert_refuses_and_writes_nothing(tmp_path: Path, name: str) -> None:
    path = make(tmp_path, name)
    before = sorted(p.name for p in tmp_path.iterdir())
    result = run("convert", str(path), str(tmp_path / "out.vhd"))
    assert_one_error(result, CONVERT_NEEDLE.get(name, CORPUS[name][1]))
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_every_problem_has_its_own_message(tmp_path: Path) -> None:
    messages = {}
    for name in CORPUS:
        message = assert_one_error(run("inspect", str(make(tmp_path, name))), CORPUS[name][1])
        messages[name] = message.replace(str(tmp_path / f"{name}.vhd"), "FILE")
    assert len(CORPUS) >= 15
    assert len(set(messages.values())) == len(messages), messages


def test_size_not_whole_mib_is_inspected_not_refused(tmp_path: Path) -> None:
    path = fixed(tmp_path / "odd.vhd", size=MiB + 3 * 512)
    result = run("inspect", "--json", str(path))
    assert result.exit_code == 0, result.output
    assert '"azure_ready": false' in result.stdout
    assert '"whole_mib": false' in result.stdout
    assert "not a whole number of MiB" in result.stdout and "round it up" in result.stdout
    converted = run("convert", str(path), str(tmp_path / "even.vhd"))
    assert converted.exit_code == 0, converted.output
    again = run("inspect", "--json", str(tmp_path / "even.vhd"))
    assert '"azure_ready": true' in again.stdout


def qcow2_header(size: int) -> bytes:
    """The start of a qcow2 v3 image: magic, version, ..., size at offset 24."""
    return (b"QFI\xfb" + struct.pack(">I", 3) + bytes(16) + struct.pack(">Q", size)).ljust(
        65536, b"\0"
    )


def test_qcow2_without_qemu_img_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "disk.qcow2"
    source.write_bytes(qcow2_header(10 * MiB))
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    result = run("convert", str(source), str(tmp_path / "out.vhd"))
    message = assert_one_error(result, "needs qemu-img, which is not on PATH")
    assert "`apt-get install qemu-utils`" in message and "`brew install qemu`" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bin", "disk.qcow2"]
    inspected = run("inspect", str(source))  # inspecting needs no qemu-img
    assert inspected.exit_code == 0, inspected.output
    assert "qcow2" in inspected.stdout
