"""The ports: what the engine needs from the world, and nothing more.

Each backend (``local``, ``sim``, ``azure``) implements these. The engine talks to them with the plain
objects of :mod:`imagedist._domain` and the small result types below; no SDK type crosses this line.
A contract test suite per port (``tests/contract/``) runs against every implementation.
"""

from __future__ import annotations

import enum
import math
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ._domain import BlobRef, Job, OsType, SecretUrl
from ._domain.changes import DataRole, Role
from ._exceptions import OperationFailed
from ._state_store import StateStore

if TYPE_CHECKING:
    # Named in the ports' signatures only: a state store's reader loads no gallery values.
    from ._domain.gallery import (
        DefinitionSpec,
        GalleryRef,
        GallerySharing,
        ImageVersion,
        TargetRegion,
        VersionSpec,
    )

__all__ = [
    "RANGED_COPY_UNSUPPORTED",
    "AccountInfo",
    "Backend",
    "BlobProperties",
    "BlobStore",
    "Clock",
    "CopySource",
    "CopyStatus",
    "DiskReading",
    "DiskSource",
    "DiskSources",
    "FileSource",
    "GroupInfo",
    "Image",
    "ImageService",
    "ImageSpec",
    "Provisioner",
    "ProvisioningState",
    "StateStore",
    "SystemClock",
    "looks_until",
]


#: The code of the OperationFailed a blob store raises when it cannot copy ranges at all.
RANGED_COPY_UNSUPPORTED = "RangedCopyUnsupported"


class CopyStatus(enum.StrEnum):
    """Status of the last server-side copy into a blob, as Azure reports it."""

    NONE = "none"  # the blob was not made by a copy
    PENDING = "pending"
    SUCCESS = "success"
    FAILED = "failed"
    ABORTED = "aborted"


@dataclass(frozen=True)
class BlobProperties:
    """What the engine reads back about a blob."""

    ref: BlobRef
    size: int
    copy_status: CopyStatus = CopyStatus.NONE
    copy_id: str = ""
    copy_source: str = ""  # "account/container/name" of the copy source, never a URL
    copy_progress: int = 0  # bytes copied so far
    copy_total: int = 0  # bytes to copy
    copy_error: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    content_md5: bytes | None = None  # MD5 of the whole blob, when it was set


class BlobStore(ABC):
    """Page blobs in storage accounts, with Azure's asynchronous server-side copy."""

    @abstractmethod
    async def ensure_container(self, account: str, container: str) -> None:
        """Create the container if it does not exist.

        :raises NotFound: if the account does not exist.
        """

    @abstractmethod
    async def container_exists(self, account: str, container: str) -> bool:
        """Whether the container exists (for pre-flight checks).

        :raises NotFound: if the account does not exist or cannot be reached.
        """

    @abstractmethod
    async def create_page_blob(self, ref: BlobRef, size: int, *, overwrite: bool = False) -> None:
        """Create an empty page blob of ``size`` bytes (a multiple of 512).

        Without ``overwrite`` an existing blob of the same size is kept, so an upload can resume.

        :raises ValueError: if ``size`` is not a positive multiple of 512.
        :raises Conflict: if a blob of another size exists and ``overwrite`` is false.
        """

    @abstractmethod
    async def write_pages(self, ref: BlobRef, offset: int, data: bytes) -> None:
        """Write ``data`` at ``offset``; both 512-byte aligned and inside the blob.

        :raises NotFound: if the blob does not exist.
        :raises ValueError: if the range is misaligned or outside the blob.
        """

    @abstractmethod
    async def read(self, ref: BlobRef, offset: int, length: int) -> bytes:
        """Read ``length`` bytes at ``offset`` (unwritten pages read as zeros).

        :raises NotFound: if the blob does not exist.
        """

    @abstractmethod
    async def page_ranges(self, ref: BlobRef) -> list[tuple[int, int]]:
        """The written ranges of the blob as ``(start, end)`` pairs, end exclusive, sorted.

        :raises NotFound: if the blob does not exist.
        """

    @abstractmethod
    async def get_properties(self, ref: BlobRef) -> BlobProperties:
        """Size, metadata and the status of the last copy into the blob.

        :raises NotFound: if the blob does not exist.
        """

    @abstractmethod
    async def set_content_md5(self, ref: BlobRef, md5: bytes) -> None:
        """Store the MD5 of the whole blob as its Content-MD5 (copies carry it along).

        :raises NotFound: if the blob does not exist.
        """

    @abstractmethod
    async def set_metadata(self, ref: BlobRef, metadata: dict[str, str]) -> None:
        """Replace the blob's metadata.

        :raises NotFound: if the blob does not exist.
        """

    @abstractmethod
    async def start_copy(self, source: BlobRef, dest: BlobRef) -> str:
        """Start an asynchronous server-side copy and return its copy id at once.

        The destination's status is then ``pending`` until it becomes ``success`` or ``failed``;
        poll :meth:`get_properties`. The adapter grants the copy read access to the source on its own
        (a SAS scoped to that one blob on Azure); the engine never sees a URL.

        :raises NotFound: if the source does not exist.
        :raises Conflict: if a copy into ``dest`` is already pending.
        """

    @abstractmethod
    async def start_copy_from_url(self, source: SecretUrl, dest: BlobRef) -> str:
        """Like :meth:`start_copy`, from a URL that grants its own read access (a managed
        disk's access SAS). The URL is never logged or put in an error message.

        :raises Conflict: if a copy into ``dest`` is already pending.
        """

    #: The most bytes one :meth:`copy_range` call moves (Azure's Put Page From URL: 4 MiB); 0 when
    #: the adapter cannot copy ranges. The simulator allows more: one call there stands for many
    #: modelled requests, so a copy of 10,000 targets stays a few events each.
    copy_range_bytes: int = 0
    #: How many :meth:`copy_range` calls into one blob are worth having in flight at once; 0: as
    #: many as the ranged copy's pacer allows. The simulator's calls each stand for many
    #: parallel requests into a blob that moves at one rate, so two keep it busy (one landing
    #: while the next waits its turn) and more would only be tasks waiting in line.
    copy_range_calls_at_once: int = 0
    #: Whether a ranged copy across accounts beats an asynchronous Copy Blob here, for
    #: ``copy_method = "auto"``: on Azure it does (~190 MB/s against 4-45 MB/s, PERF-MODEL.md);
    #: the local store's Copy Blob moves at disk speed without costing the worker a call.
    ranged_copy_faster: bool = False

    async def copy_range(self, source: BlobRef, dest: BlobRef, offset: int, length: int) -> None:
        """Copy bytes ``[offset, offset + length)`` of ``source`` into the same range of ``dest``,
        server-side and synchronously (Azure's Put Page From URL); when it returns, the range is
        written and listed by :meth:`page_ranges` of ``dest``. A range lands whole or not at all.

        The adapter grants the call read access to the source on its own (a read-only SAS
        scoped to that one blob on Azure, or the caller's token); no URL reaches the engine.

        :raises ValueError: if the range is not 512-aligned, is empty, is longer than
            :attr:`copy_range_bytes` or runs past the end of either blob.
        :raises NotFound: if the source or the destination does not exist.
        :raises TransientError: if the service is busy (503 ServerBusy); ``retry_after`` is set
            when it said how long to wait.
        :raises AuthFailed: if the service could not read the source with the access it was
            given (expired or wrong-scope SAS: ``CannotVerifyCopySource``).
        """
        raise OperationFailed(
            f"this blob store cannot copy ranges (into blob '{dest}'); use copy_method = \"async\"",
            code=RANGED_COPY_UNSUPPORTED,
        )

    @abstractmethod
    async def abort_copy(self, dest: BlobRef, copy_id: str) -> None:
        """Abort a pending copy; its status becomes ``aborted``.

        :raises NotFound: if no such copy is pending on ``dest``.
        """

    @abstractmethod
    async def delete_blob(self, ref: BlobRef) -> bool:
        """Delete the blob; return whether it existed. Deleting a missing blob is not an error."""

    @abstractmethod
    async def list_blobs(self, account: str, container: str, prefix: str = "") -> list[str]:
        """Names of the blobs in the container starting with ``prefix``, sorted.

        A missing container lists as empty.
        """

    async def wait_for_copy(self, ref: BlobRef, longest: float) -> bool:
        """Wait until the copy into ``ref`` ended, ``longest`` seconds at most, if this store
        can tell when; return whether it waited. A real service cannot (its copies are polled),
        so the default returns False at once; the simulator knows each copy's end, which spares
        it a look every poll interval."""
        return False

    async def wait_for_ranges(self, ref: BlobRef, longest: float, every: float) -> bool:
        """Wait until a range lands in ``ref`` (a copy being made by ranges, which another copy
        follows), ``longest`` seconds at most, if this store can tell when; return whether it
        waited. A real service cannot (the follower lists the blob's page ranges every
        ``every`` seconds), so the default returns False at once; the simulator knows when
        each range lands, and wakes the follower at the look that would have seen it."""
        return False

    async def aclose(self) -> None:  # noqa: B027 - optional hook, most adapters hold nothing
        """Release connections and handles."""


class ProvisioningState(enum.StrEnum):
    """Provisioning state of a managed image, as Azure reports it.

    Besides a creation's ``Creating`` → ``Succeeded``/``Failed``, Azure reports ``Updating`` (a
    PUT or PATCH onto an existing image is running), ``Deleting`` (someone deletes it) and
    ``Canceled`` (its creation was cancelled: as unusable as a failed one). Anything else reads
    as ``UNKNOWN`` (see :meth:`parse`), never as ``Creating``.
    """

    CREATING = "Creating"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    UPDATING = "Updating"
    DELETING = "Deleting"
    CANCELED = "Canceled"
    UNKNOWN = "Unknown"

    @classmethod
    def parse(cls, value: str | None) -> ProvisioningState:
        """The state a platform reports as ``value`` (case ignored); ``UNKNOWN`` for anything
        this version does not know, so a new state on the platform cannot crash a reader."""
        for state in cls:
            if state.value.lower() == (value or "").strip().lower():
                return state
        return cls.UNKNOWN

    @property
    def unusable(self) -> bool:
        """Ended, and not in a way an image can be used: to delete and create again."""
        return self in (ProvisioningState.FAILED, ProvisioningState.CANCELED)

    @property
    def changing(self) -> bool:
        """Someone else's operation is under way on it (or a state we cannot read): wait, and
        never delete it meanwhile."""
        return self in (
            ProvisioningState.UPDATING,
            ProvisioningState.DELETING,
            ProvisioningState.UNKNOWN,
        )


@dataclass(frozen=True)
class ImageSpec:
    """A managed image to create from a VHD blob in the same subscription and region."""

    subscription: str
    resource_group: str
    name: str
    region: str
    source_blob: BlobRef
    os_type: OsType
    hyper_v_generation: str = "V1"
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Image:
    """A managed image as the image service reports it."""

    subscription: str
    resource_group: str
    name: str
    region: str
    source_blob: BlobRef
    os_type: OsType
    provisioning_state: ProvisioningState
    error_code: str = ""
    error_message: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    hyper_v_generation: str = "V1"


class ImageService(ABC):
    """Managed images (``Microsoft.Compute/images``), created by long-running operations."""

    @abstractmethod
    async def ensure_resource_group(self, subscription: str, name: str, region: str) -> None:
        """Create the resource group if it does not exist."""

    @abstractmethod
    async def begin_create_image(self, spec: ImageSpec) -> None:
        """Start creating the image and return as soon as the platform accepted the request.

        Poll :meth:`get_image` for the outcome.

        :raises Conflict: if an image of that name exists with another source.
        :raises OperationFailed: if the platform refused the request (the blob is in another
            subscription or region, for example), with the platform's code.
        """

    @abstractmethod
    async def get_image(self, subscription: str, resource_group: str, name: str) -> Image:
        """The image and its provisioning state.

        :raises NotFound: if there is no such image.
        """

    async def wait_for_image(
        self, subscription: str, resource_group: str, name: str, longest: float, every: float
    ) -> bool:
        """Wait until the image's creation ended, ``longest`` seconds at most, if this service
        can tell when; return whether it waited. The caller would have looked every ``every``
        seconds meanwhile: a simulated service counts those looks as the reads they stand for.
        A real service cannot tell (its images are polled): the default returns False at once."""
        return False

    @abstractmethod
    async def delete_image(self, subscription: str, resource_group: str, name: str) -> bool:
        """Delete the image; return whether it existed."""

    @abstractmethod
    async def list_images(self, subscription: str, resource_group: str) -> list[Image]:
        """Every image in the resource group, sorted by name."""

    @abstractmethod
    async def disk_size(self, disk_id: str) -> int:
        """The size in bytes of a managed disk, by its resource id.

        :raises NotFound: if there is no such disk.
        :raises InvalidInput: if ``disk_id`` is not a managed disk's resource id.
        """

    @abstractmethod
    async def grant_disk_read(self, disk_id: str, seconds: int) -> SecretUrl:
        """Grant read access to a managed disk for ``seconds``; returns its access URL (a SAS).

        :raises NotFound: if there is no such disk.
        """

    @abstractmethod
    async def revoke_disk_read(self, disk_id: str) -> None:
        """Revoke the disk's access URLs; revoking when none was granted is not an error."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections and handles."""


@dataclass(frozen=True)
class AccountInfo:
    """A storage account as the provisioner sees it."""

    subscription: str
    resource_group: str
    name: str
    region: str
    managed: bool  # made by `imagedist setup` (tagged), so `teardown` may remove it


@dataclass(frozen=True)
class GroupInfo:
    """A resource group as the provisioner sees it."""

    subscription: str
    name: str
    region: str
    managed: bool  # made by `imagedist setup` (tagged), so `teardown` may remove it


class Provisioner(ABC):
    """Resource groups, storage accounts, data-plane roles and resource providers: what `setup`,
    `teardown` and `check` manage.

    Everything it creates carries the tag ``imagedist-managed=true``; teardown removes only
    tagged resources. Every write it makes is one Resource Manager write (the engine budgets them).
    """

    @abstractmethod
    async def get_resource_group(self, subscription: str, name: str) -> GroupInfo | None:
        """The resource group, or None if it does not exist.

        :raises AuthFailed: if the credentials are refused for the subscription.
        """

    @abstractmethod
    async def create_resource_group(self, subscription: str, name: str, region: str) -> None:
        """Create (or update) the resource group, tagged as managed by imagedist."""

    @abstractmethod
    async def delete_resource_group(self, subscription: str, name: str) -> None:
        """Delete the resource group and everything in it; waits for the operation."""

    @abstractmethod
    async def get_storage_account(
        self, subscription: str, resource_group: str, name: str
    ) -> AccountInfo | None:
        """The account, or None if the resource group holds no such account."""

    @abstractmethod
    async def account_name_available(self, subscription: str, name: str) -> tuple[bool, str]:
        """Whether the globally unique account name is free, and the reason if not."""

    @abstractmethod
    async def create_storage_account(
        self, subscription: str, resource_group: str, name: str, region: str, sku: str
    ) -> None:
        """Create the account (StorageV2, HTTPS only, no public blob access); waits for it."""

    @abstractmethod
    async def delete_storage_account(
        self, subscription: str, resource_group: str, name: str
    ) -> None:
        """Delete the account; deleting a missing one is not an error."""

    @abstractmethod
    async def list_regions(self, subscription: str) -> list[str]:
        """The region names the subscription can use."""

    @abstractmethod
    async def principal_id(self) -> str | None:
        """The object id of the identity that reads and writes the accounts' data, or None when
        data access does not go by roles (account keys, the local backend)."""

    @abstractmethod
    async def has_role(self, account: AccountInfo, principal_id: str, role: DataRole) -> bool:
        """Whether the principal holds the role on the account (assigned there or above it)."""

    @abstractmethod
    async def grant_role(self, account: AccountInfo, principal_id: str, role: DataRole) -> None:
        """Assign the role on the account to the principal; an assignment that exists is fine."""

    @abstractmethod
    async def has_role_at(self, scope: str, principal_id: str, role: Role) -> bool:
        """Whether the principal holds the role at the scope (a resource's ARM id, such as a
        gallery's), assigned there or above it."""

    @abstractmethod
    async def grant_role_at(self, scope: str, principal_id: str, role: Role) -> None:
        """Assign the role at the scope (a resource's ARM id) to the principal; an assignment
        that exists is fine."""

    @abstractmethod
    async def provider_registered(self, subscription: str, namespace: str) -> bool:
        """Whether the subscription has registered the resource provider (``Microsoft.Storage``)."""

    @abstractmethod
    async def register_provider(self, subscription: str, namespace: str) -> None:
        """Register the resource provider in the subscription; waits until it is registered."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections and handles."""


class DiskReading(ABC):
    """A disk file held open for one upload: every read is of that one file, even if its path
    is replaced or removed meanwhile. Use it as a context manager.

    Its methods block (they read the file): the engine calls the long ones from worker threads.

    :ivar name: what messages call the file (its path).
    :ivar size: its size in bytes, when it was opened.
    :ivar data_bytes: the bytes that may hold data (an upper bound of what will be sent).
    """

    name: str
    size: int
    data_bytes: int

    @abstractmethod
    def fingerprint(self) -> str:
        """Names the file's version: an upload resumes only into a blob begun from the same."""

    @abstractmethod
    def footer(self) -> bytes:
        """The file's last 512 bytes (all of it if smaller), read now."""

    @abstractmethod
    def footer_problem(self, footer: bytes) -> str | None:
        """Why ``footer`` is not the footer of a fixed VHD of :attr:`size`; ``None`` if it is."""

    @abstractmethod
    def chunks(self) -> Generator[tuple[int, bytes], None, None]:
        """``(offset, data)`` of every run holding a non-zero byte, in order.

        :raises SourceChanged: if the file shrank while it was read.
        """

    @abstractmethod
    def md5(self, stop: threading.Event | None = None) -> bytes:
        """The MD5 of the whole file, holes included; safe to run beside :meth:`chunks`.

        Meant for a thread of its own: it looks at ``stop`` before every read and returns
        ``b""`` once it is set (an upload cancelled half-way must not read on).

        :raises SourceChanged: if the file shrank while it was read.
        """

    @abstractmethod
    def unchanged(self) -> bool:
        """Whether the file, and whatever its path names now, are as they were when opened
        (same device, inode, size and times)."""

    @abstractmethod
    def close(self) -> None:
        """Let the file go."""

    def __enter__(self) -> DiskReading:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class DiskSource(ABC):  # noqa: B024 - a marker: the engine tells its two kinds apart
    """Where a job's tier-0 disk comes from: a :class:`FileSource` the engine uploads, or a
    :class:`CopySource` the storage copies from server-side."""


class FileSource(DiskSource):
    """A disk file on this machine, uploaded page by page."""

    @abstractmethod
    async def open(self) -> DiskReading:
        """The file, open and scanned for its data (converted again first if the converted copy
        was deleted after an earlier upload: :attr:`converted_again` then says so).

        :raises SourceUnusable: if it is gone, unreadable, not a regular file, or changed since
            the job was submitted.
        """

    @property
    @abstractmethod
    def converted_again(self) -> bool:
        """Whether :meth:`open` had to convert the user's file again."""

    @abstractmethod
    def converted_copy(self) -> str | None:
        """The path of the converted copy :meth:`open` read, if it is one this tool made in its
        work folder (and may delete once uploaded); ``None`` for the user's own file."""

    @abstractmethod
    def delete_converted_copy(self) -> bool:
        """Delete :meth:`converted_copy`; whether there was one to delete."""


class CopySource(DiskSource):
    """A managed disk, which storage copies from through a read-access URL."""

    @abstractmethod
    async def grant_read(self, seconds: int) -> SecretUrl:
        """A URL that reads the disk for ``seconds``.

        :raises NotFound: if the disk does not exist.
        """

    @abstractmethod
    async def revoke(self) -> None:
        """Revoke the disk's access URLs; revoking when none was granted is not an error."""


DiskSources = Callable[[Job], DiskSource]  # the tier-0 source of a job


class GalleryService(ABC):
    """Azure Compute Gallery (``Microsoft.Compute/galleries``): galleries, image definitions and
    image versions, whose creation and replication are long-running (issue 11).

    Every method is safe to call again after a crash: creating what exists with the same
    properties is a no-op, with other (immutable) properties a :class:`Conflict`.
    """

    @abstractmethod
    async def ensure_gallery(self, gallery: GalleryRef, region: str) -> None:
        """Create the gallery (and its resource group) if it does not exist."""

    @abstractmethod
    async def ensure_definition(self, spec: DefinitionSpec) -> None:
        """Create the image definition if it does not exist.

        :raises Conflict: if it exists with other immutable properties (naming them; Azure
            cannot change them: the fix is another definition name).
        :raises NotFound: if the gallery does not exist.
        """

    @abstractmethod
    async def get_definition(self, gallery: GalleryRef, name: str) -> DefinitionSpec:
        """:raises NotFound: if the gallery or the definition does not exist."""

    @abstractmethod
    async def begin_create_version(self, spec: VersionSpec) -> None:
        """Start creating the version (returns once the platform accepted it).

        Creating it again from the same source is a no-op.

        :raises Conflict: if the version exists from another source.
        :raises NotFound: if the gallery or the definition does not exist.
        :raises OperationFailed: if the platform refuses the source (a blob it cannot read,
            in another subscription or region than the rules allow) or a target region.
        """

    @abstractmethod
    async def get_version(self, gallery: GalleryRef, definition: str, name: str) -> ImageVersion:
        """The version with its replication status per target region.

        :raises NotFound: if it does not exist.
        """

    @abstractmethod
    async def list_versions(self, gallery: GalleryRef, definition: str) -> list[ImageVersion]:
        """Every version of the definition (with their replication status), in no order."""

    @abstractmethod
    async def update_version(
        self,
        gallery: GalleryRef,
        definition: str,
        name: str,
        *,
        target_regions: tuple[TargetRegion, ...] | None = None,
        exclude_from_latest: bool | None = None,
        end_of_life: str | None = None,
    ) -> None:
        """Change what may change (a PATCH): the target regions (replicating the new ones and
        retrying failed ones), exclude-from-latest, end-of-life.

        :raises NotFound: if the version does not exist.
        """

    @abstractmethod
    async def delete_version(self, gallery: GalleryRef, definition: str, name: str) -> bool:
        """Delete the version; False if it did not exist."""

    @abstractmethod
    async def share(
        self, gallery: GalleryRef, subscriptions: list[str], tenants: list[str]
    ) -> None:
        """Direct shared gallery: add the subscriptions and tenants to the gallery's sharing
        profile (those already there stay).

        :raises NotFound: if the gallery does not exist.
        """

    @abstractmethod
    async def get_sharing(self, gallery: GalleryRef) -> GallerySharing:
        """The gallery's sharing profile: who it is shared to directly.

        :raises NotFound: if the gallery does not exist.
        """

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


class Clock(ABC):
    """Time, so the engine can run in real or virtual time."""

    @abstractmethod
    def now(self) -> float:
        """Seconds since the epoch."""

    @abstractmethod
    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds``."""


class SystemClock(Clock):
    """Wall-clock time and :func:`asyncio.sleep`."""

    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        import asyncio  # not with the ports: a command that only reads jobs runs no event loop

        await asyncio.sleep(seconds)


def looks_until(waited: float, every: float) -> int:
    """How many looks, one every ``every`` seconds from the start of a wait, until the first
    that sees what happened ``waited`` seconds in (at least one; one when ``every`` is 0).

    For the hooks that wake a caller instead of letting it poll (``wake_on_write``,
    ``wait_for_ranges``, ``wait_for_image``): their caller wakes at the look polling would have
    made, so an event-driven simulation keeps polling's timings, and the looks spared can be
    counted as the calls they would have been.
    """
    if every <= 0:
        return 1
    return max(1, math.ceil(waited / every - 1e-9))


@dataclass
class Backend:
    """The ports, opened together for one config."""

    blobs: BlobStore
    images: ImageService
    state: StateStore
    clock: Clock
    provisioner: Provisioner
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)  # credentials...
    gallery: GalleryService | None = None  # None: this backend publishes no gallery versions

    async def aclose(self) -> None:
        await self.blobs.aclose()
        await self.images.aclose()
        await self.state.aclose()
        await self.provisioner.aclose()
        if self.gallery is not None:
            await self.gallery.aclose()
        for close in self.closers:
            await close()
