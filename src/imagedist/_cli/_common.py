"""What every command shares: loading the config, running the library, mapping errors to exits."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, ParamSpec, TypeVar

import click

from .._exceptions import BackendUnavailable, ImagedistError, InvalidInput

if TYPE_CHECKING:
    from .._api import Imagedist, JobReader
    from .._config import Config

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_FAILED",
    "State",
    "echo_json",
    "friendly_errors",
    "json_option",
    "pass_state",
    "run_with_app",
    "run_with_reader",
]

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2

P = ParamSpec("P")
R = TypeVar("R")


class State:
    """The group's options, passed to every command through the click context."""

    def __init__(self, config_path: Path, config: Config | None = None) -> None:
        """:param config: the config already loaded from ``config_path``, if it was."""
        self.config_path = config_path
        self._config = config

    @property
    def config(self) -> Config:
        if self._config is None:
            from .._config import load_config  # the config's models: loaded by a command's use

            self._config = load_config(self.config_path)
        return self._config


pass_state = click.make_pass_decorator(State)


def friendly_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn our errors into one line on stderr and the documented exit status, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except ImagedistError as exc:
            _exit_on(exc)
        except KeyboardInterrupt:
            click.echo(
                "Interrupted; the job's progress is saved: `imagedist worker` resumes it.", err=True
            )
            sys.exit(130)

    return wrapper


def _exit_on(error: ImagedistError) -> NoReturn:
    """One line on stderr, then the exit status of ``error``: 2 for bad input, else 1."""
    from .._redact import redact  # its patterns compile on import: only an error needs them

    # An error from the platform may quote what it was sent; the state stores redact too, but
    # this line goes straight to the terminal.
    click.echo(f"Error: {redact(str(error))}", err=True)
    bad_input = isinstance(error, InvalidInput | BackendUnavailable)
    sys.exit(EXIT_BAD_INPUT if bad_input else EXIT_FAILED)


def run_with_app(state: State, body: Callable[[Imagedist], Awaitable[R]]) -> R:
    """Open the library for the config and run ``body`` in an event loop."""
    import asyncio  # with the library: loaded when a command runs, not for `--help`

    from .._api import Imagedist

    async def main() -> R:
        async with Imagedist(state.config) as app:
            return await body(app)

    return asyncio.run(main())


def run_with_reader(state: State, body: Callable[[JobReader], Coroutine[Any, Any, R]]) -> R:
    """Open the config's jobs for reading only and run ``body``: a config validated before
    opens them without the config's models, in this thread and without an event loop (see
    :func:`imagedist._api.run_reader`)."""
    from .._api import run_reader

    return run_reader(state.config_path, body)


def json_option(fn: Callable[P, R]) -> Callable[P, R]:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")(
        fn
    )


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False))
