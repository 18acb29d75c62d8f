"""Hyper-V generation (issue 10): per job, defaulted from the config, checked against the disk.

A GPT disk with an EFI system partition and no BIOS boot partition boots only with UEFI: a V1
image of it boots no VM, so a V1 request for it is refused; with no request it becomes V2.
"""

from __future__ import annotations

import json
import os
import struct
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result
from hypothesis import given, settings
from hypothesis import strategies as st

from imagedist import HyperVGeneration, Imagedist, OsType
from imagedist._backends.local.images import LocalImageService
from imagedist._domain import BlobRef
from imagedist._vhd import Firmware, boot_firmware
from imagedist._vhd._firmware import BIOS_BOOT_TYPE, ESP_TYPE

from helpers import call, config_text

Cli = Callable[..., Result]
MIB = 1024 * 1024
DISK_ID = "/subscriptions/sub-a/resourceGroups/disks/providers/Microsoft.Compute/disks/golden"
LINUX_DATA = uuid.UUID("0fc63daf-8483-4772-8e79-3d69d8477de4")


def mbr(types: list[int]) -> bytes:
    sector = bytearray(512)
    for i, kind in enumerate(types):
        entry = 446 + 16 * i
        sector[entry + 4] = kind
        struct.pack_into("<II", sector, entry + 8, 2048 * (i + 1), 2048)
    sector[510:512] = b"\x55\xaa"
    return bytes(sector)


def gpt(types: list[uuid.UUID], *, count: int = 128, entry_size: int = 128, lba: int = 2) -> bytes:
    """A protective MBR, a GPT header and its partition entries (CRCs are not checked)."""
    header = bytearray(512)
    header[:8] = b"EFI PART"
    struct.pack_into("<QII", header, 72, lba, count, entry_size)
    entries = bytearray(128 * 128)
    for i, kind in enumerate(types):
        entries[i * 128 : i * 128 + 16] = kind.bytes_le
    return mbr([0xEE]) + bytes(header) + bytes(entries)


def disk_with(path: Path, head: bytes, size_mib: int = 4) -> Path:
    with path.open("wb") as file:
        file.truncate(size_mib * MIB)
        file.write(head)
        file.seek(2 * MIB)
        file.write(os.urandom(4096))  # some data, as a real disk has
    return path


def firmware_of(head: bytes, size: int | None = None) -> Firmware:
    """What ``head`` (the first bytes of a disk of ``size`` bytes) says; a read outside it fails."""
    size = len(head) if size is None else size

    def read(offset: int, length: int) -> bytes:
        assert offset >= 0 and offset + length <= size, (offset, length)
        return head[offset : offset + length]

    return boot_firmware(read, size)


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (mbr([0x83]), Firmware.BIOS),
        (mbr([0x07, 0x83]), Firmware.BIOS),
        (mbr([0xEF, 0x83]), Firmware.UEFI),
        (gpt([ESP_TYPE, LINUX_DATA]), Firmware.UEFI),
        (gpt([LINUX_DATA, ESP_TYPE]), Firmware.UEFI),
        (gpt([BIOS_BOOT_TYPE, ESP_TYPE, LINUX_DATA]), Firmware.BOTH),
        (gpt([BIOS_BOOT_TYPE, LINUX_DATA]), Firmware.BIOS),
        (gpt([LINUX_DATA]), Firmware.UNKNOWN),
        (bytes(4096), Firmware.UNKNOWN),  # no partition table
        (mbr([]), Firmware.UNKNOWN),  # a signature and no partition
        (mbr([0xEE]) + b"NOT GPT!" + bytes(504), Firmware.UNKNOWN),
    ],
)
def test_the_firmware_comes_from_the_partition_table(head: bytes, expected: Firmware) -> None:
    assert firmware_of(head) is expected


@pytest.mark.parametrize(
    "head",
    [
        gpt([ESP_TYPE], count=2**31, entry_size=128),  # 256 GiB of entries: crafted
        gpt([ESP_TYPE], entry_size=7),  # not a valid entry size
        gpt([ESP_TYPE], lba=2**60),  # entries far past the end of the disk
    ],
)
def test_a_crafted_gpt_says_nothing_and_reads_nothing_outside_the_disk(head: bytes) -> None:
    assert firmware_of(head) is Firmware.UNKNOWN


def test_entries_cut_by_the_end_of_the_disk_are_read_as_far_as_it_goes() -> None:
    head = gpt([ESP_TYPE])
    assert firmware_of(head, size=1024 + 128) is Firmware.UEFI  # the first entry is there
    assert firmware_of(head, size=1024 + 8) is Firmware.UNKNOWN  # not even one whole entry


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=2048), st.integers(0, 4096))
def test_any_first_sectors_give_an_answer(head: bytes, size: int) -> None:
    assert firmware_of(head, size=min(size, len(head))) in set(Firmware)


def test_only_uefi_refuses_v1() -> None:
    assert Firmware.UEFI.refuses("V1")
    assert not any(f.refuses("V1") for f in Firmware if f is not Firmware.UEFI)
    assert not any(f.refuses("V2") for f in Firmware)


# -- through the CLI and the library, on the local backend -----------------------------------


def write(tmp_path: Path, **azure: str) -> Path:
    path = tmp_path / "imagedist.toml"
    sections: dict[str, dict[str, object]] = {
        "fleet": {"subscriptions": ["sub-a"], "regions": ["eastus", "westeurope"]},
        "local": {"image_create_seconds": 0.0},
    }
    if azure:
        sections["azure"] = dict(azure)
    path.write_text(config_text(**sections), encoding="utf-8")
    return path


def generations(config: Path, job_id: str) -> tuple[str, set[str]]:
    """The job's generation and its images', as the image service made them."""

    async def body(app: Imagedist) -> tuple[str, set[str]]:
        status = await app.status(job_id)
        images = app.ctx.backend.images
        made = {
            (
                await images.get_image(t.subscription, t.resource_group, t.image_name)
            ).hyper_v_generation
            for t in status.targets
        }
        return status.job.hyper_v_generation.value, made

    return call(config, body)


def submitted(result: Result) -> str:
    assert result.exit_code == 0, (result.output, result.exception)
    return str(json.loads(result.stdout)["job"])


@pytest.mark.parametrize(
    ("head", "asked", "expected"),
    [
        (gpt([ESP_TYPE, LINUX_DATA]), None, "V2"),  # UEFI only: V2 without being asked
        (gpt([BIOS_BOOT_TYPE, ESP_TYPE]), None, "V1"),
        (mbr([0x83]), None, "V1"),
        (mbr([0x83]), "V2", "V2"),  # asked: a V2 VM may still find a UEFI loader
        (gpt([ESP_TYPE, LINUX_DATA]), "V2", "V2"),
        (gpt([BIOS_BOOT_TYPE, ESP_TYPE]), "V2", "V2"),
    ],
)
def test_run_makes_the_images_as_the_generation_chosen(
    tmp_path: Path, cli: Cli, head: bytes, asked: str | None, expected: str
) -> None:
    config = write(tmp_path)
    disk = disk_with(tmp_path / "disk.raw", head)
    extra = ["--hyper-v-generation", asked] if asked else []
    result = cli(
        config, "run", str(disk), "--image-name", "gold", "--os-type", "linux", "--json", *extra
    )
    job = submitted(result)
    assert generations(config, job) == (expected, {expected})


def test_the_config_gives_the_default(tmp_path: Path, cli: Cli) -> None:
    config = write(tmp_path, hyper_v_generation="V2")
    disk = disk_with(tmp_path / "disk.raw", mbr([0x83]))
    job = submitted(
        cli(config, "run", str(disk), "--image-name", "gold", "--os-type", "linux", "--json")
    )
    assert generations(config, job) == ("V2", {"V2"})


@pytest.mark.parametrize("how", ["option", "config"])
def test_v1_for_a_uefi_only_disk_is_refused_and_nothing_is_written(
    tmp_path: Path, cli: Cli, how: str
) -> None:
    config = write(tmp_path, **({"hyper_v_generation": "V1"} if how == "config" else {}))
    disk = disk_with(tmp_path / "disk.raw", gpt([ESP_TYPE, LINUX_DATA]))
    before = sorted(p.name for p in tmp_path.iterdir())
    extra = ["--hyper-v-generation", "V1"] if how == "option" else []
    result = cli(config, "submit", str(disk), "--image-name", "gold", "--os-type", "linux", *extra)
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "UEFI" in lines[0] and "--hyper-v-generation V2" in lines[0]
    assert "Traceback" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no state, no work folder


def test_a_refused_conversion_leaves_nothing_in_the_work_folder(tmp_path: Path, cli: Cli) -> None:
    """A raw disk is converted into the work folder before its partition table is read; a
    refusal then deletes the conversion."""
    config = write(tmp_path)
    raw = disk_with(tmp_path / "disk.raw", gpt([ESP_TYPE, LINUX_DATA]))
    args = ("--image-name", "gold", "--os-type", "linux", "--hyper-v-generation", "V1")
    result = cli(config, "submit", str(raw), *args)
    assert result.exit_code == 2, result.output
    assert [p for p in tmp_path.rglob("*.vhd")] == []


def test_a_managed_disk_job_takes_the_generation_asked_or_the_configs(tmp_path: Path) -> None:
    """`submit --from-disk` cannot read the disk's partitions: it takes what it is told."""
    config = write(tmp_path, hyper_v_generation="V2")

    async def body(app: Imagedist) -> tuple[HyperVGeneration, HyperVGeneration]:
        images = app.ctx.backend.images
        assert isinstance(images, LocalImageService)
        blob = BlobRef("diskstore", "disks", "golden.vhd")
        await app.ctx.backend.blobs.ensure_container(blob.account, blob.container)
        await app.ctx.backend.blobs.create_page_blob(blob, 4 * MIB)
        images.register_disk(DISK_ID, blob, 4 * MIB)
        default = await app.submit_disk(DISK_ID, "gold", OsType.LINUX)
        asked = await app.submit_disk(
            DISK_ID, "gold2", OsType.LINUX, hyper_v_generation=HyperVGeneration.V1
        )
        return default.hyper_v_generation, asked.hyper_v_generation

    assert call(config, body) == (HyperVGeneration.V2, HyperVGeneration.V1)
