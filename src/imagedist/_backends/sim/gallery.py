"""Azure Compute Gallery in the simulator: versions replicate to each region in virtual time.

The same life as the local adapter's (:mod:`..gallery_rules`), kept in memory: a version's
source is read the first time it is looked at, each region's replication takes a duration drawn
from the model (minutes to more than a day), and fails where the sim's faults say.
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass, field, replace

from ..._domain.gallery import (
    DefinitionSpec,
    GalleryRef,
    GallerySharing,
    ImageVersion,
    TargetRegion,
    VersionSpec,
)
from ..._domain.regions import region_name
from ..._exceptions import Conflict, NotFound
from ...abc import CopyStatus, GalleryService
from ..gallery_rules import (
    FOOTER,
    VersionRecord,
    blob_problem,
    check_targets,
    check_version_request,
    new_record,
    parse_version_id,
    retarget,
    same_source,
    settle,
    source_checked,
    source_version_problem,
    to_version,
)
from .arm import ArmThrottle
from .storage import SimStorage

__all__ = ["SimGalleryService"]

VersionKey = tuple[str, str, str, str, str]


@dataclass
class _Gallery:
    region: str
    subscriptions: set[str] = field(default_factory=set)
    tenants: set[str] = field(default_factory=set)
    definitions: dict[str, DefinitionSpec] = field(default_factory=dict)


@dataclass
class _World:
    """Everything the simulated galleries hold, shared by every adapter on it."""

    galleries: dict[tuple[str, str, str], _Gallery] = field(default_factory=dict)
    versions: dict[VersionKey, VersionRecord] = field(default_factory=dict)
    creations: dict[VersionKey, int] = field(default_factory=dict)


class SimGalleryService(GalleryService):
    """Galleries in memory over the blobs of ``storage``; every call is a throttled ARM call.

    Replication durations come from ``storage.model``, failures from ``storage.faults`` (read
    when each replication starts, so :func:`heal` stops them for the next).
    """

    def __init__(self, storage: SimStorage, arm: ArmThrottle, *, seed: int = 0) -> None:
        self._storage = storage
        self._arm = arm
        self._rng = random.Random(f"{seed}:gallery")
        self._world = _World()

    def reopen(self) -> SimGalleryService:
        """Another adapter on the same simulated platform (as another process would build it)."""
        other = SimGalleryService(self._storage, self._arm)
        other._rng, other._world = self._rng, self._world
        return other

    def creation_count(self, gallery: GalleryRef, definition: str, name: str) -> int:
        """How many creations were started for the version (for exactly-once checks)."""
        return self._world.creations.get(_key(gallery, definition, name), 0)

    # -- the port ---------------------------------------------------------------------------------

    async def ensure_gallery(self, gallery: GalleryRef, region: str) -> None:
        self._arm.call(gallery.subscription, write=True, what="ensure_gallery")
        found = self._world.galleries.get(_gallery_key(gallery))
        if found is None:
            self._world.galleries[_gallery_key(gallery)] = _Gallery(region_name(region))
        elif found.region != region_name(region):
            raise Conflict(
                f"gallery '{gallery}' exists in region '{found.region}', not '{region}': a"
                " gallery cannot move; give its region, or another gallery name"
            )

    async def ensure_definition(self, spec: DefinitionSpec) -> None:
        self._arm.call(spec.gallery.subscription, write=True, what="ensure_definition")
        gallery = self._gallery(spec.gallery)
        existing = gallery.definitions.get(spec.name.lower())
        if existing is not None:
            differences = existing.differences(spec)
            if differences:
                raise Conflict(
                    f"image definition '{spec.name}' of gallery '{spec.gallery}' exists with"
                    f" other immutable properties ({'; '.join(differences)}); Azure cannot"
                    " change them: use another definition name"
                )
        gallery.definitions[spec.name.lower()] = replace(spec, tags=dict(spec.tags))

    async def get_definition(self, gallery: GalleryRef, name: str) -> DefinitionSpec:
        self._arm.call(gallery.subscription, write=False, what="get_definition")
        found = self._gallery(gallery).definitions.get(name.lower())
        if found is None:
            raise NotFound(f"image definition '{name}' does not exist in gallery '{gallery}'")
        return replace(found, tags=dict(found.tags))

    async def begin_create_version(self, spec: VersionSpec) -> None:
        self._arm.call(spec.gallery.subscription, write=True, what="begin_create_version")
        gallery = self._gallery(spec.gallery)
        if spec.definition.lower() not in gallery.definitions:
            raise NotFound(
                f"image definition '{spec.definition}' does not exist in gallery '{spec.gallery}'"
            )
        blob = spec.source.blob
        place = self._storage.locations.get(blob.account) if blob is not None else None
        check_version_request(spec, gallery.region, place)
        key = _key(spec.gallery, spec.definition, spec.name)
        existing = self._world.versions.get(key)
        if existing is not None:
            if not same_source(existing.spec.source, spec.source):
                raise Conflict(
                    f"image version '{spec.name}' exists from source '{existing.spec.source}',"
                    f" not '{spec.source}'"
                )
            if not existing.error_code:
                return  # a PUT of what exists: its replication goes on
        operation = self._world.creations.get(key, 0) + 1
        self._world.creations[key] = operation
        self._world.versions[key] = new_record(
            copy.deepcopy(spec), self._storage.now(), operation, self._duration, self._fails
        )

    async def get_version(self, gallery: GalleryRef, definition: str, name: str) -> ImageVersion:
        self._arm.call(gallery.subscription, write=False, what="get_version")
        return self._settled(self._record(gallery, definition, name))

    async def list_versions(self, gallery: GalleryRef, definition: str) -> list[ImageVersion]:
        self._arm.call(gallery.subscription, write=False, what="list_versions")
        prefix = (*_gallery_key(gallery), definition.lower())
        return [
            self._settled(record)
            for key, record in list(self._world.versions.items())
            if key[:4] == prefix
        ]

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
        self._arm.call(gallery.subscription, write=True, what="update_version")
        record = self._record(gallery, definition, name)
        self._settled(record)
        if target_regions is not None:
            check_targets(name, record.spec.region, target_regions)
            retarget(record, target_regions, self._storage.now(), self._duration, self._fails)
        if exclude_from_latest is not None:
            record.spec = replace(record.spec, exclude_from_latest=exclude_from_latest)
        if end_of_life is not None:
            record.spec = replace(record.spec, end_of_life=end_of_life)

    async def delete_version(self, gallery: GalleryRef, definition: str, name: str) -> bool:
        self._arm.call(gallery.subscription, write=True, what="delete_version")
        return self._world.versions.pop(_key(gallery, definition, name), None) is not None

    async def share(
        self, gallery: GalleryRef, subscriptions: list[str], tenants: list[str]
    ) -> None:
        self._arm.call(gallery.subscription, write=True, what="share_gallery")
        found = self._gallery(gallery)
        found.subscriptions.update(s.lower() for s in subscriptions)
        found.tenants.update(t.lower() for t in tenants)

    async def get_sharing(self, gallery: GalleryRef) -> GallerySharing:
        self._arm.call(gallery.subscription, write=False, what="get_sharing")
        found = self._gallery(gallery)
        return GallerySharing(tuple(sorted(found.subscriptions)), tuple(sorted(found.tenants)))

    # -- the platform -----------------------------------------------------------------------------

    def _gallery(self, gallery: GalleryRef) -> _Gallery:
        found = self._world.galleries.get(_gallery_key(gallery))
        if found is None:
            raise NotFound(f"gallery '{gallery}' does not exist")
        return found

    def _record(self, gallery: GalleryRef, definition: str, name: str) -> VersionRecord:
        record = self._world.versions.get(_key(gallery, definition, name))
        if record is None:
            raise NotFound(
                f"image version '{name}' does not exist in definition '{definition}'"
                f" of gallery '{gallery}'"
            )
        return record

    def _settled(self, record: VersionRecord) -> ImageVersion:
        now = self._storage.now()
        if not record.source_checked:
            source_checked(record, self._source_problem(record))
        settle(record, now)
        return to_version(record, now)

    def _source_problem(self, record: VersionRecord) -> str | None:
        source, region = record.spec.source, record.spec.region
        if source.blob is None:
            where = parse_version_id(source.version_id)
            origin = self._world.versions.get(_key(*where)) if where is not None else None
            found = None
            if origin is not None:  # one whose own source is unread is still Creating
                found = (
                    self._settled(origin)
                    if origin.source_checked
                    else to_version(origin, self._storage.now())
                )
            return source_version_problem(found, source.version_id, region)
        blob = source.blob
        try:
            props = self._storage.properties(blob)
        except NotFound:
            return blob_problem(blob, None, CopyStatus.NONE, b"")
        footer = b""
        if props.size >= FOOTER:
            footer = self._storage.read(blob, props.size - FOOTER, FOOTER)
        return blob_problem(blob, props.size, props.copy_status, footer)

    def _duration(self, region: str) -> float:
        return self._storage.model.draw_gallery_replication_seconds(self._rng)

    def _fails(self, region: str) -> bool:
        faults = self._storage.faults
        if region_name(region) in {region_name(r) for r in faults.fail_gallery_regions}:
            return True
        chance = faults.gallery_replication_failure
        return bool(chance) and self._rng.random() < chance


def _gallery_key(gallery: GalleryRef) -> tuple[str, str, str]:
    return gallery.subscription.lower(), gallery.resource_group.lower(), gallery.name.lower()


def _key(gallery: GalleryRef, definition: str, name: str) -> VersionKey:
    return (*_gallery_key(gallery), definition.lower(), name.lower())
