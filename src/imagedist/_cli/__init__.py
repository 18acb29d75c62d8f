"""The command line: a thin client of :class:`imagedist.Imagedist`."""

from __future__ import annotations

import re
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from importlib import import_module
from pathlib import Path
from typing import Any

import click

from ._common import State

__all__ = ["cli", "main"]

# Every command: the module that defines it (under the same name) and the first paragraph of
# its help, which `imagedist --help` lists. A command's module is imported only when the
# command is looked up to run or to show its own help, so `imagedist --help` and each command
# start without loading what the others need (issue 13); a test checks this listing against
# the commands' own help.
COMMANDS: dict[str, tuple[str, str]] = {
    "config": ("_config_cmds", "Inspect the config file."),
    "setup": ("_setup_cmds", "Provision everything the config declares; idempotent."),
    "check": (
        "_setup_cmds",
        "Pre-flight before any bytes move: credentials, resource providers, regions, resource "
        "groups, accounts, containers, data access (a probe blob in every account; the missing "
        "role named) and the state store; one line per problem. Exits 1 if any.",
    ),
    "teardown": (
        "_setup_cmds",
        "Remove what setup made: the storage accounts and resource groups it tagged "
        "(imagedist-managed=true), images included unless --keep-images. Anything else is "
        "left, and listed with the reason.",
    ),
    "targets": ("_targets_cmds", "The fleet: every (subscription, region) target."),
    "plan": ("_plan_cmds", "Predict a distribution over the config's fleet before moving a byte."),
    "submit": (
        "_jobs_cmds",
        "Validate FILE, register a job and upload it to the staging account.",
    ),
    "worker": ("_jobs_cmds", "Work on every active job until no work is left (or forever)."),
    "run": (
        "_jobs_cmds",
        "Submit FILE (as `submit` does), distribute it with a worker in this process, and show "
        "live progress.",
    ),
    "jobs": ("_read_cmds", "List the jobs, newest first, with their phase percentages."),
    "status": (
        "_read_cmds",
        "Show a job: the four phase percentages, errors, and the target grid.",
    ),
    "logs": ("_read_cmds", "Show a job's log."),
    "retry": (
        "_jobs_cmds",
        "Put a job's unfinished targets back to work; finished ones are never touched.",
    ),
    "cleanup": ("_jobs_cmds", "Delete a job's intermediate blobs now (images are kept)."),
    "versions": (
        "_versions_cmds",
        "An image's versions in the Compute Gallery: list, retire, roll back.",
    ),
    "vhd": (
        "_vhd_cmds",
        "Disk images: check that Azure can boot one, convert one to a fixed VHD.",
    ),
    "demo": (
        "_demo",
        "Distribute a sample disk to 3 subscriptions × 3 regions on the local backend.",
    ),
    "serve": (
        "_serve_cmds",
        "Serve the web dashboard: every job live, the subscription × region grid, logs, the "
        "plan, and (unless --read-only) retry, cleanup and target switches.",
    ),
}


class _LazyCommands(MutableMapping[str, click.Command]):
    """The root group's commands by name, each imported from its module when first looked up."""

    def __init__(self, homes: dict[str, str]) -> None:
        self._homes = dict(homes)  # name -> module, relative to this package
        self._loaded: dict[str, click.Command] = {}

    def __getitem__(self, name: str) -> click.Command:
        if name not in self._loaded:
            module = import_module(f"{__name__}.{self._homes[name]}")  # KeyError: no such name
            command = getattr(module, name)
            assert isinstance(command, click.Command), name
            self._loaded[name] = command
        return self._loaded[name]

    def __setitem__(self, name: str, command: click.Command) -> None:
        self._homes.setdefault(name, "")
        self._loaded[name] = command

    def __delitem__(self, name: str) -> None:
        del self._homes[name]
        self._loaded.pop(name, None)

    def __iter__(self) -> Iterator[str]:
        return iter(self._homes)

    def __len__(self) -> int:
        return len(self._homes)

    def is_loaded(self, name: str) -> bool:
        return name in self._loaded


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


#: What click 8.2 and later raise for a bare `imagedist` or command group (a usage error that
#: shows the help: what was asked for); click 8.1 shows the help and exits without one.
_HELP_ASKED: tuple[type[Exception], ...] = tuple(
    kind for kind in (getattr(click.exceptions, "NoArgsIsHelpError", None),) if kind is not None
)


@contextmanager
def _one_line_usage_errors() -> Iterator[None]:
    try:
        yield
    except _HELP_ASKED:
        raise
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

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The commands and their short help, as click lists them, from :data:`COMMANDS` for
        a command not imported yet (none of them is hidden)."""
        names = self.list_commands(ctx)
        if not names:
            return
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows = [(name, self._short_help(name, limit)) for name in names]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def _short_help(self, name: str, limit: int) -> str:
        commands = self.commands
        if isinstance(commands, _LazyCommands) and not commands.is_loaded(name):
            return click.Command(name, help=COMMANDS[name][1]).get_short_help_str(limit)
        return commands[name].get_short_help_str(limit)


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


cli.commands = _LazyCommands({name: module for name, (module, _) in COMMANDS.items()})


def main() -> None:
    cli()
