"""The ``sim`` backend: Azure modelled in virtual time, so the unchanged engine can distribute to
thousands of targets in seconds, deterministically for a seed.

Run everything inside :func:`run_virtual` (a :class:`VirtualTimeLoop`); the backend's clock is a
:class:`VirtualClock`. Nothing here uses threads or I/O.
"""

from __future__ import annotations

from .arm import ArmThrottle, TokenBucket
from .backend import SimWorld, account_locations, heal, open_sim_backend, sim_world
from .blobs import SimBlobStore
from .gallery import SimGalleryService
from .images import SimImageService
from .loop import DEFAULT_EPOCH, VirtualClock, VirtualTimeLoop, run_virtual
from .model import MB, MIB, SimFaults, SimModel, SimStats
from .provisioner import SimProvisioner
from .scenario import ScenarioResult, preload_tier0, run_scenario, scenario_config
from .state import MemoryStateStore, MemoryTables
from .storage import SimStorage

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
    "SimGalleryService",
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
