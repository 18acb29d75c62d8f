"""Backends: each module implements the ports for one world and is imported only when used."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib import import_module
from typing import TYPE_CHECKING

from .._exceptions import BackendUnavailable

if TYPE_CHECKING:
    from .._config import Config
    from ..abc import BlobStore, Clock, ImageService, Provisioner, StateStore

__all__ = ["Backend", "open_backend"]

EXTRAS = {"azure": "azure"}


@dataclass
class Backend:
    """The ports, opened together for one config."""

    blobs: BlobStore
    images: ImageService
    state: StateStore
    clock: Clock
    provisioner: Provisioner
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)  # credentials...

    async def aclose(self) -> None:
        await self.blobs.aclose()
        await self.images.aclose()
        await self.state.aclose()
        await self.provisioner.aclose()
        for close in self.closers:
            await close()


def open_backend(config: Config) -> Backend:
    """Open the backend the config names.

    :raises BackendUnavailable: if it is unknown or its extra is not installed.
    """
    try:
        module = import_module(f"._{config.backend}", __name__)
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
