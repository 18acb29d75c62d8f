"""Azure Compute Gallery in a SQLite file: galleries, definitions, versions and their per-region
replication, long-running work that outlives the process.

A version is inserted ``Creating`` with each target region replicating from then on for
``replication_seconds``. Whoever reads it next, in any process, checks its source once (the
blob in the local blob store, or the source version) and ends the replications that are due, the
way Azure would have. The rules Azure enforces are in :mod:`..gallery_rules`.

The file is made by the first write, never by a read: a command that only looks creates nothing.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, TypeVar

from ..._domain import BlobRef, OsType
from ..._domain.gallery import (
    DefinitionSpec,
    GalleryRef,
    GallerySharing,
    ImageVersion,
    ReplicationState,
    TargetRegion,
    VersionSource,
    VersionSpec,
)
from ..._domain.regions import region_name
from ..._exceptions import Conflict, NotFound
from ...abc import BlobStore, Clock, CopyStatus, GalleryService
from ..gallery_rules import (
    FOOTER,
    RegionRecord,
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
from .sqlite_file import SqliteFile

__all__ = ["LocalGalleryService"]

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS galleries (
    subscription TEXT NOT NULL COLLATE NOCASE,
    resource_group TEXT NOT NULL COLLATE NOCASE,
    name TEXT NOT NULL COLLATE NOCASE,
    region TEXT NOT NULL,
    shared_subscriptions TEXT NOT NULL DEFAULT '[]',
    shared_tenants TEXT NOT NULL DEFAULT '[]',
    PRIMARY KEY (subscription, resource_group, name)
);
CREATE TABLE IF NOT EXISTS definitions (
    subscription TEXT NOT NULL COLLATE NOCASE,
    resource_group TEXT NOT NULL COLLATE NOCASE,
    gallery TEXT NOT NULL COLLATE NOCASE,
    name TEXT NOT NULL COLLATE NOCASE,
    spec TEXT NOT NULL,
    PRIMARY KEY (subscription, resource_group, gallery, name)
);
CREATE TABLE IF NOT EXISTS versions (
    subscription TEXT NOT NULL COLLATE NOCASE,
    resource_group TEXT NOT NULL COLLATE NOCASE,
    gallery TEXT NOT NULL COLLATE NOCASE,
    definition TEXT NOT NULL COLLATE NOCASE,
    name TEXT NOT NULL COLLATE NOCASE,
    region TEXT NOT NULL,
    source_account TEXT NOT NULL DEFAULT '',
    source_container TEXT NOT NULL DEFAULT '',
    source_name TEXT NOT NULL DEFAULT '',
    source_version TEXT NOT NULL DEFAULT '',
    target_regions TEXT NOT NULL,
    exclude_from_latest INTEGER NOT NULL,
    end_of_life TEXT NOT NULL,
    replication_mode TEXT NOT NULL,
    tags TEXT NOT NULL,
    created_at REAL NOT NULL,
    operation INTEGER NOT NULL,
    source_checked INTEGER NOT NULL DEFAULT 0,
    error_code TEXT NOT NULL DEFAULT '',
    error_message TEXT NOT NULL DEFAULT '',
    updating INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (subscription, resource_group, gallery, definition, name)
);
CREATE TABLE IF NOT EXISTS replication (
    subscription TEXT NOT NULL COLLATE NOCASE,
    resource_group TEXT NOT NULL COLLATE NOCASE,
    gallery TEXT NOT NULL COLLATE NOCASE,
    definition TEXT NOT NULL COLLATE NOCASE,
    version TEXT NOT NULL COLLATE NOCASE,
    region TEXT NOT NULL,
    state TEXT NOT NULL,
    started_at REAL NOT NULL,
    ready_at REAL NOT NULL,
    fails INTEGER NOT NULL,
    details TEXT NOT NULL,
    PRIMARY KEY (subscription, resource_group, gallery, definition, version, region)
);
CREATE TABLE IF NOT EXISTS version_operations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    subscription TEXT NOT NULL COLLATE NOCASE,
    resource_group TEXT NOT NULL COLLATE NOCASE,
    gallery TEXT NOT NULL COLLATE NOCASE,
    definition TEXT NOT NULL COLLATE NOCASE,
    version TEXT NOT NULL COLLATE NOCASE,
    started_at REAL NOT NULL
);
"""

_GALLERY = "subscription = ? AND resource_group = ? AND name = ?"
_DEFINITION = "subscription = ? AND resource_group = ? AND gallery = ? AND name = ?"
_IN_DEFINITION = "subscription = ? AND resource_group = ? AND gallery = ? AND definition = ?"
_VERSION = "subscription = ? AND resource_group = ? AND gallery = ? AND definition = ? AND name = ?"
_REGIONS = (
    "subscription = ? AND resource_group = ? AND gallery = ? AND definition = ? AND version = ?"
)

VersionKey = tuple[str, str, str, str, str]


class LocalGalleryService(GalleryService):
    """Galleries in the SQLite file ``db_path`` (made by the first write).

    :param db_path: the SQLite file.
    :param clock: the time source.
    :param blobs: where source blobs are read when a creation checks its source.
    :param account_locations: storage account -> (subscription, region), for Azure's placement
        rules of a VHD source.
    :param replication_seconds: how long each region's replication takes.
    :param fail_regions: regions whose replications fail (decided when each starts).
    """

    def __init__(
        self,
        db_path: Path,
        clock: Clock,
        blobs: BlobStore,
        *,
        account_locations: Mapping[str, tuple[str, str]],
        replication_seconds: float = 0.0,
        fail_regions: frozenset[str] = frozenset(),
    ) -> None:
        self._db = SqliteFile(db_path, _SCHEMA)
        self._clock = clock
        self._blobs = blobs
        self._locations = {a: (s, region_name(r)) for a, (s, r) in account_locations.items()}
        self._seconds = replication_seconds
        self._fail_regions = {region_name(r) for r in fail_regions}

    def creation_count(self, gallery: GalleryRef, definition: str, name: str) -> int:
        """How many creations were started for the version, ever (blocking; for tests)."""
        if not self._db.path.exists():
            return 0
        with self._db.read() as db:
            row = db.execute(
                "SELECT COUNT(*) FROM version_operations WHERE " + _REGIONS,
                _key(gallery, definition, name),
            ).fetchone()
        return int(row[0])

    # -- the port ---------------------------------------------------------------------------------

    async def ensure_gallery(self, gallery: GalleryRef, region: str) -> None:
        await asyncio.to_thread(self._ensure_gallery, gallery, region)

    async def ensure_definition(self, spec: DefinitionSpec) -> None:
        await asyncio.to_thread(self._ensure_definition, spec)

    async def get_definition(self, gallery: GalleryRef, name: str) -> DefinitionSpec:
        row = await self._read(
            lambda db: db.execute(
                f"SELECT spec FROM definitions WHERE {_DEFINITION}", (*_gallery_key(gallery), name)
            ).fetchone()
        )
        if row is None:
            raise NotFound(f"image definition '{name}' does not exist in gallery '{gallery}'")
        return _definition(json.loads(row[0]))

    async def begin_create_version(self, spec: VersionSpec) -> None:
        await asyncio.to_thread(self._begin, spec)

    async def get_version(self, gallery: GalleryRef, definition: str, name: str) -> ImageVersion:
        key = _key(gallery, definition, name)
        record = await self._read(lambda db: _load(db, key))
        if record is None:
            raise NotFound(
                f"image version '{name}' does not exist in definition '{definition}'"
                f" of gallery '{gallery}'"
            )
        problem: str | None = None
        if not record.source_checked:
            problem = await self._source_problem(record)
        now = self._clock.now()
        settled = await asyncio.to_thread(self._settle, key, record.operation, problem, now)
        if settled is None:  # deleted meanwhile
            raise NotFound(f"image version '{name}' does not exist in gallery '{gallery}'")
        return to_version(settled, now)

    async def list_versions(self, gallery: GalleryRef, definition: str) -> list[ImageVersion]:
        rows = await self._read(
            lambda db: db.execute(
                f"SELECT name FROM versions WHERE {_IN_DEFINITION}",
                (*_gallery_key(gallery), definition),
            ).fetchall()
        )
        versions = []
        for row in rows or []:  # through get_version, so what is due is settled
            try:
                versions.append(await self.get_version(gallery, definition, row[0]))
            except NotFound:
                continue  # deleted meanwhile
        return versions

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
        await self.get_version(gallery, definition, name)  # settles it first; NotFound
        await asyncio.to_thread(
            self._update,
            _key(gallery, definition, name),
            target_regions,
            exclude_from_latest,
            end_of_life,
        )

    async def delete_version(self, gallery: GalleryRef, definition: str, name: str) -> bool:
        if not self._db.path.exists():
            return False
        return await asyncio.to_thread(self._delete, _key(gallery, definition, name))

    async def share(
        self, gallery: GalleryRef, subscriptions: list[str], tenants: list[str]
    ) -> None:
        await asyncio.to_thread(self._share, gallery, subscriptions, tenants)

    async def get_sharing(self, gallery: GalleryRef) -> GallerySharing:
        row = await self._read(
            lambda db: db.execute(
                f"SELECT shared_subscriptions, shared_tenants FROM galleries WHERE {_GALLERY}",
                _gallery_key(gallery),
            ).fetchone()
        )
        if row is None:
            raise NotFound(f"gallery '{gallery}' does not exist")
        return GallerySharing(tuple(json.loads(row[0])), tuple(json.loads(row[1])))

    # -- the source check (reads the blob store, or another version) ------------------------------

    async def _source_problem(self, record: VersionRecord) -> str | None:
        source, region = record.spec.source, record.spec.region
        if source.blob is None:
            where = parse_version_id(source.version_id)
            found: ImageVersion | None = None
            if where is not None:
                key = _key(*where)
                origin = await self._read(lambda db: _load(db, key))
                # One whose own source is unread is still Creating: reading it here could go
                # round a loop of versions made from each other.
                if origin is not None and not origin.source_checked:
                    found = to_version(origin, self._clock.now())
                elif origin is not None:
                    found = await self.get_version(*where)
            return source_version_problem(found, source.version_id, region)
        blob = source.blob
        try:
            props = await self._blobs.get_properties(blob)
        except NotFound:
            return blob_problem(blob, None, CopyStatus.NONE, b"")
        footer = b""
        if props.size >= FOOTER:
            footer = await self._blobs.read(blob, props.size - FOOTER, FOOTER)
        return blob_problem(blob, props.size, props.copy_status, footer)

    # -- blocking implementations -----------------------------------------------------------------

    def _duration(self, region: str) -> float:
        return self._seconds

    def _fails(self, region: str) -> bool:
        return region_name(region) in self._fail_regions

    def _ensure_gallery(self, gallery: GalleryRef, region: str) -> None:
        with self._db.tx() as db:
            row = db.execute(
                f"SELECT region FROM galleries WHERE {_GALLERY}", _gallery_key(gallery)
            ).fetchone()
            if row is None:
                db.execute(
                    "INSERT INTO galleries (subscription, resource_group, name, region) "
                    "VALUES (?, ?, ?, ?)",
                    (*_gallery_key(gallery), region_name(region)),
                )
            elif row[0] != region_name(region):
                raise Conflict(
                    f"gallery '{gallery}' exists in region '{row[0]}', not '{region}': a"
                    " gallery cannot move; give its region, or another gallery name"
                )

    def _ensure_definition(self, spec: DefinitionSpec) -> None:
        key = (*_gallery_key(spec.gallery), spec.name)
        with self._db.tx() as db:
            _gallery_region(db, spec.gallery)
            row = db.execute(f"SELECT spec FROM definitions WHERE {_DEFINITION}", key).fetchone()
            if row is not None:
                existing = _definition(json.loads(row[0]))
                differences = existing.differences(spec)
                if differences:
                    raise Conflict(
                        f"image definition '{spec.name}' of gallery '{spec.gallery}' exists with"
                        f" other immutable properties ({'; '.join(differences)}); Azure cannot"
                        " change them: use another definition name"
                    )
            db.execute(
                "INSERT OR REPLACE INTO definitions VALUES (?, ?, ?, ?, ?)",
                (*key, json.dumps(_definition_json(spec))),
            )

    def _begin(self, spec: VersionSpec) -> None:
        key = _key(spec.gallery, spec.definition, spec.name)
        with self._db.tx() as db:
            gallery_region = _gallery_region(db, spec.gallery)
            if not db.execute(f"SELECT 1 FROM definitions WHERE {_DEFINITION}", key[:4]).fetchone():
                raise NotFound(
                    f"image definition '{spec.definition}' does not exist in gallery"
                    f" '{spec.gallery}'"
                )
            blob = spec.source.blob
            place = self._locations.get(blob.account) if blob is not None else None
            check_version_request(spec, gallery_region, place)
            existing = _load(db, key)
            if existing is not None:
                if not same_source(existing.spec.source, spec.source):
                    raise Conflict(
                        f"image version '{spec.name}' exists from source"
                        f" '{existing.spec.source}', not '{spec.source}'"
                    )
                if not existing.error_code:
                    return  # a PUT of what exists: its replication goes on
                # A PUT onto a version whose creation failed makes it again, as on Azure.
            now = self._clock.now()
            operation = db.execute(
                "INSERT INTO version_operations "
                "(subscription, resource_group, gallery, definition, version, started_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (*key, now),
            ).lastrowid
            record = new_record(spec, now, int(operation or 0), self._duration, self._fails)
            _save(db, key, record)

    def _settle(
        self, key: VersionKey, operation: int, problem: str | None, now: float
    ) -> VersionRecord | None:
        with self._db.tx() as db:
            record = _load(db, key)
            if record is None:
                return None
            changed = False
            # Only the creation whose source we read: it may have been made again meanwhile.
            if not record.source_checked and record.operation == operation:
                source_checked(record, problem)
                changed = True
            changed = settle(record, now) or changed
            if changed:
                _save(db, key, record)
            return record

    def _update(
        self,
        key: VersionKey,
        targets: tuple[TargetRegion, ...] | None,
        exclude_from_latest: bool | None,
        end_of_life: str | None,
    ) -> None:
        with self._db.tx() as db:
            record = _load(db, key)
            if record is None:
                raise NotFound(f"image version '{key[4]}' does not exist in gallery")
            if targets is not None:
                check_targets(record.spec.name, record.spec.region, targets)
                retarget(record, targets, self._clock.now(), self._duration, self._fails)
            spec = record.spec
            if exclude_from_latest is not None:
                spec = replace(spec, exclude_from_latest=exclude_from_latest)
            if end_of_life is not None:
                spec = replace(spec, end_of_life=end_of_life)
            record.spec = spec
            _save(db, key, record)

    def _delete(self, key: VersionKey) -> bool:
        with self._db.tx() as db:
            db.execute(f"DELETE FROM replication WHERE {_REGIONS}", key)
            return db.execute(f"DELETE FROM versions WHERE {_VERSION}", key).rowcount > 0

    def _share(self, gallery: GalleryRef, subscriptions: list[str], tenants: list[str]) -> None:
        with self._db.tx() as db:
            _gallery_region(db, gallery)
            row = db.execute(
                f"SELECT shared_subscriptions, shared_tenants FROM galleries WHERE {_GALLERY}",
                _gallery_key(gallery),
            ).fetchone()
            subs = sorted({*json.loads(row[0]), *(s.lower() for s in subscriptions)})
            tens = sorted({*json.loads(row[1]), *(t.lower() for t in tenants)})
            db.execute(
                "UPDATE galleries SET shared_subscriptions = ?, shared_tenants = ? "
                f"WHERE {_GALLERY}",
                (json.dumps(subs), json.dumps(tens), *_gallery_key(gallery)),
            )

    # -- the file ---------------------------------------------------------------------------------

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T | None:
        """``fn`` on the file, or None if there is no file yet (a read never makes it)."""

        def read() -> T | None:
            if not self._db.path.exists():
                return None
            with self._db.read() as db:
                return fn(db)

        return await asyncio.to_thread(read)


# -- rows <-> records -------------------------------------------------------------------------------


def _gallery_key(gallery: GalleryRef) -> tuple[str, str, str]:
    return gallery.subscription, gallery.resource_group, gallery.name


def _key(gallery: GalleryRef, definition: str, name: str) -> VersionKey:
    return (*_gallery_key(gallery), definition, name)


def _gallery_region(db: sqlite3.Connection, gallery: GalleryRef) -> str:
    row = db.execute(
        f"SELECT region FROM galleries WHERE {_GALLERY}", _gallery_key(gallery)
    ).fetchone()
    if row is None:
        raise NotFound(f"gallery '{gallery}' does not exist")
    return str(row[0])


def _definition_json(spec: DefinitionSpec) -> dict[str, Any]:
    data = asdict(spec)
    data["os_type"] = spec.os_type.value
    return data


def _definition(data: dict[str, Any]) -> DefinitionSpec:
    data["gallery"] = GalleryRef(**data["gallery"])
    data["os_type"] = OsType(data["os_type"])
    return DefinitionSpec(**data)


def _load(db: sqlite3.Connection, key: VersionKey) -> VersionRecord | None:
    row = db.execute(f"SELECT * FROM versions WHERE {_VERSION}", key).fetchone()
    if row is None:
        return None
    blob = (
        BlobRef(row["source_account"], row["source_container"], row["source_name"])
        if row["source_account"]
        else None
    )
    spec = VersionSpec(
        gallery=GalleryRef(row["subscription"], row["resource_group"], row["gallery"]),
        definition=row["definition"],
        name=row["name"],
        region=row["region"],
        source=VersionSource(blob=blob, version_id=row["source_version"]),
        target_regions=tuple(TargetRegion(**t) for t in json.loads(row["target_regions"])),
        exclude_from_latest=bool(row["exclude_from_latest"]),
        end_of_life=row["end_of_life"],
        replication_mode=row["replication_mode"],
        tags=json.loads(row["tags"]),
    )
    regions = {
        r["region"]: RegionRecord(
            r["region"],
            ReplicationState(r["state"]),
            r["started_at"],
            r["ready_at"],
            bool(r["fails"]),
            r["details"],
        )
        for r in db.execute(f"SELECT * FROM replication WHERE {_REGIONS}", key).fetchall()
    }
    return VersionRecord(
        spec=spec,
        created_at=row["created_at"],
        operation=row["operation"],
        source_checked=bool(row["source_checked"]),
        error_code=row["error_code"],
        error_message=row["error_message"],
        updating=bool(row["updating"]),
        regions=regions,
    )


def _save(db: sqlite3.Connection, key: VersionKey, record: VersionRecord) -> None:
    spec = record.spec
    blob = spec.source.blob
    db.execute(
        "INSERT OR REPLACE INTO versions VALUES "
        "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            *key,
            spec.region,
            blob.account if blob else "",
            blob.container if blob else "",
            blob.name if blob else "",
            spec.source.version_id,
            json.dumps([asdict(t) for t in spec.target_regions]),
            int(spec.exclude_from_latest),
            spec.end_of_life,
            spec.replication_mode,
            json.dumps(spec.tags),
            record.created_at,
            record.operation,
            int(record.source_checked),
            record.error_code,
            record.error_message,
            int(record.updating),
        ),
    )
    db.execute(f"DELETE FROM replication WHERE {_REGIONS}", key)
    db.executemany(
        "INSERT INTO replication VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                *key,
                r.region,
                r.state.value,
                r.started_at,
                r.ready_at,
                int(r.fails),
                r.details,
            )
            for r in record.regions.values()
        ],
    )
