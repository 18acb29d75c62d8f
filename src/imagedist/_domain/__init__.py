"""The domain: targets, jobs, the per-item state machines and the records the state store keeps.

Everything here is plain data. The engine moves items from state to state; the state store persists
them at every transition, so a restarted worker resumes where the last one stopped.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .._exceptions import InvalidInput
from .._lazy import lazy_names
from .events import EngineEvent, EventKind, LogLevel, Step

if TYPE_CHECKING:
    from .changes import ChangeAction, ChangeKind
    from .targets import Target

__all__ = [
    "ACTIVE_TARGET_STATES",
    "COPY_STATES",
    "HOLDS_COPY_STATES",
    "IMAGE_STATES",
    "IN_FLIGHT_SOURCE_STATES",
    "IN_FLIGHT_TARGET_STATES",
    "IN_PRODUCTION_SOURCE_STATES",
    "LOG_LEVELS",
    "NEEDS_BLOB_STATES",
    "TERMINAL_TARGET_STATES",
    "UPLOAD_AHEAD_STATES",
    "BlobRef",
    "ChangeAction",
    "ChangeKind",
    "EngineEvent",
    "EventKind",
    "FailedPhase",
    "HyperVGeneration",
    "Job",
    "JobState",
    "LogFilter",
    "LogLevel",
    "LogRecord",
    "OsType",
    "SecretUrl",
    "SourceKind",
    "SourceRow",
    "SourceState",
    "Step",
    "Target",
    "TargetRow",
    "TargetState",
]


class OsType(enum.StrEnum):
    """The operating system of the golden image, as Azure's image API names it."""

    LINUX = "linux"
    WINDOWS = "windows"


class HyperVGeneration(enum.StrEnum):
    """The VM generation an image boots as: V1 with BIOS, V2 with UEFI (Azure's names)."""

    V1 = "V1"
    V2 = "V2"


@dataclass(frozen=True)
class BlobRef:
    """Where a blob lives: storage account, container, blob name. Never a URL with a secret in it."""

    account: str
    container: str
    name: str

    def __str__(self) -> str:
        return f"{self.account}/{self.container}/{self.name}"


class SecretUrl:
    """A URL that carries a credential (a SAS): it never prints, logs or pickles its query.

    Call :meth:`reveal` only at the moment the URL is handed to the platform.
    """

    __slots__ = ("_url",)

    def __init__(self, url: str) -> None:
        self._url = url

    def reveal(self) -> str:
        return self._url

    def __repr__(self) -> str:
        return f"SecretUrl({self._url.split('?')[0]!r}?<redacted>)"

    __str__ = __repr__

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("a SecretUrl is not serialised")


class JobState(enum.StrEnum):
    """Lifecycle of a job; derived by the engine from its items, stored so `jobs` is cheap."""

    ACTIVE = "active"  # some item can still make progress
    COMPLETED = "completed"  # every enabled target holds its image
    FAILED = "failed"  # nothing can progress and at least one target failed


class SourceKind(enum.StrEnum):
    """What a copy source is."""

    TIER0 = "tier0"  # the uploaded blob in the staging account
    TIER1 = "tier1"  # an extra copy in the staging account, used only as a copy source
    # A same-account clone of a region's seed copy, in that seed target's account: more sources
    # in the region for the price of a metadata copy (seconds), used only as a copy source.
    CLONE = "clone"
    TARGET = "target"  # a target's finished copy serving others (broadcast; never stored)


class SourceState(enum.StrEnum):
    """State machine of a copy source (tier 0 or tier 1)."""

    PENDING = "pending"  # not started: tier 0 waits for its upload, tier 1 for its copy
    UPLOADING = "uploading"  # tier 0 only: pages are being written
    COPYING = "copying"  # tier 1 only: the server-side copy was started
    READY = "ready"  # verified complete; may serve copies
    FAILED = "failed"  # gave up; the reason is in `error`


class TargetState(enum.StrEnum):
    """State machine of one target within one job."""

    PENDING = "pending"  # waiting for a source with spare read capacity
    COPYING = "copying"  # intent recorded, copy started (or about to be) from `source_id`
    COPIED = "copied"  # the target's blob is verified complete
    IMAGING = "imaging"  # intent recorded, image creation started (or about to be)
    DONE = "done"  # the image's provisioning state is Succeeded
    FAILED = "failed"  # gave up in `failed_phase`; the reason is in `error`
    SKIPPED = "skipped"  # the target was disabled; not counted in the job's percentages


class FailedPhase(enum.StrEnum):
    """Which step a failed target failed in, so a retry resumes there."""

    COPY = "copy"
    IMAGE = "image"


ACTIVE_TARGET_STATES = frozenset(
    {TargetState.PENDING, TargetState.COPYING, TargetState.COPIED, TargetState.IMAGING}
)
# A target in these states holds a verified copy of the disk (unless its blob was deleted since).
HOLDS_COPY_STATES = frozenset({TargetState.COPIED, TargetState.IMAGING, TargetState.DONE})
# A target in these states is in its copy phase: a failure here fails the copy.
COPY_STATES = frozenset({TargetState.PENDING, TargetState.COPYING})
# A target in these states is in its image phase: a failure here fails the image.
IMAGE_STATES = frozenset({TargetState.COPIED, TargetState.IMAGING})
# A target in these states has an effect under way on the platform (a copy or an image).
IN_FLIGHT_TARGET_STATES = frozenset({TargetState.COPYING, TargetState.IMAGING})
# A target in these states moves no further without a `retry` or a switch.
TERMINAL_TARGET_STATES = frozenset({TargetState.DONE, TargetState.FAILED, TargetState.SKIPPED})
# An enabled target in these states still needs a blob (a failed one, to be retried).
NEEDS_BLOB_STATES = frozenset({TargetState.PENDING, TargetState.COPIED, TargetState.FAILED})
# A source in these states is being made: its blob is being written.
IN_FLIGHT_SOURCE_STATES = frozenset({SourceState.UPLOADING, SourceState.COPYING})
# A source in these states is not ready yet but will be (unless it fails).
IN_PRODUCTION_SOURCE_STATES = frozenset(
    {SourceState.PENDING, SourceState.UPLOADING, SourceState.COPYING}
)
# Tier 0 in these states still has its upload (or its copy from the disk) ahead or under way.
UPLOAD_AHEAD_STATES = frozenset({SourceState.PENDING, SourceState.UPLOADING})


@dataclass
class Job:
    """One submission: one VHD, one image name, every enabled target."""

    id: str
    image_name: str
    os_type: OsType
    source_path: str
    size_bytes: int
    created_at: float
    description: str = ""
    state: JobState = JobState.ACTIVE
    finished_at: float | None = None
    source_disk: str = ""  # a managed disk's resource id, when the job copies from one
    # The file the user gave, when it was converted into ``source_path`` (a re-upload converts
    # it again if the converted file is gone); "" when the file went up as it was.
    input_path: str = ""
    # Bumped by every `retry` that puts work back: a worker records an outcome only if the job
    # is still the revision it looked at, so a retry racing with it is never undone.
    revision: int = 0
    # The generation its images are made as: a Gen2-only disk made V1 boots no VM.
    hyper_v_generation: HyperVGeneration = HyperVGeneration.V1
    # Where its image goes: "images" (a managed image per target), "gallery" (a version in the
    # Compute Gallery, named ``gallery_version``), or both.
    publish: tuple[str, ...] = ("images",)
    gallery_version: str = ""


@dataclass
class SourceRow:
    """A copy source of a job, persisted with a version for optimistic concurrency."""

    job_id: str
    source_id: str
    kind: SourceKind
    blob: BlobRef
    state: SourceState = SourceState.PENDING
    parent_id: str | None = None  # the source this one was copied from
    progress_bytes: int = 0
    deleted: bool = False
    error: str = ""
    lease_owner: str | None = None
    lease_until: float = 0.0
    version: int = 0
    # Hex MD5 of the whole disk as uploaded (tier 0); every copy must carry the same Content-MD5.
    content_md5: str = ""


@dataclass
class TargetRow:
    """One target of one job: where its copy and image go, and how far it got."""

    job_id: str
    target: str
    subscription: str
    region: str
    blob: BlobRef
    resource_group: str
    image_name: str
    state: TargetState = TargetState.PENDING
    source_id: str | None = None
    copy_id: str = ""  # the platform's id of the copy we started, to tell it from a stale one
    failed_phase: FailedPhase | None = None
    error: str = ""
    attempts: int = 0
    blob_deleted: bool = False
    lease_owner: str | None = None
    lease_until: float = 0.0
    version: int = 0
    updated_at: float = 0.0


@dataclass(frozen=True)
class LogRecord:
    """One line of a job's log."""

    job_id: str
    ts: float
    level: str  # "info" | "warning" | "error"
    step: str  # "submit" | "upload" | "tier1" | "copy" | "image" | "cleanup" | "job"
    message: str
    target: str = ""
    extra: dict[str, str] = field(default_factory=dict)


LOG_LEVELS = tuple(level.value for level in LogLevel)  # in rising order


@dataclass(frozen=True)
class LogFilter:
    """Which lines of a job's log ``logs`` shows; every state store applies it the same way.

    :param step: only this step.
    :param level: only this level and above (a line of an unknown level counts as info).
    :param target: only this target.
    :raises InvalidInput: if ``level`` is not one of :data:`LOG_LEVELS`.
    """

    step: str | None = None
    level: str | None = None
    target: str | None = None

    def __post_init__(self) -> None:
        if self.level is not None and self.level not in LOG_LEVELS:
            raise InvalidInput(
                f"Level {self.level!r} is unknown; use one of {', '.join(LOG_LEVELS)}."
            )

    def matches(self, record: LogRecord) -> bool:
        rank = {name: i for i, name in enumerate(LOG_LEVELS)}
        return (
            (self.step is None or record.step == self.step)
            and rank.get(record.level, 0) >= rank.get(self.level or "info", 0)
            and (self.target is None or record.target == self.target)
        )


# Imported when first asked for: reading a job's status needs neither the fleet's targets nor
# setup's change kinds (issue 13).
__getattr__ = lazy_names(
    __name__,
    {"ChangeAction": ".changes", "ChangeKind": ".changes", "Target": ".targets"},
    globals(),
)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
