"""The embedded backend: blobs in a folder, images and state in SQLite. No cloud at all."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from ..._files import check_folder
from ..._state_store import StateStore
from .state import SqliteStateStore

if TYPE_CHECKING:
    from ..._config import Config
    from ...abc import Backend

__all__ = ["open_backend", "open_state_store"]

MIB = 1024 * 1024
T = TypeVar("T")


def open_backend(config: Config) -> Backend:
    """Open the local backend under the config's ``local.root`` folder.

    Nothing is created on opening: the folder and its files appear with the first write, so a
    command that only reads, or is refused, leaves no trace.

    :raises InvalidInput: if ``local.root`` is, or lies under, something that is not a folder.
    """
    # The other ports (and their values in abc) load here, not with the package: reading jobs
    # needs the state store only.
    from ..._config import account_locations
    from ...abc import Backend, SystemClock
    from .blobs import LocalBlobStore
    from .gallery import LocalGalleryService
    from .images import LocalImageService
    from .provisioner import LocalProvisioner

    root = config.local_root()
    state = open_state_store(root)
    clock = SystemClock()
    options = config.local
    blobs = LocalBlobStore(
        root / "blobs",
        clock,
        copy_bandwidth=options.copy_bandwidth_mib_s * MIB,
        fail_copies_to_accounts=frozenset(options.fail_copies_to_accounts),
    )
    images = LocalImageService(
        root / "images.db",
        clock,
        blobs,
        account_locations=account_locations(config),
        create_seconds=options.image_create_seconds,
        fail_in=frozenset(_pair(item) for item in options.fail_images_in),
    )
    # A local disk's access URL opens a copy only while the image service says it is granted.
    blobs.set_grant_check(images.disk_grant_live)
    gallery = LocalGalleryService(
        root / "gallery.db",
        clock,
        blobs,
        account_locations=account_locations(config),
        replication_seconds=options.gallery_replication_seconds,
        fail_regions=frozenset(options.fail_gallery_regions),
    )
    return Backend(
        blobs=blobs,
        images=images,
        state=state,
        clock=clock,
        provisioner=LocalProvisioner(root),
        gallery=gallery,
    )


def open_state_store(root: Path, *, in_worker_threads: bool = True) -> StateStore:
    """Open the state store of the local backend whose folder is ``root``.

    :param in_worker_threads: see :class:`SqliteStateStore`.
    :raises InvalidInput: if ``root`` is, or lies under, something that is not a folder.
    """
    check_folder(root, "[local] root")
    return _StateMadeOnFirstWrite(root / "state.db", in_worker_threads=in_worker_threads)


class _StateMadeOnFirstWrite(SqliteStateStore):
    """The SQLite state store, whose file (and folder) the first write makes, not the opening.

    Until the file exists, an empty database in memory answers every read as a new file would
    (no job, no switch), and refuses writes (``query_only``); the first write opens the file,
    creating it, and runs again there. A file another process makes meanwhile is picked up.
    """

    def __init__(self, path: Path, *, in_worker_threads: bool = True) -> None:
        super().__init__(Path(":memory:"), in_worker_threads=in_worker_threads)
        self._db.execute("PRAGMA query_only = ON")
        self._path = path
        self._in_memory = True

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._in_memory and self._path.exists():
            await self._open_file()
        try:
            return await super()._run(fn)
        except sqlite3.OperationalError as exc:
            if not self._in_memory or exc.sqlite_errorcode != sqlite3.SQLITE_READONLY:
                raise
        await self._open_file()  # the first write
        return await super()._run(fn)

    async def _open_file(self) -> None:
        real = await self._call(lambda: SqliteStateStore(self._path))  # only its connection

        def swap() -> None:
            with self._lock:
                if not self._in_memory:  # another write got there first
                    real._db.close()
                    return
                self._db.close()
                self._db, self._in_memory = real._db, False

        await self._call(swap)


def _pair(item: str) -> tuple[str, str]:
    subscription, _, region = item.rpartition("/")
    return subscription, region
