"""Managed images in a SQLite file, created by a long-running operation that outlives the process.

An image is inserted as ``Creating`` with the time it becomes ready. Whoever reads it after that
time, in any process, settles it to ``Succeeded`` or ``Failed`` by looking at its source blob, the
way Azure would have. Several processes may share the file: WAL mode, a busy timeout, immediate
transactions.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

from ..._domain import BlobRef, OsType, SecretUrl
from ..._domain.names import parse_disk_id
from ..._domain.regions import check_image_place, region_name
from ..._exceptions import Conflict, NotFound
from ...abc import BlobStore, Clock, CopyStatus, Image, ImageService, ImageSpec, ProvisioningState
from .sqlite_file import SqliteFile

__all__ = ["DiskAccess", "LocalImageService", "local_disk_url", "parse_local_url"]

# What an injected image failure says (``[local] fail_images_in``); tests replace it to plant text,
# such as a SAS, in the error the way a real platform's message might carry it.
INJECTED_IMAGE_FAILURE = (
    "injected image creation failure in subscription '{subscription}' region '{region}'"
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS resource_groups (
    subscription TEXT NOT NULL COLLATE NOCASE,
    name TEXT NOT NULL COLLATE NOCASE,
    region TEXT NOT NULL,
    PRIMARY KEY (subscription, name)
);
CREATE TABLE IF NOT EXISTS images (
    subscription TEXT NOT NULL COLLATE NOCASE,
    resource_group TEXT NOT NULL COLLATE NOCASE,
    name TEXT NOT NULL COLLATE NOCASE,
    region TEXT NOT NULL,
    source_account TEXT NOT NULL,
    source_container TEXT NOT NULL,
    source_name TEXT NOT NULL,
    os_type TEXT NOT NULL,
    hyper_v_generation TEXT NOT NULL,
    state TEXT NOT NULL,
    error_code TEXT NOT NULL DEFAULT '',
    error_message TEXT NOT NULL DEFAULT '',
    tags TEXT NOT NULL,
    ready_at REAL NOT NULL,
    PRIMARY KEY (subscription, resource_group, name)
);
CREATE TABLE IF NOT EXISTS disks (
    subscription TEXT NOT NULL COLLATE NOCASE,
    resource_group TEXT NOT NULL COLLATE NOCASE,
    name TEXT NOT NULL COLLATE NOCASE,
    blob_account TEXT NOT NULL,
    blob_container TEXT NOT NULL,
    blob_name TEXT NOT NULL,
    size INTEGER NOT NULL,
    grants INTEGER NOT NULL DEFAULT 0,
    revokes INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (subscription, resource_group, name)
);
CREATE TABLE IF NOT EXISTS disk_grants (
    subscription TEXT NOT NULL COLLATE NOCASE,
    resource_group TEXT NOT NULL COLLATE NOCASE,
    name TEXT NOT NULL COLLATE NOCASE,
    token_sha256 TEXT NOT NULL PRIMARY KEY,
    expires_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS operations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    subscription TEXT NOT NULL COLLATE NOCASE,
    resource_group TEXT NOT NULL COLLATE NOCASE,
    name TEXT NOT NULL COLLATE NOCASE,
    started_at REAL NOT NULL
);
"""

_KEY = "subscription = ? AND resource_group = ? AND name = ?"
_UNSETTLED = (CopyStatus.PENDING, CopyStatus.FAILED, CopyStatus.ABORTED)

#: The scheme of the access URLs this service hands out and the local blob store copies from.
LOCAL_SCHEME = "local"


def local_disk_url(blob: BlobRef, token: str) -> str:
    """``local://<account>/<container>/<blob>?sig=<token>``: a local disk's access URL."""
    return f"{LOCAL_SCHEME}://{blob.account}/{quote(blob.container)}/{quote(blob.name)}?sig={token}"


def parse_local_url(url: str) -> tuple[BlobRef, str] | None:
    """The blob and the token of a ``local://`` access URL; None if it is not one."""
    parts = urlsplit(url)
    if parts.scheme != LOCAL_SCHEME or not parts.netloc:
        return None
    container, _, name = parts.path.lstrip("/").partition("/")
    token = parse_qs(parts.query).get("sig", [""])[0]
    if not container or not name or not token:
        return None
    return BlobRef(parts.netloc, unquote(container), unquote(name)), token


def token_digest(token: str) -> str:
    """What is kept of an access token: its SHA-256, never the token."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class DiskAccess:
    """What a local managed disk went through (for tests): grants, revocations, whether a grant
    is active now."""

    grants: int
    revokes: int
    granted: bool


class LocalImageService(ImageService):
    """Managed images in the SQLite file ``db_path``.

    Azure's rule that the source blob lives in a storage account of the image's subscription and
    region is enforced through ``account_locations``.

    :param db_path: the SQLite file; created with its schema if missing (a blocking call, once).
    :param clock: the time source.
    :param blobs: where source blobs are checked when an image settles.
    :param account_locations: storage account -> (subscription, region).
    :param create_seconds: how long an image stays ``Creating``.
    :param fail_in: (subscription, region) pairs where every image creation fails.
    """

    def __init__(
        self,
        db_path: Path,
        clock: Clock,
        blobs: BlobStore,
        *,
        account_locations: Mapping[str, tuple[str, str]],
        create_seconds: float = 0.0,
        fail_in: frozenset[tuple[str, str]] = frozenset(),
    ) -> None:
        self._db = SqliteFile(db_path, _SCHEMA)
        self._clock = clock
        self._blobs = blobs
        self._locations = {a: (s, region_name(r)) for a, (s, r) in account_locations.items()}
        self._create_seconds = create_seconds
        self._fail_in = {(s, region_name(r)) for s, r in fail_in}

    def creation_count(self, subscription: str, resource_group: str, name: str) -> int:
        """How many creation operations were started for the image, ever (blocking; for tests)."""
        with self._db.read() as db:
            row = db.execute(
                f"SELECT COUNT(*) FROM operations WHERE {_KEY}",
                (subscription, resource_group, name),
            ).fetchone()
        return int(row[0])

    def register_disk(self, disk_id: str, blob: BlobRef, size: int) -> None:
        """Make a managed disk known, its bytes held by the page blob ``blob`` of the local blob
        store (blocking; for tests and the demo). Registering it again replaces it.

        :raises InvalidInput: if ``disk_id`` is not a managed disk's resource id.
        :raises ValueError: if ``size`` is not a positive multiple of 512.
        """
        key = parse_disk_id(disk_id)
        if size <= 0 or size % 512:
            raise ValueError(f"disk size must be a positive multiple of 512, not {size}")
        with self._db.tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO disks VALUES (?, ?, ?, ?, ?, ?, ?, "
                f"COALESCE((SELECT grants FROM disks WHERE {_KEY}), 0), "
                f"COALESCE((SELECT revokes FROM disks WHERE {_KEY}), 0))",
                (*key, blob.account, blob.container, blob.name, size, *key, *key),
            )

    def disk_access(self, disk_id: str) -> DiskAccess:
        """Grants and revocations of the disk so far, and whether a grant is active (blocking)."""
        key = parse_disk_id(disk_id)
        now = self._clock.now()
        with self._db.read() as db:
            row = db.execute(f"SELECT grants, revokes FROM disks WHERE {_KEY}", key).fetchone()
            if row is None:
                raise NotFound(
                    f"managed disk '{key[2]}' does not exist in resource group '{key[1]}'"
                )
            active = db.execute(
                f"SELECT 1 FROM disk_grants WHERE {_KEY} AND expires_at > ?", (*key, now)
            ).fetchone()
        return DiskAccess(int(row["grants"]), int(row["revokes"]), active is not None)

    def disk_url_granted(self, url: str) -> bool:
        """Whether ``url`` is a live access URL of a registered disk (blocking)."""
        parsed = parse_local_url(url)
        return parsed is not None and self.disk_grant_live(parsed[0], token_digest(parsed[1]))

    def disk_grant_live(self, blob: BlobRef, token_sha256: str) -> bool:
        """Whether the access whose token has this digest is granted now, to the disk held in
        ``blob`` (blocking; the local blob store's ``grant_live`` hook, asked when a copy
        from an access URL starts and each time it advances: a revoked access stops it)."""
        with self._db.read() as db:
            rows = db.execute(
                "SELECT d.blob_account, d.blob_container, d.blob_name "
                "FROM disk_grants g JOIN disks d ON g.subscription = d.subscription "
                "AND g.resource_group = d.resource_group AND g.name = d.name "
                "WHERE g.token_sha256 = ? AND g.expires_at > ?",
                (token_sha256, self._clock.now()),
            ).fetchall()
        # The token is looked up by its digest, so comparing it takes no secret-dependent time.
        return any(BlobRef(r[0], r[1], r[2]) == blob for r in rows)

    # -- the port ---------------------------------------------------------------------------------

    async def disk_size(self, disk_id: str) -> int:
        key = parse_disk_id(disk_id)
        row = await asyncio.to_thread(self._disk_row, key)
        return int(row["size"])

    async def grant_disk_read(self, disk_id: str, seconds: int) -> SecretUrl:
        key = parse_disk_id(disk_id)
        if seconds <= 0:
            raise ValueError(
                f"access must be granted for a positive number of seconds, not {seconds}"
            )
        token = secrets.token_urlsafe(24)
        blob = await asyncio.to_thread(self._grant, key, token, self._clock.now() + seconds)
        return SecretUrl(local_disk_url(blob, token))

    async def revoke_disk_read(self, disk_id: str) -> None:
        key = parse_disk_id(disk_id)
        await asyncio.to_thread(self._revoke, key)

    async def ensure_resource_group(self, subscription: str, name: str, region: str) -> None:
        await asyncio.to_thread(self._ensure_rg, subscription, name, region)

    async def begin_create_image(self, spec: ImageSpec) -> None:
        self._check_location(spec)
        await asyncio.to_thread(self._begin, spec)

    async def get_image(self, subscription: str, resource_group: str, name: str) -> Image:
        key = (subscription, resource_group, name)
        row = await asyncio.to_thread(self._row, key)
        if row is None:
            raise NotFound(f"image '{name}' does not exist in resource group '{resource_group}'")
        creating = row["state"] == ProvisioningState.CREATING.value
        if creating and self._clock.now() >= row["ready_at"]:
            code, message = await self._outcome(row)
            await asyncio.to_thread(self._settle, key, row["ready_at"], code, message)
            return await self.get_image(*key)
        return _image(row)

    async def delete_image(self, subscription: str, resource_group: str, name: str) -> bool:
        return await asyncio.to_thread(self._delete, (subscription, resource_group, name))

    async def list_images(self, subscription: str, resource_group: str) -> list[Image]:
        names = await asyncio.to_thread(self._names, subscription, resource_group)
        images = []
        for name in names:  # through get_image, so images due to settle are settled
            try:
                images.append(await self.get_image(subscription, resource_group, name))
            except NotFound:
                continue  # deleted meanwhile
        return images

    # -- blocking implementations -----------------------------------------------------------------

    def _ensure_rg(self, subscription: str, name: str, region: str) -> None:
        with self._db.tx() as db:
            db.execute(
                "INSERT OR IGNORE INTO resource_groups VALUES (?, ?, ?)",
                (subscription, name, region),
            )

    def _check_location(self, spec: ImageSpec) -> None:
        check_image_place(spec, self._locations.get(spec.source_blob.account))

    def _begin(self, spec: ImageSpec) -> None:
        key = (spec.subscription, spec.resource_group, spec.name)
        source = spec.source_blob
        with self._db.tx() as db:
            if not db.execute(
                "SELECT 1 FROM resource_groups WHERE subscription = ? AND name = ?", key[:2]
            ).fetchone():
                raise NotFound(
                    f"resource group '{spec.resource_group}' does not exist in "
                    f"subscription '{spec.subscription}'"
                )
            row = db.execute(f"SELECT * FROM images WHERE {_KEY}", key).fetchone()
            if row is not None:
                if _source(row) != source:
                    raise Conflict(
                        f"image '{spec.name}' exists with source blob '{_source(row)}', "
                        f"not '{source}'"
                    )
                if not ProvisioningState.parse(row["state"]).unusable:
                    return  # PUT of what exists: nothing to do
                # A PUT onto a failed or canceled image runs the creation again, as on Azure.
            now = self._clock.now()
            db.execute(
                "INSERT OR REPLACE INTO images VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, '', '', ?, ?)",
                (
                    *key,
                    spec.region,
                    source.account,
                    source.container,
                    source.name,
                    spec.os_type.value,
                    spec.hyper_v_generation,
                    ProvisioningState.CREATING.value,
                    json.dumps(spec.tags),
                    now + self._create_seconds,
                ),
            )
            db.execute(
                "INSERT INTO operations (subscription, resource_group, name, started_at) "
                "VALUES (?, ?, ?, ?)",
                (*key, now),
            )

    async def _outcome(self, row: sqlite3.Row) -> tuple[str, str]:
        """The error code and message the creation ends with; ``("", "")`` for success."""
        if (row["subscription"], region_name(row["region"])) in self._fail_in:
            return "InjectedFailure", INJECTED_IMAGE_FAILURE.format(
                subscription=row["subscription"], region=row["region"]
            )
        source = _source(row)
        try:
            props = await self._blobs.get_properties(source)
        except NotFound:
            return "InvalidSourceBlob", f"source blob '{source}' does not exist"
        if props.copy_status in _UNSETTLED:
            return "InvalidSourceBlob", (
                f"source blob '{source}' is incomplete: the copy into it "
                f"is {props.copy_status.value}"
            )
        return "", ""

    def _settle(self, key: tuple[str, str, str], ready_at: float, code: str, message: str) -> None:
        state = ProvisioningState.FAILED if code else ProvisioningState.SUCCEEDED
        with self._db.tx() as db:
            # Only the creation we looked at: another process may have settled or restarted it.
            db.execute(
                f"UPDATE images SET state = ?, error_code = ?, error_message = ? "
                f"WHERE {_KEY} AND state = ? AND ready_at = ?",
                (state.value, code, message, *key, ProvisioningState.CREATING.value, ready_at),
            )

    def _disk_row(self, key: tuple[str, str, str]) -> sqlite3.Row:
        with self._db.read() as db:
            row: sqlite3.Row | None = db.execute(
                f"SELECT * FROM disks WHERE {_KEY}", key
            ).fetchone()
        if row is None:
            raise NotFound(f"managed disk '{key[2]}' does not exist in resource group '{key[1]}'")
        return row

    def _grant(self, key: tuple[str, str, str], token: str, expires_at: float) -> BlobRef:
        with self._db.tx() as db:
            row = db.execute(f"SELECT * FROM disks WHERE {_KEY}", key).fetchone()
            if row is None:
                raise NotFound(
                    f"managed disk '{key[2]}' does not exist in resource group '{key[1]}'"
                )
            db.execute(f"UPDATE disks SET grants = grants + 1 WHERE {_KEY}", key)
            db.execute(
                "INSERT INTO disk_grants VALUES (?, ?, ?, ?, ?)",
                (*key, token_digest(token), expires_at),
            )
        return BlobRef(row["blob_account"], row["blob_container"], row["blob_name"])

    def _revoke(self, key: tuple[str, str, str]) -> None:
        # Like ARM's endGetAccess: every URL of the disk stops working. A disk that does not exist
        # has no URL to revoke, which the port does not count as an error.
        with self._db.tx() as db:
            db.execute(f"UPDATE disks SET revokes = revokes + 1 WHERE {_KEY}", key)
            db.execute(f"DELETE FROM disk_grants WHERE {_KEY}", key)

    def _row(self, key: tuple[str, str, str]) -> sqlite3.Row | None:
        with self._db.read() as db:
            row: sqlite3.Row | None = db.execute(
                f"SELECT * FROM images WHERE {_KEY}", key
            ).fetchone()
        return row

    def set_state(
        self, subscription: str, resource_group: str, name: str, state: ProvisioningState
    ) -> None:
        """Put an existing image in ``state``, as Azure does on its own (someone updates,
        deletes or cancels it): for tests of how callers cope with each state."""
        with self._db.tx() as db:
            changed = db.execute(
                f"UPDATE images SET state = ? WHERE {_KEY}",
                (state.value, subscription, resource_group, name),
            ).rowcount
        if not changed:
            raise NotFound(f"image '{name}' does not exist in resource group '{resource_group}'")

    def _delete(self, key: tuple[str, str, str]) -> bool:
        with self._db.tx() as db:
            return db.execute(f"DELETE FROM images WHERE {_KEY}", key).rowcount > 0

    def _names(self, subscription: str, resource_group: str) -> list[str]:
        with self._db.read() as db:
            rows = db.execute(
                "SELECT name FROM images WHERE subscription = ? AND resource_group = ? "
                "ORDER BY name",
                (subscription, resource_group),
            ).fetchall()
        return [str(r[0]) for r in rows]


def _source(row: sqlite3.Row) -> BlobRef:
    return BlobRef(row["source_account"], row["source_container"], row["source_name"])


def _image(row: sqlite3.Row) -> Image:
    return Image(
        subscription=row["subscription"],
        resource_group=row["resource_group"],
        name=row["name"],
        region=row["region"],
        source_blob=_source(row),
        os_type=OsType(row["os_type"]),
        provisioning_state=ProvisioningState.parse(row["state"]),
        error_code=row["error_code"],
        error_message=row["error_message"],
        tags=json.loads(row["tags"]),
        hyper_v_generation=row["hyper_v_generation"],
    )
