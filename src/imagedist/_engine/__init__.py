"""The engine: policy (fan-out, leases, retries, polling, cleanup) over the ports, nothing else."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_names

if TYPE_CHECKING:
    from ._context import EngineContext
    from ._jobs import (
        cleanup_job,
        retry_job,
        select_targets,
        submit_disk_job,
        submit_job,
        validate_image_name,
    )
    from ._status import JobStatus, get_job, job_status, summarize
    from ._tier0 import fill_tier0
    from ._worker import Worker, target_enablement

__all__ = [
    "EngineContext",
    "JobStatus",
    "Worker",
    "cleanup_job",
    "fill_tier0",
    "get_job",
    "job_status",
    "retry_job",
    "select_targets",
    "submit_disk_job",
    "submit_job",
    "summarize",
    "target_enablement",
    "validate_image_name",
]

# Where each name lives. A name's module is imported when it is first asked for, so a command
# that only reads a job's status loads the context and the status, not the worker, the
# publications and the cleanup that writing needs (issue 13).
_HOME = {
    "EngineContext": "._context",
    "JobStatus": "._status",
    "get_job": "._status",
    "job_status": "._status",
    "summarize": "._status",
    "fill_tier0": "._tier0",
    "Worker": "._worker",
    "target_enablement": "._worker",
    **dict.fromkeys(
        [
            "cleanup_job",
            "retry_job",
            "select_targets",
            "submit_disk_job",
            "submit_job",
            "validate_image_name",
        ],
        "._jobs",
    ),
}


__getattr__ = lazy_names(__name__, _HOME, globals())


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
