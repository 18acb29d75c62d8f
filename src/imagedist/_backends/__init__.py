"""Backends: each package implements the ports for one world (``local``, ``sim``, ``azure``)
and is imported only when a config asks for it."""

from __future__ import annotations

from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING

from .._exceptions import BackendUnavailable

if TYPE_CHECKING:
    from .._config import Config
    from ..abc import Backend, StateStore

__all__ = ["open_backend", "open_local_state_store"]

EXTRAS = {"azure": "azure"}


def open_backend(config: Config) -> Backend:
    """Open the backend the config names.

    :raises BackendUnavailable: if it is unknown or its extra is not installed.
    """
    try:
        module = import_module(f".{config.backend}", __name__)
    except ModuleNotFoundError as exc:
        extra = EXTRAS.get(config.backend)
        if extra is None or exc.name is None or exc.name.startswith(__name__):
            raise BackendUnavailable(f"Backend {config.backend!r} is not known.") from None
        raise BackendUnavailable(
            f"Backend {config.backend!r} is not available. "
            f"Install it with: pip install 'imagedist[{extra}]'"
        ) from None
    backend: Backend = module.open_backend(config)
    return backend


def open_local_state_store(root: Path, *, in_worker_threads: bool = True) -> StateStore:
    """The local backend's state store alone, in the folder ``root`` (reading jobs needs no
    other port).

    :param in_worker_threads: False: its calls run in the caller's thread, needing no event
        loop (see :class:`imagedist._backends.local.state.SqliteStateStore`).
    :raises InvalidInput: if ``root`` is, or lies under, something that is not a folder.
    """
    from .local import open_state_store

    return open_state_store(root, in_worker_threads=in_worker_threads)
