"""`imagedist demo`: a whole distribution on the embedded backend, in seconds, on any machine."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import click
from rich.console import Console

from .._api import Imagedist
from .._config import load_config
from .._domain import LogRecord
from .._engine import JobStatus
from ._common import State, friendly_errors, run_with_app
from ._jobs_cmds import SubmitArgs, _final, _report, _submit_and_upload
from ._render import watch_progress

__all__ = ["demo", "make_sample_disk", "write_demo_config"]

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


def make_sample_disk(path: Path, size_mib: int = 64) -> None:
    """A sparse disk of ``size_mib`` MiB: zeros, with data in a few places (like a fresh OS disk)."""
    with path.open("wb") as file:
        file.truncate(size_mib * MIB)
        for at_mib, length_mib in ((0, 2), (size_mib // 3, 3), (size_mib - 4, 1)):
            file.seek(at_mib * MIB)
            file.write(os.urandom(length_mib * MIB))


def write_demo_config(folder: Path, bandwidth_mib_s: float = 8.0) -> Path:
    path = folder / "imagedist.toml"
    path.write_text(DEMO_CONFIG.format(bandwidth=bandwidth_mib_s), encoding="utf-8")
    return path


@click.command()
@click.option(
    "--dir",
    "folder",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where to put the demo (default: a new temporary folder).",
)
@friendly_errors
def demo(folder: Path | None) -> None:
    """Distribute a sample disk to 3 subscriptions × 3 regions on the local backend.

    Makes a 64 MiB sample disk and a demo config, runs the distribution with live
    progress, and prints the status grid. Takes a few seconds; needs no cloud.
    """
    folder = folder or Path(tempfile.mkdtemp(prefix="imagedist-demo-"))
    folder.mkdir(parents=True, exist_ok=True)
    disk = folder / "golden.vhd"
    make_sample_disk(disk)
    config_path = write_demo_config(folder)
    state = State(config_path)
    state._config = load_config(config_path)
    console = Console()
    console.print(f"demo folder: {folder}")

    async def body(app: Imagedist) -> tuple[str, tuple[JobStatus, list[LogRecord]]]:
        job_id = await _submit_and_upload(
            app, SubmitArgs(disk, "golden-demo", "linux", "demo", convert=True), quiet=False
        )
        await watch_progress(console, lambda: app.status(job_id), app.work([job_id]))
        return job_id, await _final(app, job_id)

    job_id, final = run_with_app(state, body)
    # Plain echo: a console would wrap the long path and put the job id on a line of its own.
    click.echo(
        f"\nInspect it: imagedist -c {config_path} status {job_id}"
        f"\n            imagedist -c {config_path} logs {job_id}"
    )
    _report(final[0], final[1], False)
