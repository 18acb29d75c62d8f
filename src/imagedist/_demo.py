"""The demo: a sample disk and a config for 3 subscriptions × 3 regions on the local backend."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ._config import Config, load_config

__all__ = ["Demo", "make_sample_disk", "prepare_demo", "write_demo_config"]

MIB = 1024 * 1024

DEMO_CONFIG = """\
# A demo fleet: 3 subscriptions x 3 regions on the embedded local backend.
backend = "local"

[staging]
subscription = "sub-staging"
region = "westeurope"
account = "imgdstaging"

[fleet]
subscriptions = ["sub-alpha", "sub-bravo", "sub-charlie"]
regions = ["westeurope", "eastus", "southeastasia"]

[fanout]
tier1_copies = 2
max_reads_per_source = 3

[concurrency]
poll_interval_seconds = 0.2
lease_seconds = 10

[local]
root = "state"
copy_bandwidth_mib_s = {bandwidth}
image_create_seconds = 1.0
"""


@dataclass(frozen=True)
class Demo:
    """What :func:`prepare_demo` made: the folder, its config (path and parsed) and the disk."""

    folder: Path
    config_path: Path
    config: Config
    disk: Path


def make_sample_disk(path: Path, size_mib: int = 64) -> None:
    """A sparse disk of ``size_mib`` MiB: zeros, with data in a few places (like a fresh OS disk)."""
    with path.open("wb") as file:
        file.truncate(size_mib * MIB)
        for at_mib, length_mib in ((0, 2), (size_mib // 3, 3), (size_mib - 4, 1)):
            file.seek(at_mib * MIB)
            file.write(os.urandom(length_mib * MIB))


def write_demo_config(folder: Path, bandwidth_mib_s: float = 8.0) -> Path:
    """Write the demo config into ``folder``; its state lives in ``folder/state``."""
    path = folder / "imagedist.toml"
    path.write_text(DEMO_CONFIG.format(bandwidth=bandwidth_mib_s), encoding="utf-8")
    return path


def prepare_demo(folder: Path | None = None) -> Demo:
    """Make the demo's folder (a new temporary one if ``folder`` is None), disk and config.

    :param folder: where to put the demo; made if missing.
    :return: the demo, ready to submit ``disk`` with ``Imagedist(config)``.
    """
    folder = folder or Path(tempfile.mkdtemp(prefix="imagedist-demo-"))
    folder.mkdir(parents=True, exist_ok=True)
    disk = folder / "golden.vhd"
    make_sample_disk(disk)
    config_path = write_demo_config(folder)
    return Demo(folder, config_path, load_config(config_path), disk)
