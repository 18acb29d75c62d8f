"""`imagedist demo`: a whole distribution on the embedded backend, in seconds, on any machine."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console

from .._api import Demo, Imagedist, JobStatus
from .._domain import LogRecord
from ._common import State, friendly_errors, run_with_app
from ._jobs_cmds import SubmitArgs, _run_showing_progress, _submit_and_upload
from ._read_cmds import report, status_and_errors
from ._serve_cmds import serve_dashboard, serve_options

__all__ = ["demo"]


@click.command()
@click.option(
    "--dir",
    "folder",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where to put the demo (default: a new temporary folder).",
)
@click.option(
    "--serve",
    "with_dashboard",
    is_flag=True,
    help="Run the job in the web dashboard (on loopback) and print its address.",
)
@serve_options
@friendly_errors
def demo(folder: Path | None, with_dashboard: bool, host: str, port: int) -> None:
    """Distribute a sample disk to 3 subscriptions × 3 regions on the local backend.

    Makes a 64 MiB sample disk and a demo config, runs the distribution with live
    progress, and prints the status grid. Takes a few seconds; needs no cloud.
    With --serve, the dashboard's worker runs it while the page shows it live.
    """
    made = Imagedist.prepare_demo(folder)
    Console().print(f"demo folder: {made.folder}")
    if with_dashboard:
        _demo_in_dashboard(made.config_path, made, host, port)
        return

    async def body(app: Imagedist) -> tuple[str, tuple[JobStatus, list[LogRecord]]]:
        job_id = await _submit_and_upload(
            app, SubmitArgs(made.disk, "golden-demo", "linux", "demo", convert=True), quiet=False
        )
        await _run_showing_progress(app, job_id, quiet=False)
        return job_id, await status_and_errors(app, job_id)

    job_id, final = run_with_app(State(made.config_path, made.config), body)
    # Plain echo: a console would wrap the long path and put the job id on a line of its own.
    click.echo(
        f"\nInspect it: imagedist -c {made.config_path} status {job_id}"
        f"\n            imagedist -c {made.config_path} logs {job_id}"
    )
    report(final[0], final[1], False)


def _demo_in_dashboard(config_path: Path, made: Demo, host: str, port: int) -> None:
    """Submit and upload the demo job, then let the dashboard's worker distribute it."""

    async def body(app: Imagedist) -> str:
        args = SubmitArgs(made.disk, "golden-demo", "linux", "demo", convert=True)
        return await _submit_and_upload(app, args, quiet=True)

    job_id = run_with_app(State(config_path, made.config), body)
    click.echo(f"job {job_id} submitted; the dashboard's worker distributes it")
    serve_dashboard(made.config, host=host, port=port, worker=True, path=f"/jobs/{job_id}")
