"""Serving the dashboard: the token a host needs, the listening socket, uvicorn."""

from __future__ import annotations

import errno
import os
import secrets
import socket
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from .._api import Imagedist
from .._exceptions import InvalidInput
from ._app import create_app
from ._security import is_loopback

__all__ = ["ServeOptions", "bind", "read_token", "resolve_token", "serve", "url_of"]

MIN_TOKEN_LENGTH = 16


@dataclass(frozen=True)
class ServeOptions:
    """What `imagedist serve` is given."""

    host: str = "127.0.0.1"
    port: int = 8080
    read_only: bool = False
    worker: bool = False
    token_file: Path | None = None


def read_token(path: Path) -> str:
    """The token in ``path`` (surrounding whitespace dropped).

    :raises InvalidInput: if the file is missing, not a regular file (a FIFO would block the
        read), unreadable, or holds a token too short to guess at.
    """
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise InvalidInput(
            f"Cannot read the token file {str(path)!r} ({exc.strerror}); give a file that holds"
            " the dashboard's token."
        ) from None
    if not stat.S_ISREG(mode):
        raise InvalidInput(
            f"The token file {str(path)!r} is not a regular file; give a file that holds the"
            " dashboard's token."
        )
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "it is not text"
        raise InvalidInput(
            f"Cannot read the token file {str(path)!r} ({reason}); give a readable text file"
            " that holds the dashboard's token."
        ) from None
    if len(token) < MIN_TOKEN_LENGTH or any(c.isspace() for c in token):
        raise InvalidInput(
            f"The token in {str(path)!r} must be one word of at least {MIN_TOKEN_LENGTH}"
            " characters; write a long random one (e.g. `openssl rand -hex 32`)."
        )
    return token


def resolve_token(
    host: str, token_file: Path | None, announce: Callable[[str], None]
) -> str | None:
    """The token the dashboard demands: the file's, or for a host other than loopback a new
    one, given to ``announce`` (once: it is never written anywhere else); none on loopback."""
    if token_file is not None:
        return read_token(token_file)
    if is_loopback(host):
        return None
    token = secrets.token_urlsafe(32)
    announce(token)
    return token


def bind(host: str, port: int) -> socket.socket:
    """A socket listening on ``host``:``port``, bound here so a port in use is a clear error.

    :raises InvalidInput: if the port is in use, or the host is not an address of this machine.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        raise InvalidInput(
            f"Host {host!r} is not a name or address of this machine; give --host 127.0.0.1 or"
            " an address of one of its interfaces."
        ) from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        if os.name != "nt":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise InvalidInput(_bind_problem(host, port, exc)) from None
    sock.setblocking(False)
    return sock


def _bind_problem(host: str, port: int, exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return f"Port {port} on {host} is in use; stop what listens there or give another --port."
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"Port {port} needs privileges to listen on; give a --port above 1023."
    return f"Cannot listen on {host}:{port} ({exc.strerror}); give an address of this machine."


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    if shown in ("0.0.0.0", "[::]"):
        shown = socket.gethostname()
    return f"http://{shown}:{port}/"


def serve(
    factory: Callable[[], Imagedist],
    sock: socket.socket,
    *,
    token: str | None,
    read_only: bool,
    worker: bool,
) -> None:
    """Serve the dashboard on ``sock`` until interrupted."""
    app = create_app(factory, read_only=read_only, token=token, worker=worker)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    uvicorn.Server(config).run(sockets=[sock])
