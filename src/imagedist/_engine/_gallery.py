"""One gallery version's pipeline (issue 11): make the version from its source, follow its
replication region by region, re-replicate the regions a retry puts back.

Like a target's, every transition is persisted before the effect it announces and every effect is
checked against the platform on resume: a worker killed at any instant neither loses the version
nor makes a second one (a version is created under its name, once; creating it again from the same
source is a no-op), and a region that failed is replicated again without remaking the version.
"""

from __future__ import annotations

import dataclasses
import datetime

from .._config_gallery import GalleryVersionPolicy
from .._domain import Job
from .._domain.events import EventKind, LogLevel, Step
from .._domain.gallery import (
    DefinitionSpec,
    ImageVersion,
    PublicationRow,
    PublicationState,
    RegionReplication,
    RegionStatus,
    ReplicationState,
    TargetRegion,
    VersionSource,
    VersionSpec,
)
from .._exceptions import Conflict, NotFound, OperationFailed
from ..abc import GalleryService
from ._context import EngineContext
from ._targets import JOB_TAG

__all__ = ["COMPLETED", "PENDING", "PublicationDriver", "needs_upload"]

PENDING, REPLICATING, COMPLETED, FAILED = "pending", "replicating", "completed", "failed"


def needs_upload(row: PublicationRow) -> bool:
    """Whether the row still needs the upload: a central version not made yet (or whose
    creation failed and may be retried)."""
    if row.source_id != "tier0":
        return False
    if row.state in (PublicationState.PENDING, PublicationState.CREATING):
        return True
    made = any(r.state != PENDING for r in row.regions.values())
    return row.state is PublicationState.FAILED and not made


class PublicationDriver:
    """Moves one leased publication row forward, one persisted step at a time."""

    def __init__(self, ctx: EngineContext, job: Job, definition: DefinitionSpec) -> None:
        if ctx.backend.gallery is None:
            raise OperationFailed("this backend publishes no gallery versions")
        self.ctx = ctx
        self.job = job
        self.definition = definition
        self.gallery: GalleryService = ctx.backend.gallery

    async def put(self, row: PublicationRow) -> PublicationRow:
        """Persist the row, renewing our lease; raises PreconditionFailed if we lost it."""
        now = self.ctx.backend.clock.now()
        new = dataclasses.replace(row, lease_until=self.ctx.lease_until(), updated_at=now)
        return await self.ctx.backend.state.put_publication(new)

    async def keep(self, row: PublicationRow) -> PublicationRow:
        """Nothing changed: renew the lease only once half of it is gone."""
        if row.lease_until - self.ctx.backend.clock.now() > self.ctx.settings.lease_seconds / 2:
            return row
        return await self.put(row)

    async def fail(self, row: PublicationRow, reason: str) -> PublicationRow:
        await self.ctx.log(self.job.id, LogLevel.ERROR, Step.GALLERY, reason, _label(row))
        self.ctx.emit(self.job.id, EventKind.FAILED, target=_label(row), detail=reason)
        return await self.put(dataclasses.replace(row, state=PublicationState.FAILED, error=reason))

    # creation

    async def begin(self, row: PublicationRow, source: VersionSource) -> PublicationRow:
        """PENDING -> CREATING: make sure the gallery and the definition exist, record the
        intent, then create the version."""
        try:
            await self.gallery.ensure_gallery(row.gallery, row.region)
            await self.gallery.ensure_definition(self._definition(row))
        except Conflict as exc:
            return await self.fail(row, f"the image definition cannot take this version: {exc}")
        intent = dataclasses.replace(
            row,
            state=PublicationState.CREATING,
            attempts=row.attempts + 1,
            error="",
            regions={name: RegionStatus() for name in row.regions},
        )
        row = await self.put(intent)
        return await self._create(row, source)

    async def _create(self, row: PublicationRow, source: VersionSource) -> PublicationRow:
        try:
            await self.gallery.begin_create_version(self._spec(row, source))
        except (Conflict, OperationFailed, NotFound) as exc:
            return await self.fail(row, f"version {row.version_name} refused: {exc}")
        message = f"creating version {row.version_name} from {source}"
        await self.ctx.log(self.job.id, LogLevel.INFO, Step.GALLERY, message, _label(row))
        self.ctx.emit(self.job.id, EventKind.IMAGE_STARTED, target=_label(row), detail=message)
        return row

    async def poll(self, row: PublicationRow, source: VersionSource | None) -> PublicationRow:
        """CREATING or REPLICATING: one look at the version, and the one next effect it calls
        for (a creation that never started, regions put back by a retry)."""
        try:
            version = await self.gallery.get_version(row.gallery, row.definition, row.version_name)
        except NotFound:
            return await self._missing(row, source)
        if version.tags.get(JOB_TAG) != self.job.id:
            return await self.fail(
                row,
                f"version {row.version_name} of {row.definition} exists and was made by job"
                f" {version.tags.get(JOB_TAG, '(not imagedist)')!r}; submit with another"
                " --version",
            )
        state = version.provisioning_state.lower()
        if state == "failed" and not _made(version, row.region):
            # Never made (its source refused): a retry makes it again from the source.
            return await self.fail(
                row,
                f"version {row.version_name} failed: {version.error_code}: {version.error_message}",
            )
        if state in ("creating", "deleting") and not version.replication:
            return await self.keep(row)
        if any(r.state == PENDING for r in row.regions.values()) and state != "creating":
            return await self._replicate_again(row)
        return await self._follow(row, version)

    async def _missing(self, row: PublicationRow, source: VersionSource | None) -> PublicationRow:
        if row.state is PublicationState.CREATING and source is not None:
            # Killed between recording the intent and the creation: create it now.
            return await self._create(await self.put(row), source)
        return await self.fail(
            row,
            f"version {row.version_name} of {row.definition} is gone (deleted outside"
            " imagedist?); `imagedist retry` the job to make it again",
        )

    async def _follow(self, row: PublicationRow, version: ImageVersion) -> PublicationRow:
        regions = dict(row.regions)
        for name in row.regions:
            seen = version.replication_of(name)
            regions[name] = _status_of(seen)
        states = {r.state for r in regions.values()}
        if states <= {COMPLETED}:
            done = dataclasses.replace(row, regions=regions, state=PublicationState.DONE)
            await self.ctx.log(
                self.job.id,
                LogLevel.INFO,
                Step.GALLERY,
                f"version {row.version_name} replicated to {len(regions)} regions",
                _label(row),
            )
            self.ctx.emit(self.job.id, EventKind.IMAGE_SUCCEEDED, target=_label(row))
            return await self.put(done)
        if FAILED in states and REPLICATING not in states and PENDING not in states:
            failed = sorted(name for name, r in regions.items() if r.state == FAILED)
            details = "; ".join(f"{name}: {regions[name].error}" for name in failed)
            row = dataclasses.replace(row, regions=regions)
            return await self.fail(
                row,
                f"replication of version {row.version_name} failed in {', '.join(failed)}"
                f" ({details}); `imagedist retry --failed-only` replicates those regions again",
            )
        moved = dataclasses.replace(row, regions=regions, state=PublicationState.REPLICATING)
        if moved.regions != row.regions or moved.state is not row.state:
            return await self.put(moved)
        return await self.keep(row)

    async def _replicate_again(self, row: PublicationRow) -> PublicationRow:
        """Regions a retry put back (or the fleet gained): ask for every region again, then
        follow them. Asking twice after a crash asks for what is already asked: harmless."""
        row = await self.put(row)  # a compare-and-set: the row is still ours
        await self.gallery.update_version(
            row.gallery,
            row.definition,
            row.version_name,
            target_regions=self._target_regions(row),
        )
        regions = {
            name: RegionStatus(REPLICATING) if status.state == PENDING else status
            for name, status in row.regions.items()
        }
        message = f"replicating version {row.version_name} again to {_pending(row)}"
        await self.ctx.log(self.job.id, LogLevel.INFO, Step.GALLERY, message, _label(row))
        return await self.put(
            dataclasses.replace(row, regions=regions, state=PublicationState.REPLICATING)
        )

    # what goes to the platform

    def _definition(self, row: PublicationRow) -> DefinitionSpec:
        return dataclasses.replace(self.definition, gallery=row.gallery, region=row.region)

    def _spec(self, row: PublicationRow, source: VersionSource) -> VersionSpec:
        policy = self._policy()
        return VersionSpec(
            gallery=row.gallery,
            definition=row.definition,
            name=row.version_name,
            region=row.region,
            source=source,
            target_regions=self._target_regions(row),
            exclude_from_latest=policy.exclude_from_latest,
            end_of_life=_end_of_life(self.job.created_at, policy.end_of_life_days),
            replication_mode=policy.replication_mode,
            tags={**policy.tags, JOB_TAG: self.job.id},
        )

    def _policy(self) -> GalleryVersionPolicy:
        gallery = self.ctx.config.gallery
        return gallery.versions if gallery is not None else GalleryVersionPolicy()

    def _target_regions(self, row: PublicationRow) -> tuple[TargetRegion, ...]:
        policy = self._policy()
        return tuple(
            TargetRegion(
                name, replicas=policy.replicas, storage_account_type=policy.storage_account_type
            )
            for name in sorted(row.regions)
        )


def _made(version: ImageVersion, region: str) -> bool:
    """Whether the version was made: it reached its own region (where Azure puts it first), so
    a failure is of replication elsewhere, which is retried region by region."""
    own = version.replication_of(region)
    return own is not None and own.state is ReplicationState.COMPLETED


def _end_of_life(created_at: float, days: int) -> str:
    """The version's end-of-life date, ``days`` after the job was submitted; "" for none."""
    if not days:
        return ""
    created = datetime.datetime.fromtimestamp(created_at, datetime.UTC)
    return (created + datetime.timedelta(days=days)).date().isoformat()


def _status_of(seen: RegionReplication | None) -> RegionStatus:
    """A region's replication as the platform reports it (not reported yet: just asked for)."""
    if seen is None:
        return RegionStatus(REPLICATING, 0)
    if seen.state is ReplicationState.COMPLETED:
        return RegionStatus(COMPLETED, 100)
    if seen.state is ReplicationState.FAILED:
        return RegionStatus(FAILED, seen.progress, seen.details or "replication failed")
    return RegionStatus(REPLICATING, seen.progress)


def _pending(row: PublicationRow) -> str:
    return ", ".join(sorted(name for name, r in row.regions.items() if r.state == PENDING))


def _label(row: PublicationRow) -> str:
    """How the row is named in the log and the events: ``gallery/<key>``."""
    return f"gallery/{row.key}"
