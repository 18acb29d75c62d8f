"""Azure Compute Gallery, as the engine sees it: galleries, image definitions, image versions and
their per-region replication (issue 11).

A gallery holds image definitions (publisher/offer/SKU, OS type and state, generation, security
type: immutable once made); a definition holds versions named ``MAJOR.MINOR.PATCH``, each made once
from a source (a VHD blob, or another gallery's version) and replicated by Azure to its target
regions. These are plain values; :class:`imagedist.abc.GalleryService` is the port.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field

from . import BlobRef, OsType
from .publications import GalleryRef, PublicationRow, PublicationState, RegionStatus

__all__ = [
    "VERSION_NAME",
    "DefinitionSpec",
    "GalleryRef",
    "GallerySharing",
    "ImageVersion",
    "PublicationRow",
    "PublicationState",
    "RegionReplication",
    "RegionStatus",
    "ReplicationState",
    "TargetRegion",
    "VersionSource",
    "VersionSpec",
    "next_patch",
    "parse_version",
]

# Azure: three integers in the 32-bit range, MAJOR.MINOR.PATCH.
VERSION_NAME = re.compile(r"^(0|[1-9][0-9]{0,9})\.(0|[1-9][0-9]{0,9})\.(0|[1-9][0-9]{0,9})$")
MAX_PART = 2**31 - 1


def parse_version(name: str) -> tuple[int, int, int]:
    """``"1.2.3"`` as ``(1, 2, 3)``.

    :raises ValueError: unless it is three decimal integers of at most 2^31 - 1, dot-separated.
    """
    match = VERSION_NAME.match(name)
    parts = tuple(int(p) for p in match.groups()) if match else ()
    if len(parts) != 3 or any(p > MAX_PART for p in parts):
        raise ValueError(
            f"{name!r} is not a gallery image version name: it must be MAJOR.MINOR.PATCH, three"
            f" whole numbers from 0 to {MAX_PART} (such as 1.0.0)"
        )
    return parts[0], parts[1], parts[2]


def next_patch(existing: list[str]) -> str:
    """The next patch after the highest version in ``existing`` (``"1.0.0"`` if there is none)."""
    versions = sorted(parse_version(name) for name in existing)
    if not versions:
        return "1.0.0"
    major, minor, patch = versions[-1]
    return f"{major}.{minor}.{patch + 1}"


@dataclass(frozen=True)
class GallerySharing:
    """Who a gallery is shared to directly (its sharing profile), sorted, lower case."""

    subscriptions: tuple[str, ...] = ()
    tenants: tuple[str, ...] = ()


@dataclass(frozen=True)
class DefinitionSpec:
    """An image definition. Every field but ``description``, ``end_of_life`` and ``tags`` is
    immutable in Azure once the definition exists."""

    gallery: GalleryRef
    name: str
    region: str
    os_type: OsType
    publisher: str
    offer: str
    sku: str
    os_state: str = "Generalized"  # or "Specialized"
    hyper_v_generation: str = "V1"
    security_type: str = ""  # "", "TrustedLaunchSupported", "TrustedLaunch", ...
    architecture: str = "x64"  # or "Arm64"
    description: str = ""
    end_of_life: str = ""  # an ISO 8601 date, "" for none
    tags: dict[str, str] = field(default_factory=dict)

    IMMUTABLE = (
        "os_type",
        "os_state",
        "hyper_v_generation",
        "publisher",
        "offer",
        "sku",
        "security_type",
        "architecture",
    )

    def differences(self, other: DefinitionSpec) -> list[str]:
        """The immutable properties on which ``other`` differs, as ``name: ours != theirs``."""
        return [
            f"{name}: {getattr(self, name)!s} != {getattr(other, name)!s}"
            for name in self.IMMUTABLE
            if str(getattr(self, name)).lower() != str(getattr(other, name)).lower()
        ]


@dataclass(frozen=True)
class TargetRegion:
    """Where a version is replicated, and how."""

    name: str
    replicas: int = 1
    storage_account_type: str = "Standard_LRS"  # or Standard_ZRS, Premium_LRS
    exclude_from_latest: bool = False


@dataclass(frozen=True)
class VersionSource:
    """What a version is made from: a VHD blob (in a storage account of the gallery's
    subscription), or another gallery's version (a cross-subscription copy)."""

    blob: BlobRef | None = None
    version_id: str = ""  # the ARM id of a gallery image version

    def __str__(self) -> str:
        return str(self.blob) if self.blob is not None else self.version_id


class ReplicationState(enum.StrEnum):
    """One region's replication of a version, as Azure reports it."""

    UNKNOWN = "Unknown"
    REPLICATING = "Replicating"
    COMPLETED = "Completed"
    FAILED = "Failed"


@dataclass(frozen=True)
class RegionReplication:
    region: str
    state: ReplicationState
    progress: int = 0  # percent
    details: str = ""


@dataclass(frozen=True)
class VersionSpec:
    """A version to create (once) in ``definition`` of ``gallery``."""

    gallery: GalleryRef
    definition: str
    name: str
    region: str  # the version's location: the gallery's region
    source: VersionSource
    target_regions: tuple[TargetRegion, ...]
    exclude_from_latest: bool = False
    end_of_life: str = ""
    replication_mode: str = "Full"  # or "Shallow"
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ImageVersion:
    """A version as the gallery reports it, with its replication per target region."""

    gallery: GalleryRef
    definition: str
    name: str
    region: str
    provisioning_state: str  # Creating, Updating, Succeeded, Failed, Deleting, ...
    source: VersionSource
    target_regions: tuple[TargetRegion, ...]
    replication: tuple[RegionReplication, ...] = ()
    exclude_from_latest: bool = False
    end_of_life: str = ""
    published_at: float = 0.0
    tags: dict[str, str] = field(default_factory=dict)
    error_code: str = ""
    error_message: str = ""
    id: str = ""  # the ARM id, the source of a cross-subscription copy

    def replication_of(self, region: str) -> RegionReplication | None:
        wanted = region.lower()
        return next((r for r in self.replication if r.region.lower() == wanted), None)
