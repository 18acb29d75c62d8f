"""`imagedist serve`: the web dashboard over the config's state store."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import click

from .._api import Imagedist
from .._config import Config
from .._exceptions import BackendUnavailable
from ._common import State, friendly_errors, pass_state

__all__ = ["serve", "serve_dashboard", "serve_options"]


def _web() -> ModuleType:
    """The dashboard's package, which needs the ``web`` extra."""
    try:
        from .. import _web
    except ModuleNotFoundError as exc:
        raise BackendUnavailable(
            f"The dashboard needs {exc.name or 'its libraries'}: install imagedist with the web"
            " extra (pip install 'imagedist[web]')."
        ) from None
    return _web


def serve_options(fn: Callable[..., None]) -> Callable[..., None]:
    """--host and --port, shared by `serve` and `demo --serve`."""
    fn = click.option(
        "--port",
        type=click.IntRange(0, 65535),
        default=8080,
        show_default=True,
        help="The port to listen on (0: any free one).",
    )(fn)
    return click.option(
        "--host",
        default="127.0.0.1",
        show_default=True,
        help="The address to listen on; any but loopback needs a token.",
    )(fn)


def serve_dashboard(
    config: Config,
    *,
    host: str,
    port: int,
    read_only: bool = False,
    worker: bool = False,
    token_file: Path | None = None,
    path: str = "/",
) -> None:
    """Check the token and the port, say where the dashboard is, and serve it until Ctrl-C."""
    web = _web()

    def announce(token: str) -> None:
        click.echo(
            f"Dashboard token (shown only now; give it to the login page or as a bearer"
            f" header): {token}",
            err=True,
        )

    token = web.resolve_token(host, token_file, announce)
    sock: socket.socket = web.bind(host, port)
    url = web.url_of(sock).rstrip("/") + path
    click.echo(f"Dashboard at {url} ({'read-only, ' if read_only else ''}Ctrl-C stops it)")
    try:
        web.serve(lambda: Imagedist(config), sock, token=token, read_only=read_only, worker=worker)
    finally:
        sock.close()


@click.command()
@serve_options
@click.option("--read-only", is_flag=True, help="Refuse every change; show no action.")
@click.option("--worker", is_flag=True, help="Also run a worker in this process.")
@click.option(
    "--token-file",
    type=click.Path(dir_okay=True, path_type=Path),
    help="A file holding the token clients must show (default on loopback: none).",
)
@pass_state
@friendly_errors
def serve(
    state: State, host: str, port: int, read_only: bool, worker: bool, token_file: Path | None
) -> None:
    """Serve the web dashboard: every job live, the subscription × region grid, logs, the plan,
    and (unless --read-only) retry, cleanup and target switches.

    Listens on loopback by default. Any other address needs a token: from
    --token-file, or a new one printed once.
    """
    serve_dashboard(
        state.config,
        host=host,
        port=port,
        read_only=read_only,
        worker=worker,
        token_file=token_file,
    )
