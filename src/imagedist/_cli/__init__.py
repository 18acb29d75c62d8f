"""The command line: a thin client of :class:`imagedist.Imagedist`."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from ._common import State
from ._config_cmds import config
from ._demo import demo
from ._jobs_cmds import cleanup, jobs, logs, retry, run, status, submit, worker
from ._plan_cmds import plan
from ._serve_cmds import serve
from ._setup_cmds import check, setup, teardown
from ._targets_cmds import targets
from ._versions_cmds import versions
from ._vhd_cmds import vhd

__all__ = ["cli", "main"]


class _OneLineUsageError(click.UsageError):
    """Click's usage error shown as imagedist shows every bad input: one sentence on stderr
    naming the problem and where the fix is, instead of click's Usage/Try/Error lines."""

    def __init__(self, original: click.UsageError) -> None:
        super().__init__(original.format_message(), original.ctx)

    def show(self, file: Any = None) -> None:
        message = " ".join(self.message.split()).rstrip(".")
        message = re.sub(r"\.?\s*Did you mean (.+)\?$", r" (did you mean \1?)", message)
        command = self.ctx.command_path if self.ctx is not None else "imagedist"
        click.echo(f"Error: {message}; `{command} --help` shows the usage.", err=True)


@contextmanager
def _one_line_usage_errors() -> Iterator[None]:
    try:
        yield
    except click.exceptions.NoArgsIsHelpError:
        raise  # a bare `imagedist` or command group: the help is what was asked for
    except _OneLineUsageError:
        raise
    except click.UsageError as exc:
        raise _OneLineUsageError(exc) from None


class _Cli(click.Group):
    """The root group: parsing and running any command turns click's usage errors into ours."""

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        with _one_line_usage_errors():
            return super().make_context(info_name, args, parent, **extra)

    def invoke(self, ctx: click.Context) -> Any:
        with _one_line_usage_errors():
            return super().invoke(ctx)


@click.group(name="imagedist", cls=_Cli, context_settings={"help_option_names": ["-h", "--help"]})
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
    versions,
    vhd,
    demo,
    serve,
):
    cli.add_command(command)


def main() -> None:
    cli()
