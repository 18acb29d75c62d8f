"""The ``sim`` backend: Azure modelled in virtual time, so the unchanged engine can distribute to
thousands of targets in seconds, deterministically for a seed.

Run everything inside :func:`run_virtual` (a :class:`VirtualTimeLoop`); the backend's clock is a
:class:`VirtualClock`. Nothing here uses threads or I/O.
"""

from __future__ import annotations

from ._arm import ArmThrottle, SimProvisioner, TokenBucket
from ._backend import SimWorld, account_locations, heal, open_sim_backend, sim_world
from ._blobs import SimBlobStore
from ._images import SimImageService
from ._loop import DEFAULT_EPOCH, VirtualClock, VirtualTimeLoop, run_virtual
from ._model import MB, MIB, SimFaults, SimModel, SimStats
from ._scenario import ScenarioResult, preload_tier0, run_scenario, scenario_config
from ._state import MemoryStateStore, MemoryTables
from ._storage import SimStorage

__all__ = [
    "DEFAULT_EPOCH",
    "MB",
    "MIB",
    "ArmThrottle",
    "MemoryStateStore",
    "MemoryTables",
    "ScenarioResult",
    "SimBlobStore",
    "SimFaults",
    "SimImageService",
    "SimModel",
    "SimProvisioner",
    "SimStats",
    "SimStorage",
    "SimWorld",
    "TokenBucket",
    "VirtualClock",
    "VirtualTimeLoop",
    "account_locations",
    "heal",
    "open_sim_backend",
    "preload_tier0",
    "run_scenario",
    "run_virtual",
    "scenario_config",
    "sim_world",
]
