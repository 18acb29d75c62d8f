"""The command line: a thin client of :class:`imagedist.Imagedist`."""

from __future__ import annotations

from pathlib import Path

import click

from ._common import State
from ._config_cmds import config
from ._demo import demo
from ._jobs_cmds import cleanup, jobs, logs, retry, run, status, submit, worker
from ._plan_cmds import plan
from ._setup_cmds import check, setup, teardown
from ._targets_cmds import targets
from ._vhd_cmds import vhd

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "-c",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default="imagedist.toml",
    show_default=True,
    envvar="IMAGEDIST_CONFIG",
    help="The config file (env IMAGEDIST_CONFIG).",
)
@click.version_option(package_name="imagedist")
@click.pass_context
def cli(ctx: click.Context, config_path: Path) -> None:
    """Distribute one golden image (VHD) to every Azure subscription and region.

    Upload once, fan out with server-side copies, create an image per target:
    in parallel, resumable, observable, retryable per target.
    """
    ctx.obj = State(config_path)


for command in (
    config,
    setup,
    check,
    teardown,
    targets,
    plan,
    submit,
    worker,
    run,
    jobs,
    status,
    logs,
    retry,
    cleanup,
    vhd,
    demo,
):
    cli.add_command(command)


def main() -> None:
    cli()
