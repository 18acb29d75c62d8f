"""The engine: policy (fan-out, leases, retries, polling, cleanup) over the ports, nothing else."""

from __future__ import annotations

from ._context import EngineContext
from ._jobs import (
    cleanup_job,
    get_job,
    job_status,
    retry_job,
    select_targets,
    submit_disk_job,
    submit_job,
    validate_image_name,
)
from ._status import JobStatus, summarize
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
