"""imagedist: distribute one golden OS image to every Azure subscription and region."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy_names

if TYPE_CHECKING:
    from ._api import Imagedist, JobReader, read_jobs
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
    "JobReader",
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
    "read_jobs",
]

# Where each public name lives. They are imported on first use, not with the package: the
# command line imports `imagedist._cli`, and `imagedist --help` should not pay for the config's
# models, the engine and the backends (issue 13).
_HOME = {
    "Imagedist": "._api",
    "JobReader": "._api",
    "read_jobs": "._api",
    "Config": "._config",
    "load_config": "._config",
    "JobStatus": "._engine",
    "Worker": "._engine",
    **dict.fromkeys(
        [
            "BlobRef",
            "FailedPhase",
            "HyperVGeneration",
            "Job",
            "JobState",
            "LogFilter",
            "OsType",
            "Target",
            "TargetState",
        ],
        "._domain",
    ),
    **dict.fromkeys(
        [
            "AuthFailed",
            "BackendUnavailable",
            "ConfigError",
            "Conflict",
            "ImagedistError",
            "InvalidInput",
            "NotFound",
            "OperationFailed",
            "PreconditionFailed",
            "TransientError",
        ],
        "._exceptions",
    ),
}


__getattr__ = lazy_names(__name__, _HOME, globals())


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
