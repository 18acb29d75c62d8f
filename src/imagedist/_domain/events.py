"""What the engine reports: log levels and steps, and the structured events it emits as items
move, so that `plan`, progress displays and a dashboard never parse log wording (issue 9)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = [
    "COPIED_BY_COPY_BLOB",
    "COPIED_BY_RANGES",
    "EngineEvent",
    "EventKind",
    "LogLevel",
    "Step",
]

# A COPY_VERIFIED event's detail: the method that moved the copy.
COPIED_BY_COPY_BLOB = "Copy Blob"
COPIED_BY_RANGES = "ranged, Put Page From URL"


class LogLevel(enum.StrEnum):
    """How much a log line matters, in rising order."""

    INFO = "info"  # progress
    WARNING = "warning"  # something went wrong and the engine works around it
    ERROR = "error"  # an item (or the job) failed


class Step(enum.StrEnum):
    """Which part of a job a log line is about."""

    SUBMIT = "submit"  # the job was recorded
    UPLOAD = "upload"  # tier 0: the upload, or the copy from a managed disk
    TIER1 = "tier1"  # the extra copies in the staging account
    COPY = "copy"  # a target's copy
    IMAGE = "image"  # a target's image
    GALLERY = "gallery"  # a gallery version: its creation and replication
    CLEANUP = "cleanup"  # intermediate blobs deleted
    JOB = "job"  # the job as a whole


class EventKind(enum.StrEnum):
    """A step an item finished or started, as the engine saw it happen."""

    UPLOAD_DONE = "upload_done"  # tier 0 is verified (uploaded, or copied from the disk)
    TIER1_READY = "tier1_ready"  # a tier-1 copy is verified
    COPY_STARTED = "copy_started"  # a target's copy was started (its source in ``source``)
    COPY_VERIFIED = "copy_verified"  # a target's copy is the disk
    IMAGE_STARTED = "image_started"  # a create-image request was made for a target
    IMAGE_SUCCEEDED = "image_succeeded"  # a target's image exists and is its own
    FAILED = "failed"  # an item failed (the reason is in ``detail``)
    JOB_ENDED = "job_ended"  # the job completed or failed (which, in ``detail``)


@dataclass(frozen=True)
class EngineEvent:
    """One thing that happened to one item of one job, at ``ts`` on the engine's clock.

    :param target: the target it happened to ("" for a source or the job).
    :param source: the source it happened to, or the one a copy reads from.
    """

    job_id: str
    ts: float
    kind: EventKind
    target: str = ""
    source: str = ""
    detail: str = ""
