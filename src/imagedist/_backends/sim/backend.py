"""Assemble the simulated backend for a config: Azure in virtual time, state in memory."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..._config import account_locations
from ...abc import Backend, Clock
from .arm import ArmThrottle
from .blobs import SimBlobStore
from .gallery import SimGalleryService
from .images import SimImageService
from .loop import VirtualClock
from .model import SimFaults, SimModel, SimStats
from .provisioner import SimProvisioner
from .state import MemoryStateStore
from .storage import SimStorage

if TYPE_CHECKING:
    from ..._config import Config

__all__ = ["SimWorld", "account_locations", "heal", "open_sim_backend", "sim_world"]


@dataclass
class SimWorld:
    """The simulated platform behind a sim Backend: storage, counters, parameters."""

    storage: SimStorage
    images: SimImageService
    stats: SimStats
    model: SimModel
    faults: SimFaults
    seed: int


def open_sim_backend(
    config: Config,
    *,
    model: SimModel | None = None,
    faults: SimFaults | None = None,
    seed: int = 0,
    clock: Clock | None = None,
) -> Backend:
    """The ports on a simulated Azure for ``config``'s accounts, on a :class:`VirtualClock`.

    Run the engine on it inside :func:`run_virtual`. :func:`sim_world` gives the platform's
    counters afterwards.
    """
    model = model or SimModel()
    faults = faults or SimFaults()
    clock = clock or VirtualClock()
    stats = SimStats()
    locations = account_locations(config)
    storage = SimStorage(clock, locations, model=model, faults=faults, seed=seed, stats=stats)
    arm = ArmThrottle(clock, model, faults, stats, seed)
    images = SimImageService(storage, arm, seed=seed)
    return Backend(
        blobs=SimBlobStore(storage, seed=seed),
        images=images,
        state=MemoryStateStore(),
        clock=clock,
        provisioner=SimProvisioner(locations),
        gallery=SimGalleryService(storage, arm, seed=seed),
    )


def sim_world(backend: Backend) -> SimWorld:
    """The simulated platform behind a backend made by :func:`open_sim_backend`."""
    blobs = backend.blobs
    if not isinstance(blobs, SimBlobStore) or not isinstance(backend.images, SimImageService):
        raise TypeError("not a sim backend")
    storage = blobs.storage
    return SimWorld(
        storage, backend.images, storage.stats, storage.model, storage.faults, storage.seed
    )


def heal(backend: Backend) -> None:
    """Switch every injected fault off, as when an outage ends (before a `retry`)."""
    world = sim_world(backend)
    world.storage.faults = SimFaults()
    world.images._arm._faults = world.storage.faults
