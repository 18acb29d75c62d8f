"""A job's image versions in the Compute Gallery as the state store keeps them (issue 11): one
row per gallery, with its state and each target region's replication. Apart from the gallery's
other values (:mod:`imagedist._domain.gallery`), so that reading a job's status loads only
these (issue 13)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

__all__ = ["GalleryRef", "PublicationRow", "PublicationState", "RegionStatus"]


@dataclass(frozen=True)
class GalleryRef:
    """A gallery: ``Microsoft.Compute/galleries/{name}`` in a subscription's resource group."""

    subscription: str
    resource_group: str
    name: str

    def __str__(self) -> str:
        return f"{self.subscription}/{self.resource_group}/{self.name}"


class PublicationState(enum.StrEnum):
    """Where a job's version in one gallery stands."""

    PENDING = "pending"  # waiting for its source: the upload, or the central version
    CREATING = "creating"  # the version is being made from its source
    REPLICATING = "replicating"  # made; its target regions fill in
    DONE = "done"  # every target region completed
    FAILED = "failed"  # the version could not be made, or a region failed (see ``regions``)


@dataclass(frozen=True)
class RegionStatus:
    """One target region of a publication, as last seen: ``pending``, ``replicating``,
    ``completed`` or ``failed`` (with the reason)."""

    state: str = "pending"
    progress: int = 0
    error: str = ""


@dataclass
class PublicationRow:
    """A job's image version in one gallery, persisted with a version for optimistic
    concurrency like the other items (``key``: ``central``, or the subscription of a gallery of
    its own in ``per-subscription`` mode)."""

    job_id: str
    key: str
    gallery: GalleryRef
    definition: str
    version_name: str
    region: str  # the gallery's region: the version's location
    regions: dict[str, RegionStatus] = field(default_factory=dict)
    state: PublicationState = PublicationState.PENDING
    source_id: str = ""  # "tier0" (the upload) or "central" (the central gallery's version)
    error: str = ""
    attempts: int = 0
    lease_owner: str | None = None
    lease_until: float = 0.0
    version: int = 0
    updated_at: float = 0.0
