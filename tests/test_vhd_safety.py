"""Inputs stay inside their file, corrupt BATs are refused, and an upload is verified before it
counts: a disk that changes while it is read never goes out as done, and a converted copy does
not outlive its verified upload."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import itertools
import json
import os
import random
import shutil
import struct
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, cast
from unittest import mock

import pytest
from click.testing import Result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imagedist import Imagedist, OsType, load_config
from imagedist._domain import BlobRef, Job, SourceKind, SourceRow, SourceState
from imagedist._exceptions import InvalidInput
from imagedist._vhd import _convert as convert_module
from imagedist._vhd import convert_to_fixed_vhd, inspect_image, open_disk
from imagedist._vhd._footer import DISK_DIFFERENCING, DISK_DYNAMIC, DynamicHeader, fixed_footer
from imagedist._vhd._writer import write_fixed_vhd
from imagedist.abc import BlobStore

from helpers import make_disk, write_config

MiB = 1024 * 1024
QEMU_IMG = shutil.which("qemu-img")
needs_qemu = pytest.mark.skipif(
    QEMU_IMG is None,
    reason="qemu-img is not on PATH (install qemu-utils: `apt-get install qemu-utils`)",
)
Cli = Callable[..., Result]
SUBMIT = ("--image-name", "golden", "--os-type", "linux")
HOST_SECRET = b"HOST-FILE-CONTENT-THAT-MUST-NEVER-BE-UPLOADED"


def qemu_img(*args: str) -> None:
    assert QEMU_IMG is not None
    done = subprocess.run([QEMU_IMG, *args], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def one_sentence(result: Result, *needles: str) -> str:
    """Exit 2, one 'Error: ...' sentence on stderr, no traceback."""
    assert result.exit_code == 2, (result.output, result.exception)
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and lines[0].endswith("."), lines
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture
def host_file(tmp_path: Path) -> Path:
    """A file of the host's that no disk image may pull in."""
    path = tmp_path / "host" / "secret.raw"
    path.parent.mkdir()
    path.write_bytes(HOST_SECRET.ljust(MiB, b"\0"))
    return path


QemuCalls = Callable[[], list[list[str]]]


@pytest.fixture
def qemu_calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> QemuCalls:
    """``qemu_calls()``: every qemu-img command line run so far (through a wrapper on PATH)."""
    assert QEMU_IMG is not None
    folder = tmp_path / "wrapper"
    folder.mkdir()
    log = folder / "calls"
    script = folder / "qemu-img"
    script.write_text(
        "#!/bin/sh\n"
        f"for a in \"$@\"; do printf '%s\\n' \"$a\"; done >> '{log}'\n"
        f"echo '--end--' >> '{log}'\n"
        f"exec '{QEMU_IMG}' \"$@\"\n",
        encoding="utf-8",
    )
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")

    def calls() -> list[list[str]]:
        text = log.read_text(encoding="utf-8") if log.exists() else ""
        return [c.strip("\n").split("\n") for c in text.split("--end--\n") if c.strip()]

    return calls


# 1. Images that name other files


def qcow2_backing(folder: Path, host: Path) -> Path:
    path = folder / "bad.img"
    qemu_img("create", "-q", "-f", "qcow2", "-b", str(host), "-F", "raw", str(path), "1M")
    return path


def qcow2_missing_backing(folder: Path, host: Path) -> Path:
    path = folder / "bad.img"
    missing = str(host.parent / "missing.raw")
    qemu_img("create", "-q", "-f", "qcow2", "-u", "-b", missing, "-F", "raw", str(path), "1M")
    return path


def qcow2_json_backing(folder: Path, host: Path) -> Path:
    path = folder / "bad.qcow2"
    spec = json.dumps({"driver": "raw", "file": {"driver": "file", "filename": str(host)}})
    qemu_img(
        "create", "-q", "-f", "qcow2", "-u", "-b", f"json:{spec}", "-F", "raw", str(path), "1M"
    )
    return path


def qcow2_v2_backing(folder: Path, host: Path) -> Path:
    path = folder / "bad.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-o", "compat=0.10", "-b", str(host), "-F", "raw",
             str(path), "1M")  # fmt: skip
    return path


def qcow2_data_file(folder: Path, host: Path) -> Path:
    path = folder / "bad.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-o", f"data_file={host}", str(path), "1M")
    return path


def descriptor(folder: Path, *lines: str, name: str = "bad.vmdk") -> Path:
    path = folder / name
    head = ["# Disk DescriptorFile", "version=1", "CID=fffffffe", "parentCID=ffffffff"]
    head.append('createType="monolithicFlat"')
    path.write_text("\n".join([*head, *lines]) + "\n", encoding="utf-8")
    return path


def vmdk_flat_absolute(folder: Path, host: Path) -> Path:
    return descriptor(folder, f'RW 2048 FLAT "{host}" 0')


def vmdk_flat_relative(folder: Path, host: Path) -> Path:
    return descriptor(folder, f'RW 2048 FLAT "{os.path.relpath(host, folder)}" 0')


def vmdk_flat_split_over_lines(folder: Path, host: Path) -> Path:
    # qemu's sscanf reads an extent line across newlines: so must our check
    return descriptor(folder, "RW", "2048", "FLAT", f'"{host}" 0')


def vmdk_read_only_extent(folder: Path, host: Path) -> Path:
    return descriptor(folder, f'RDONLY 2048 FLAT "{host}" 0')


def vmdk_sparse_extent(folder: Path, host: Path) -> Path:
    other = folder / "other.vmdk"
    qemu_img("create", "-q", "-f", "vmdk", str(other), "1M")
    return descriptor(folder, 'RW 2048 SPARSE "other.vmdk"')


def vmdk_sparse_without_closing_quote(folder: Path, host: Path) -> Path:
    return descriptor(folder, f'RW 2048 SPARSE "{host}')


def vmdk_type_glued_to_name(folder: Path, host: Path) -> Path:
    return descriptor(folder, f'RW 2048 VMFSSPARSE"{host}"')


def vmdk_sparse_child(folder: Path, host: Path) -> Path:
    base = folder / "base.vmdk"
    qemu_img("create", "-q", "-f", "vmdk", str(base), "1M")
    path = folder / "child.vmdk"
    qemu_img("create", "-q", "-f", "vmdk", "-b", str(base), "-F", "vmdk", str(path), "1M")
    return path


def vmdk_capacity_zero(folder: Path, host: Path) -> Path:
    """A sparse header of capacity 0: qemu then opens its embedded descriptor, extents and all."""
    path = folder / "bad.vmdk"
    qemu_img("create", "-q", "-f", "vmdk", str(path), "1M")
    data = bytearray(path.read_bytes())
    struct.pack_into("<Q", data, 12, 0)
    at = struct.unpack_from("<Q", data, 28)[0] * 512
    text = descriptor(folder, f'RW 2048 FLAT "{host}" 0', name="text.vmdk").read_bytes()
    data[at : at + 20 * 512] = text.ljust(20 * 512, b"\0")
    path.write_bytes(data)
    return path


def vhdx_differencing(folder: Path, host: Path) -> Path:
    path = folder / "bad.vhdx"
    qemu_img("create", "-q", "-f", "vhdx", str(path), "3M")
    data = bytearray(path.read_bytes())
    region = 192 * 1024
    for at in range(
        region + 16, region + 16 + 32 * struct.unpack_from("<I", data, region + 8)[0], 32
    ):
        guid, offset = struct.unpack_from("<16sQ", data, at)
        if guid.hex() == "06a27c8b90479a4bb8fe575f050f886e":  # the metadata region
            metadata = offset
    for at in range(
        metadata + 32, metadata + 32 + 32 * struct.unpack_from("<H", data, metadata + 10)[0], 32
    ):
        guid, offset = struct.unpack_from("<16sI", data, at)
        if guid.hex() == "3767a1ca36fa434db3b633f0aa44e76b":  # the file parameters
            struct.pack_into("<I", data, metadata + offset + 4, 2)  # HasParent
    path.write_bytes(data)
    return path


NAMES_ANOTHER_FILE: dict[str, tuple[Callable[[Path, Path], Path], str]] = {
    "qcow2-backing-file": (qcow2_backing, "names a backing file"),
    "qcow2-missing-backing-file": (qcow2_missing_backing, "names a backing file"),
    "qcow2-json-backing-file": (qcow2_json_backing, "names a backing file"),
    "qcow2-version-2-backing-file": (qcow2_v2_backing, "names a backing file"),
    "qcow2-external-data-file": (qcow2_data_file, "names an external data file"),
    "vmdk-flat-extent-absolute": (vmdk_flat_absolute, "names an extent in another file"),
    "vmdk-flat-extent-relative": (vmdk_flat_relative, "names an extent in another file"),
    "vmdk-extent-split-over-lines": (vmdk_flat_split_over_lines, "an extent in another file"),
    "vmdk-read-only-extent": (vmdk_read_only_extent, "names an extent in another file"),
    "vmdk-sparse-extent": (vmdk_sparse_extent, "names an extent in another file ('other.vmdk')"),
    "vmdk-extent-no-closing-quote": (vmdk_sparse_without_closing_quote, "an extent in another"),
    "vmdk-type-glued-to-name": (vmdk_type_glued_to_name, "names an extent in another file"),
    "vmdk-sparse-with-parent": (vmdk_sparse_child, "names a parent disk"),
    "vmdk-sparse-capacity-zero": (vmdk_capacity_zero, "names the extent files"),
    "vhdx-differencing": (vhdx_differencing, "names a parent disk"),
}


@needs_qemu
@pytest.mark.parametrize("case", sorted(NAMES_ANOTHER_FILE))
def test_convert_refuses_an_image_naming_another_file(
    tmp_path: Path, host_file: Path, qemu_calls: QemuCalls, cli: Cli, case: str
) -> None:
    make, needle = NAMES_ANOTHER_FILE[case]
    folder = tmp_path / "in"
    folder.mkdir()
    image = make(folder, host_file)
    before = listing(folder)
    out = folder / "out.vhd"
    result = cli(tmp_path / "unused.toml", "vhd", "convert", str(image), str(out))
    message = one_sentence(result, needle, "reads nothing outside the file it is given")
    assert str(image) in message or image.name in message
    assert listing(folder) == before  # no output, no .part file
    # qemu-img never even opened it: our own reading of the headers refused it first
    assert not any(str(image) in arg for call in qemu_calls() for arg in call), qemu_calls()


@needs_qemu
@pytest.mark.parametrize("case", sorted(NAMES_ANOTHER_FILE))
def test_submit_refuses_an_image_naming_another_file(
    tmp_path: Path, host_file: Path, config_path: Path, cli: Cli, case: str
) -> None:
    make, needle = NAMES_ANOTHER_FILE[case]
    folder = tmp_path / "in"
    folder.mkdir()
    image = make(folder, host_file)
    one_sentence(cli(config_path, "submit", str(image), *SUBMIT), needle)
    work = config_path.parent / "state" / "work"
    assert not work.exists(), listing(work)  # no work folder: nothing was written
    jobs = cli(config_path, "jobs", "--json")
    assert jobs.exit_code == 0 and json.loads(jobs.stdout) == []
    blobs = config_path.parent / "state" / "blobs"
    assert not blobs.exists() or not [p for p in blobs.rglob("*") if p.is_file()]


@needs_qemu
@pytest.mark.parametrize("case", ["qcow2-backing-file", "vmdk-flat-extent-absolute"])
def test_inspect_names_the_reference_as_a_problem(
    tmp_path: Path, host_file: Path, cli: Cli, case: str
) -> None:
    image = NAMES_ANOTHER_FILE[case][0](tmp_path, host_file)
    inspection = inspect_image(image)
    assert not inspection.azure_ready
    assert NAMES_ANOTHER_FILE[case][1].replace("names", "It names") in inspection.problems[0]


@needs_qemu
def test_the_host_file_is_never_merged_in(tmp_path: Path, host_file: Path) -> None:
    """The issue's reproduction: on the old code the output held the host file's bytes."""
    for make in (qcow2_backing, vmdk_flat_absolute):
        image = make(tmp_path, host_file)
        out = tmp_path / "out.vhd"
        with pytest.raises(InvalidInput, match="reads nothing outside"):
            convert_to_fixed_vhd(image, out)
        assert not out.exists()
        image.unlink()


def test_a_differencing_vhd_is_refused_without_qemu_img(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli: Cli
) -> None:
    """A dynamic VHD turned differencing, with a parent name and locator: refused natively."""
    path = tmp_path / "child.vhd"
    make_dynamic(path, 4 * 4096, {0: b"\x01" * 4096}, block_size=4096)
    data = bytearray(path.read_bytes())
    footer = replace(fixed_footer(4 * 4096), disk_type=DISK_DIFFERENCING, data_offset=512).pack()
    data[:512] = footer
    data[-512:] = footer
    data[512 + 64 : 512 + 64 + 20] = "parent.vhd".encode("utf-16-be")  # parent name
    path.write_bytes(data)
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    one_sentence(
        cli(tmp_path / "unused.toml", "vhd", "convert", str(path), str(tmp_path / "o.vhd")),
        "differencing VHD",
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["child.vhd"]


@needs_qemu
@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda f: qemu_img("create", "-q", "-f", "vmdk", str(f), "3M"), id="vmdk-sparse"),
        pytest.param(lambda f: qemu_img("create", "-q", "-f", "vmdk", "-o", "subformat=streamOptimized", str(f), "3M"), id="vmdk-stream"),
        pytest.param(lambda f: qemu_img("create", "-q", "-f", "vhdx", str(f), "3M"), id="vhdx"),
        pytest.param(lambda f: qemu_img("create", "-q", "-f", "qcow2", str(f), "3M"), id="qcow2"),
    ],
)  # fmt: skip
def test_self_contained_images_convert_with_their_format_given(
    tmp_path: Path, qemu_calls: QemuCalls, make: Callable[[Path], None]
) -> None:
    image = tmp_path / "disk.img"
    make(image)
    found_format = inspect_image(image).format
    result = convert_to_fixed_vhd(image, tmp_path / "out.vhd")
    assert result.virtual_size == 3 * MiB
    assert inspect_image(tmp_path / "out.vhd").azure_ready
    calls = qemu_calls()
    assert calls, "qemu-img was not used"
    for call in calls:
        assert call[call.index("-f") + 1] == found_format  # the file never picks its format
        named = [arg for arg in call if arg.endswith(("disk.img", ".part"))]
        assert named and all(os.path.isabs(arg) for arg in named)  # never a protocol prefix
    assert any(call[:2] == ["info", "--backing-chain"] for call in calls)


@needs_qemu
def test_a_version_2_qcow2_header_extension_is_not_taken_for_features(tmp_path: Path) -> None:
    """In version 2 the header extensions start where version 3 keeps its feature bits."""
    image = tmp_path / "v2.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-o", "compat=0.10", str(image), "1M")
    data = bytearray(image.read_bytes())
    data[72:88] = struct.pack(">II4sI", 0x1234_5678, 4, b"abcd", 0)  # an unknown extension
    image.write_bytes(data)
    assert convert_to_fixed_vhd(image, tmp_path / "out.vhd").virtual_size == MiB


@needs_qemu
def test_a_descriptor_whose_extent_is_itself_converts(tmp_path: Path) -> None:
    image = descriptor(tmp_path, 'RW 1 FLAT "self.vmdk" 0', name="self.vmdk")
    convert_to_fixed_vhd(image, tmp_path / "out.vhd")
    assert (tmp_path / "out.vhd").read_bytes().startswith(b"# Disk DescriptorFile")


@needs_qemu
def test_vhdx_is_converted_on_submit(tmp_path: Path, config_path: Path, cli: Cli) -> None:
    """The README says submit converts VHDX: it does."""
    image = tmp_path / "disk.vhdx"
    qemu_img("create", "-q", "-f", "vhdx", str(image), "3M")
    result = cli(config_path, "submit", str(image), *SUBMIT)
    assert result.exit_code == 0, result.output


# 5. Output paths and partial output


def test_convert_refuses_an_output_that_is_a_symlink(tmp_path: Path, cli: Cli) -> None:
    source = make_disk(tmp_path / "disk.raw", size_mib=2, data_mib=(0,))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    victim = elsewhere / "victim"
    victim.write_bytes(b"keep")
    for target in (victim, elsewhere / "absent"):
        link = tmp_path / "out.vhd"
        link.unlink(missing_ok=True)
        link.symlink_to(target)
        for force in ((), ("--force",)):
            result = cli(tmp_path / "unused.toml", "vhd", "convert", *force, str(source), str(link))
            one_sentence(result, "is a symbolic link")
            assert link.is_symlink() and victim.read_bytes() == b"keep"
            assert sorted(p.name for p in elsewhere.iterdir()) == ["victim"]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]


def test_a_source_changing_during_conversion_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli: Cli
) -> None:
    source = make_disk(tmp_path / "disk.raw", size_mib=2, data_mib=(0,))
    original = write_fixed_vhd

    def write_then_touch(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        with source.open("r+b") as file:  # someone writes to the disk meanwhile
            file.write(b"changed")
        return result

    monkeypatch.setattr(convert_module, "write_fixed_vhd", write_then_touch)
    out = tmp_path / "out.vhd"
    one_sentence(
        cli(tmp_path / "unused.toml", "vhd", "convert", str(source), str(out)),
        "changed while it was converted",
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["disk.raw"]


def test_a_failed_conversion_on_submit_leaves_no_work_folder(
    tmp_path: Path, config_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = make_disk(tmp_path / "disk.raw", size_mib=2, data_mib=(0,))

    def full(*args: Any, **kwargs: Any) -> Any:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(convert_module, "write_fixed_vhd", full)
    one_sentence(cli(config_path, "submit", str(source), *SUBMIT), "No space left on device")
    assert not (config_path.parent / "state" / "work").exists()


def test_a_fifo_is_refused_not_waited_on(tmp_path: Path, config_path: Path, cli: Cli) -> None:
    fifo = tmp_path / "disk.vhd"
    os.mkfifo(fifo)
    one_sentence(cli(tmp_path / "unused.toml", "vhd", "inspect", str(fifo)), "not a regular file")
    one_sentence(cli(config_path, "submit", str(fifo), *SUBMIT), "not a regular file")


# 2. Dynamic VHDs whose block allocation table points where it must not

BLOCK = 4096  # small blocks keep the crafted files small: a 512-byte bitmap, then 4 KiB of data
SPAN = 512 + BLOCK


def make_dynamic(
    path: Path,
    size: int,
    blocks: dict[int, bytes],
    block_size: int = BLOCK,
    bat: dict[int, int] | None = None,
    extra_slots: int = 0,
) -> tuple[int, int]:
    """A dynamic VHD: footer copy, header at 512, BAT at 1536, blocks in order, footer.

    ``bat`` overrides entries (sector numbers) after the blocks are laid out. Returns the
    offset of the first block and the file's size.
    """
    entries = -(-size // block_size)
    bat_bytes = -(-4 * entries // 512) * 512
    first = 1536 + bat_bytes
    span = 512 + block_size
    table = [0xFFFFFFFF] * entries
    body = bytearray()
    for index, data in sorted(blocks.items()):
        table[index] = (first + len(body)) // 512
        body += b"\xff" * (block_size // 512 // 8) + bytes(512 - block_size // 512 // 8)
        body += data.ljust(block_size, b"\0")
    body += bytes(span * extra_slots)
    for index, sector in (bat or {}).items():
        table[index] = sector
    footer = replace(fixed_footer(size), disk_type=DISK_DYNAMIC, data_offset=512).pack()
    header = DynamicHeader.build(1536, entries, block_size)
    raw = struct.pack(f">{entries}I", *table).ljust(bat_bytes, b"\xff")
    path.write_bytes(footer + header + raw + bytes(body) + footer)
    return first, path.stat().st_size


@pytest.mark.parametrize(
    ("bat", "needle"),
    [
        pytest.param({1: "same"}, "entries 0 and 1 pointing at overlapping blocks", id="bat1-equals-bat0"),
        pytest.param({1: "next-sector"}, "entries 0 and 1 pointing at overlapping blocks", id="partial-overlap"),
        pytest.param({0: 1}, "entry 0 pointing at offset 512, inside its footer copy", id="into-header"),
        pytest.param({0: 0}, "entry 0 pointing at offset 0, inside", id="into-footer-copy"),
        pytest.param({0: 3}, "entry 0 pointing at offset 1536, inside", id="into-bat"),
        pytest.param({1: "past-end"}, "outside the file", id="into-end-footer"),
    ],
)  # fmt: skip
def test_a_corrupt_bat_is_refused(
    tmp_path: Path, config_path: Path, cli: Cli, bat: dict[int, Any], needle: str
) -> None:
    path = tmp_path / "bad.vhd"
    first, file_size = make_dynamic(path, 4 * BLOCK, {0: b"\x01" * BLOCK, 1: b"\x02" * BLOCK})
    values = {
        "same": first // 512,
        "next-sector": first // 512 + 1,
        "past-end": (file_size - 512 - SPAN) // 512 + 1,
    }
    sectors = {i: values[v] if isinstance(v, str) else int(v) for i, v in bat.items()}
    make_dynamic(path, 4 * BLOCK, {0: b"\x01" * BLOCK, 1: b"\x02" * BLOCK}, bat=sectors)
    with pytest.raises(InvalidInput, match="block allocation table") as refused:
        open_disk(path)
    assert needle in str(refused.value)
    one_sentence(
        cli(tmp_path / "unused.toml", "vhd", "convert", str(path), str(tmp_path / "out.vhd")),
        needle,
    )
    one_sentence(cli(config_path, "submit", str(path), *SUBMIT), needle)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.vhd", "imagedist.toml"]


def test_a_sound_bat_still_converts(tmp_path: Path) -> None:
    path = tmp_path / "good.vhd"
    make_dynamic(path, 4 * BLOCK, {0: b"\x01" * BLOCK, 3: b"\x03" * BLOCK}, extra_slots=1)
    with open_disk(path) as disk:
        assert disk.read(0, 4 * BLOCK) == b"\x01" * BLOCK + bytes(2 * BLOCK) + b"\x03" * BLOCK


# 3. Uploads that are verified before they count


def fixed_vhd(path: Path, size_mib: int = 16) -> Path:
    make_disk(path, size_mib=size_mib, data_mib=(0, size_mib // 2, size_mib - 1))
    with path.open("ab") as file:
        file.write(fixed_footer(size_mib * MiB).pack())
    return path


def open_app(folder: Path, extra: str = "") -> Imagedist:
    config = write_config(folder)
    if extra:
        config.write_text(config.read_text(encoding="utf-8") + extra, encoding="utf-8")
    return Imagedist(load_config(config))


async def tier0(app: Imagedist, job: Job) -> SourceRow:
    sources = await app.ctx.backend.state.list_sources(job.id)
    return next(s for s in sources if s.kind is SourceKind.TIER0)


def after_first_write(app: Imagedist, action: Callable[[], None]) -> None:
    """Run ``action`` once, just after the upload's first page write (a hook in the store)."""
    blobs = app.ctx.backend.blobs
    original = blobs.write_pages
    done: list[bool] = []

    async def write_pages(ref: BlobRef, offset: int, data: bytes) -> None:
        await original(ref, offset, data)
        if not done:
            done.append(True)
            action()

    blobs.write_pages = write_pages  # type: ignore[method-assign]


def zero_footer(path: Path) -> Callable[[], None]:
    def action() -> None:
        with path.open("r+b") as file:
            file.seek(-512, os.SEEK_END)
            file.write(bytes(512))

    return action


def test_a_footer_zeroed_during_upload_fails_the_upload(tmp_path: Path) -> None:
    """The issue's reproduction: the blob ended in 512 zero bytes and the job 'completed'."""
    disk = fixed_vhd(tmp_path / "golden.vhd")

    async def main() -> tuple[SourceRow, list[str], Any, Any]:
        async with open_app(tmp_path) as app:
            job = await app.submit(disk, "golden", OsType.LINUX)
            after_first_write(app, zero_footer(disk))
            await app.upload(job.id)
            row = await tier0(app, job)
            blobs = await app.ctx.backend.blobs.list_blobs(row.blob.account, row.blob.container)
            await app.work([job.id])
            status = await app.status(job.id)
            return row, blobs, status, await tier0(app, job)

    row, blobs, status, after = asyncio.run(main())
    assert row.state is SourceState.FAILED
    assert "changed while it was uploaded; keep it unchanged" in row.error
    assert row.content_md5 == ""
    assert blobs == []  # the untrustworthy blob is gone, so a retry starts afresh
    assert not status.completed and after.state is not SourceState.READY


@pytest.mark.parametrize("change", ["data", "replace", "truncate", "delete"])
def test_any_change_to_the_file_during_upload_fails_it(tmp_path: Path, change: str) -> None:
    disk = fixed_vhd(tmp_path / "golden.vhd")

    def act() -> None:
        if change == "data":
            with disk.open("r+b") as file:
                file.seek(MiB)
                file.write(b"x" * 512)
        elif change == "replace":
            other = fixed_vhd(tmp_path / "other.vhd")
            os.replace(other, disk)
        elif change == "truncate":
            os.truncate(disk, 4 * MiB)
        else:
            disk.unlink()

    async def main() -> SourceRow:
        async with open_app(tmp_path) as app:
            job = await app.submit(disk, "golden", OsType.LINUX)
            after_first_write(app, act)
            await app.upload(job.id)
            return await tier0(app, job)

    row = asyncio.run(main())
    assert row.state is SourceState.FAILED, row
    assert "changed while it was uploaded" in row.error, row.error


class LosingStore:
    """Wraps a store: loses the write of the last page, or stores a wrong Content-MD5."""

    def __init__(self, inner: Any, lose_tail: bool = False, bad_md5: bool = False) -> None:
        self.inner, self.lose_tail, self.bad_md5 = inner, lose_tail, bad_md5

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def write_pages(self, ref: BlobRef, offset: int, data: bytes) -> None:
        props = await self.inner.get_properties(ref)
        if self.lose_tail and offset + len(data) == props.size:
            data = data[:-512]
            if not data:
                return
        await self.inner.write_pages(ref, offset, data)

    async def set_content_md5(self, ref: BlobRef, md5: bytes) -> None:
        await self.inner.set_content_md5(
            ref, hashlib.md5(b"other").digest() if self.bad_md5 else md5
        )


@pytest.mark.parametrize(("lose_tail", "bad_md5", "needle"), [
    (True, False, "read back differ from the file's"),
    (False, True, "reads back as"),
])  # fmt: skip
def test_the_blob_is_read_back_before_the_upload_counts(
    tmp_path: Path, lose_tail: bool, bad_md5: bool, needle: str
) -> None:
    disk = fixed_vhd(tmp_path / "golden.vhd")

    async def main() -> SourceRow:
        async with open_app(tmp_path) as app:
            job = await app.submit(disk, "golden", OsType.LINUX)
            backend = app.ctx.backend
            backend.blobs = cast(BlobStore, LosingStore(backend.blobs, lose_tail, bad_md5))
            await app.upload(job.id)
            return await tier0(app, job)

    row = asyncio.run(main())
    assert row.state is SourceState.FAILED
    assert needle in row.error and "retry the job to upload it afresh" in row.error


@pytest.mark.parametrize("md5_on", [True, False])
def test_the_tier0_row_records_the_md5(tmp_path: Path, md5_on: bool) -> None:
    disk = fixed_vhd(tmp_path / "golden.vhd")
    extra = "" if md5_on else "\n[upload]\ncontent_md5 = false\n"

    async def main() -> SourceRow:
        async with open_app(tmp_path, extra) as app:
            job = await app.submit(disk, "golden", OsType.LINUX)
            await app.upload(job.id)
            return await tier0(app, job)

    row = asyncio.run(main())
    assert row.state is SourceState.READY
    assert row.content_md5 == (hashlib.md5(disk.read_bytes()).hexdigest() if md5_on else "")


def test_a_reupload_must_be_the_disk_uploaded_first(tmp_path: Path) -> None:
    disk = fixed_vhd(tmp_path / "golden.vhd")

    async def main() -> tuple[SourceRow, SourceRow]:
        async with open_app(tmp_path) as app:
            job = await app.submit(disk, "golden", OsType.LINUX)
            await app.upload(job.id)
            first = await tier0(app, job)
            await app.ctx.backend.blobs.delete_blob(first.blob)  # cleaned up, then needed again
            with disk.open("r+b") as file:
                file.seek(MiB)
                file.write(b"edited after the submission")
            await app.upload(job.id)
            return first, await tier0(app, job)

    first, again = asyncio.run(main())
    assert first.state is SourceState.READY and first.content_md5
    assert again.state is SourceState.FAILED
    assert "changed since the job was submitted" in again.error and "resubmit it" in again.error


def test_a_resumed_upload_of_a_changed_file_starts_afresh(tmp_path: Path) -> None:
    disk = fixed_vhd(tmp_path / "golden.vhd")

    class Killed(Exception):
        pass

    async def main() -> tuple[SourceRow, bytes]:
        async with open_app(tmp_path) as app:
            job = await app.submit(disk, "golden", OsType.LINUX)

            def die() -> None:
                raise Killed

            after_first_write(app, die)
            with pytest.raises(Killed):
                await app.upload(job.id)
            del app.ctx.backend.blobs.write_pages  # the hook: back to the store's own method
            with disk.open("r+b") as file:  # the first MiB's data changes in between
                file.write(b"z" * MiB)
            row = await tier0(app, job)
            await app.ctx.backend.state.put_source(
                dataclasses.replace(row, lease_owner=None, lease_until=0.0)
            )
            await app.upload(job.id)
            row = await tier0(app, job)
            return row, await app.ctx.backend.blobs.read(row.blob, 0, disk.stat().st_size)

    row, blob = asyncio.run(main())
    assert row.state is SourceState.READY, row.error
    assert blob == disk.read_bytes()


# 4. The converted copy in the work folder


def test_the_converted_copy_is_deleted_after_a_verified_upload_and_remade_for_a_reupload(
    tmp_path: Path,
) -> None:
    raw = make_disk(tmp_path / "disk.raw", size_mib=8)
    original = raw.read_bytes()

    async def main() -> dict[str, Any]:
        seen: dict[str, Any] = {}
        async with open_app(tmp_path) as app:
            job = await app.submit(raw, "golden", OsType.LINUX)
            converted = Path(job.source_path)
            seen["converted_before"] = converted.is_file()
            await app.upload(job.id)
            first = await tier0(app, job)
            seen["first"], seen["converted_after"] = first, converted.exists()
            # the tier-0 blob was cleaned up and a target needs it again: convert again
            await app.ctx.backend.blobs.delete_blob(first.blob)
            await app.upload(job.id)
            again = await tier0(app, job)
            seen["again"], seen["converted_again"] = again, converted.exists()
            await app.ctx.backend.blobs.delete_blob(again.blob)
            os.utime(raw, ns=(1, 1))  # the user's file changed since the submission
            await app.upload(job.id)
            seen["changed"] = await tier0(app, job)
            raw.unlink()
            await app.upload(job.id)
            seen["gone"] = await tier0(app, job)
            seen["work"] = listing(app.config.work_dir())
        return seen

    seen = asyncio.run(main())
    assert seen["converted_before"] and not seen["converted_after"]
    assert seen["first"].state is SourceState.READY
    assert seen["again"].state is SourceState.READY
    assert seen["again"].content_md5 == seen["first"].content_md5  # the same bytes again
    assert not seen["converted_again"]
    assert seen["changed"].state is SourceState.FAILED
    assert "changed since the job was submitted; resubmit it" in seen["changed"].error
    assert seen["gone"].state is SourceState.FAILED
    assert (
        f"the source file {str(raw.resolve())!r} is gone; resubmit the image" in seen["gone"].error
    )
    assert seen["work"] == []
    assert original  # the user's own file was never touched before we removed it ourselves


def test_a_file_uploaded_as_it_is_is_never_deleted(tmp_path: Path) -> None:
    disk = fixed_vhd(tmp_path / "golden.vhd")

    async def main() -> SourceRow:
        async with open_app(tmp_path) as app:
            job = await app.submit(disk, "golden", OsType.LINUX)
            await app.upload(job.id)
            return await tier0(app, job)

    assert asyncio.run(main()).state is SourceState.READY
    assert disk.is_file()


def test_a_conversion_shared_by_two_jobs_stays_until_both_uploaded(tmp_path: Path) -> None:
    raw = make_disk(tmp_path / "disk.raw", size_mib=4)

    async def main() -> tuple[bool, bool, SourceState]:
        async with open_app(tmp_path) as app:
            first = await app.submit(raw, "golden", OsType.LINUX)
            second = await app.submit(raw, "golden2", OsType.LINUX)
            assert first.source_path == second.source_path  # the conversion is reused
            await app.upload(first.id)
            kept = Path(first.source_path).exists()
            await app.upload(second.id)
            return kept, Path(first.source_path).exists(), (await tier0(app, second)).state

    kept, still_there, state = asyncio.run(main())
    assert kept and not still_there and state is SourceState.READY


# 2b. Property: a dynamic VHD with any BAT is refused, or read exactly, and never outside the file


@st.composite
def dynamic_layouts(draw: st.DrawFn) -> dict[str, Any]:
    """A dynamic VHD of small blocks: where its BAT sits, its block slots, and BAT entries that
    are unused, point at a slot, or point anywhere at all (headers, other blocks, past the end)."""
    block_size = draw(st.sampled_from([BLOCK, 2 * BLOCK]))
    span = 512 + block_size
    entries = draw(st.integers(1, 6))
    table_at = draw(st.sampled_from([1536, 2048]))
    first = table_at + -(-4 * entries // 512) * 512
    slots = draw(st.integers(0, 7))
    file_size = first + slots * span + draw(st.sampled_from([0, 512, 1024])) + 512
    slot = st.integers(0, max(slots - 1, 0)).map(lambda k: (first + k * span) // 512)
    anywhere = st.integers(0, file_size // 512 + 2 * span // 512)
    near = slot.flatmap(lambda s: st.integers(max(s - 2, 0), s + 2))
    entry = st.one_of(st.just(0xFFFFFFFF), *(() if slots == 0 else (slot, near)), anywhere)
    return {
        "block_size": block_size,
        "table_at": table_at,
        "first": first,
        "file_size": file_size,
        "bat": draw(st.lists(entry, min_size=entries, max_size=entries)),
        "trim": draw(st.integers(0, block_size // 512 - 1)) * 512,  # a last block cut short
        "seed": draw(st.integers(0, 2**32 - 1)),
    }


def write_layout(path: Path, layout: dict[str, Any]) -> bytes:
    block_size, table_at, bat = layout["block_size"], layout["table_at"], layout["bat"]
    size = len(bat) * block_size - layout["trim"]
    body = bytearray(random.Random(layout["seed"]).randbytes(layout["file_size"]))
    footer = replace(fixed_footer(size), disk_type=DISK_DYNAMIC, data_offset=512).pack()
    body[:512] = footer
    body[512:1536] = DynamicHeader.build(table_at, len(bat), block_size)
    body[1536:table_at] = bytes(table_at - 1536)
    table = struct.pack(f">{len(bat)}I", *bat)
    body[table_at : layout["first"]] = table.ljust(layout["first"] - table_at, b"\xff")
    body[-512:] = footer
    path.write_bytes(bytes(body))
    return bytes(body)


def sound(layout: dict[str, Any]) -> bool:
    """The oracle: every used block lies in [first, end of data) and no two overlap."""
    span = 512 + layout["block_size"]
    starts = sorted(e * 512 for e in layout["bat"] if e != 0xFFFFFFFF)
    inside = all(layout["first"] <= s and s + span <= layout["file_size"] - 512 for s in starts)
    return inside and all(b >= a + span for a, b in itertools.pairwise(starts))


def expected_disk(content: bytes, layout: dict[str, Any]) -> bytes:
    """The disk as the VHD spec defines it, computed apart from the reader: each used block's
    sectors whose bitmap bit is set come from the file, every other byte is zero."""
    block_size = layout["block_size"]
    out = bytearray()
    for entry in layout["bat"]:
        block = bytearray(block_size)
        if entry != 0xFFFFFFFF:
            at = entry * 512
            for sector in range(block_size // 512):
                if content[at + sector // 8] & (0x80 >> sector % 8):
                    data_at = at + 512 + sector * 512
                    block[sector * 512 : sector * 512 + 512] = content[data_at : data_at + 512]
        out += block
    return bytes(out[: len(layout["bat"]) * block_size - layout["trim"]])


@contextlib.contextmanager
def reads_inside(path: Path) -> Iterator[None]:
    """Fail on any read of ``path`` that reaches past its end."""
    size = path.stat().st_size
    inode = path.stat().st_ino
    pread, preadv = os.pread, os.preadv

    def check(fd: int, length: int, offset: int) -> None:
        if os.fstat(fd).st_ino == inode:
            assert offset >= 0 and offset + length <= size, (offset, length, size)

    def checked_pread(fd: int, length: int, offset: int) -> bytes:
        check(fd, length, offset)
        return pread(fd, length, offset)

    def checked_preadv(fd: int, buffers: Any, offset: int) -> int:
        check(fd, sum(len(b) for b in buffers), offset)
        return preadv(fd, buffers, offset)

    with mock.patch("os.pread", checked_pread), mock.patch("os.preadv", checked_preadv):
        yield


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layout=dynamic_layouts())
def test_any_bat_is_refused_or_read_exactly(layout: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "disk.vhd"
        content = write_layout(path, layout)
        try:
            with reads_inside(path), open_disk(path) as disk:
                data = disk.read(0, disk.virtual_size)
                extents = list(disk.iter_data_extents())
        except InvalidInput as refused:
            message = str(refused)
            assert not sound(layout), message
            assert "\n" not in message and message.endswith(".") and "'" + str(path) in message
            return
        assert sound(layout), layout
        assert data == expected_disk(content, layout)
        assert all(data[o : o + n] for o, n in extents)


@settings(max_examples=200, deadline=None)
@given(
    flips=st.lists(
        st.tuples(st.integers(0, 3 * 1024), st.integers(0, 255)), min_size=1, max_size=8
    ),
    fresh_checksums=st.booleans(),
)
def test_random_damage_to_a_dynamic_vhd_never_crashes(
    flips: list[tuple[int, int]], fresh_checksums: bool
) -> None:
    """Damage anywhere in the footer copy, header and BAT: a sentence or a sound read, never a
    traceback, never a read outside the file."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "disk.vhd"
        make_dynamic(path, 6 * BLOCK, {i: bytes([i + 1]) * BLOCK for i in (0, 2, 5)})
        data = bytearray(path.read_bytes())
        for at, value in flips:
            data[at] = value
        if fresh_checksums:  # damage that the checksums do not give away
            header = DynamicHeader.unpack(bytes(data[512:1536]))
            data[512 + 36 : 512 + 40] = header.computed_checksum.to_bytes(4, "big")
        path.write_bytes(bytes(data))
        try:
            with reads_inside(path), open_disk(path) as disk:
                disk.read(0, disk.virtual_size)
        except InvalidInput as refused:
            assert "\n" not in str(refused) and str(refused).endswith(".")


def test_a_source_replaced_by_a_fifo_fails_the_upload_instead_of_hanging(tmp_path: Path) -> None:
    disk = fixed_vhd(tmp_path / "golden.vhd", size_mib=2)

    async def main() -> SourceRow:
        async with open_app(tmp_path) as app:
            job = await app.submit(disk, "golden", OsType.LINUX)
            disk.unlink()
            os.mkfifo(disk)
            await app.upload(job.id)
            return await tier0(app, job)

    row = asyncio.run(main())
    assert row.state is SourceState.FAILED and "resubmit the image" in row.error


def test_a_hostile_descriptor_is_read_in_linear_time(tmp_path: Path) -> None:
    """A MiB-long line of digits once made the extent pattern backtrack for hours."""
    image = tmp_path / "slow.vmdk"
    image.write_bytes(b"# Disk DescriptorFile\nRW " + b"1" * 900_000 + b"\nRW 5 " + b"a" * 99_000)
    started = time.monotonic()
    inspection = inspect_image(image)
    assert time.monotonic() - started < 5
    assert inspection.format == "vmdk"


MAGICS = [b"QFI\xfb", b"KDMV", b"COWD", b"# Disk DescriptorFile\n", b"vhdxfile"]
DESCRIPTOR_WORDS = [
    *("RW", "RDONLY", "2048", "99999999999999999999999", "FLAT", "SPARSE", '"', "x.vmdk"),
    *("/etc/passwd", " ", "\n", "\r", "\t", "parentFileNameHint=", "createType=", "0", "-1"),
    "\0",
]


@settings(max_examples=300, deadline=None)
@given(
    magic=st.sampled_from(MAGICS),
    body=st.binary(min_size=0, max_size=2048),
    text=st.lists(st.sampled_from(DESCRIPTOR_WORDS), max_size=40),
    padding=st.sampled_from([0, 512, 200 * 1024, 300 * 1024]),
)
def test_inspecting_any_foreign_header_gives_a_verdict_or_a_sentence(
    magic: bytes, body: bytes, text: list[str], padding: int
) -> None:
    """Random qcow2, VMDK (sparse and text) and VHDX headers: never an exception but a sentence."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "disk.img"
        path.write_bytes(magic + "".join(text).encode() + body + bytes(padding))
        try:
            inspection = inspect_image(path)
        except InvalidInput as refused:
            assert "\n" not in str(refused) and str(refused).endswith(".")
            return
        assert inspection.format in ("qcow2", "vmdk", "vhdx", "raw")
