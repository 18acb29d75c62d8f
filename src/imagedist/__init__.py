"""imagedist: distribute one golden OS image to every Azure subscription and region."""

from __future__ import annotations

from ._api import Imagedist
from ._config import Config, load_config
from ._domain import (
    BlobRef,
    FailedPhase,
    HyperVGeneration,
    Job,
    JobState,
    LogFilter,
    OsType,
    Target,
    TargetState,
)
from ._engine import JobStatus, Worker
from ._exceptions import (
    AuthFailed,
    BackendUnavailable,
    ConfigError,
    Conflict,
    ImagedistError,
    InvalidInput,
    NotFound,
    OperationFailed,
    PreconditionFailed,
    TransientError,
)

__all__ = [
    "AuthFailed",
    "BackendUnavailable",
    "BlobRef",
    "Config",
    "ConfigError",
    "Conflict",
    "FailedPhase",
    "HyperVGeneration",
    "Imagedist",
    "ImagedistError",
    "InvalidInput",
    "Job",
    "JobState",
    "JobStatus",
    "LogFilter",
    "NotFound",
    "OperationFailed",
    "OsType",
    "PreconditionFailed",
    "Target",
    "TargetState",
    "TransientError",
    "Worker",
    "load_config",
]
