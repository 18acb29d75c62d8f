"""The state store on SQLite (WAL): jobs, their items, logs and target switches.

Several processes may open the same file at once (a worker and the CLI, or a restarted worker);
every item write is a compare-and-set on its version, so none overwrites another's progress.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from ..._domain import (
    Job,
    LogFilter,
    LogRecord,
    SourceRow,
    TargetRow,
)
from ..._domain.publications import PublicationRow
from ..._exceptions import Conflict, NotFound, PreconditionFailed
from ..._redact import redact, redact_publication, redact_record
from ..._state_store import StateStore
from ..codec import (
    JOB_FIELDS,
    LOG_FIELDS,
    PUBLICATION_FIELDS,
    SOURCE_FIELDS,
    TARGET_FIELDS,
    job_fields,
    job_from,
    log_fields,
    log_from,
    publication_fields,
    publication_from,
    source_fields,
    source_from,
    target_fields,
    target_from,
)

__all__ = ["SqliteStateStore"]

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, image_name TEXT NOT NULL, os_type TEXT NOT NULL,
    source_path TEXT NOT NULL, size_bytes INTEGER NOT NULL, created_at REAL NOT NULL,
    description TEXT NOT NULL, state TEXT NOT NULL, finished_at REAL,
    source_disk TEXT NOT NULL DEFAULT '', input_path TEXT NOT NULL DEFAULT '',
    revision INTEGER NOT NULL DEFAULT 0, hyper_v_generation TEXT NOT NULL DEFAULT 'V1',
    publish TEXT NOT NULL DEFAULT 'images', gallery_version TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS sources (
    job_id TEXT NOT NULL, source_id TEXT NOT NULL, kind TEXT NOT NULL,
    account TEXT NOT NULL, container TEXT NOT NULL, blob TEXT NOT NULL,
    state TEXT NOT NULL, parent_id TEXT, progress_bytes INTEGER NOT NULL, deleted INTEGER NOT NULL,
    error TEXT NOT NULL, lease_owner TEXT, lease_until REAL NOT NULL, version INTEGER NOT NULL,
    content_md5 TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (job_id, source_id)
);
CREATE TABLE IF NOT EXISTS targets (
    job_id TEXT NOT NULL, target TEXT NOT NULL, subscription TEXT NOT NULL, region TEXT NOT NULL,
    account TEXT NOT NULL, container TEXT NOT NULL, blob TEXT NOT NULL,
    resource_group TEXT NOT NULL, image_name TEXT NOT NULL, state TEXT NOT NULL, source_id TEXT,
    copy_id TEXT NOT NULL, failed_phase TEXT, error TEXT NOT NULL, attempts INTEGER NOT NULL, blob_deleted INTEGER NOT NULL,
    lease_owner TEXT, lease_until REAL NOT NULL, version INTEGER NOT NULL, updated_at REAL NOT NULL,
    PRIMARY KEY (job_id, target)
);
CREATE TABLE IF NOT EXISTS publications (
    job_id TEXT NOT NULL, key TEXT NOT NULL, gallery_subscription TEXT NOT NULL,
    gallery_resource_group TEXT NOT NULL, gallery TEXT NOT NULL, definition TEXT NOT NULL,
    version_name TEXT NOT NULL, region TEXT NOT NULL, regions TEXT NOT NULL, state TEXT NOT NULL,
    source_id TEXT NOT NULL, error TEXT NOT NULL, attempts INTEGER NOT NULL, lease_owner TEXT,
    lease_until REAL NOT NULL, version INTEGER NOT NULL, updated_at REAL NOT NULL,
    PRIMARY KEY (job_id, key)
);
CREATE TABLE IF NOT EXISTS logs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, job_id TEXT NOT NULL, ts REAL NOT NULL,
    level TEXT NOT NULL, step TEXT NOT NULL, target TEXT NOT NULL, message TEXT NOT NULL,
    extra TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS logs_by_job ON logs (job_id, seq);
CREATE TABLE IF NOT EXISTS target_switches (name TEXT PRIMARY KEY, enabled INTEGER NOT NULL);
"""


JOB_COLUMNS = ", ".join(JOB_FIELDS)
SOURCE_COLUMNS = ", ".join(SOURCE_FIELDS)
TARGET_COLUMNS = ", ".join(TARGET_FIELDS)
PUBLICATION_COLUMNS = ", ".join(PUBLICATION_FIELDS)
LOG_COLUMNS = ", ".join(LOG_FIELDS)


def _update_sql(table: str, names: Sequence[str], key: str) -> str:
    """A compare-and-set of one item: every field, where its key and version are as read."""
    sets = ", ".join(f"{name} = ?" for name in names)
    return f"UPDATE {table} SET {sets} WHERE job_id = ? AND {key} = ? AND version = ?"


UPDATE_SOURCE = _update_sql("sources", SOURCE_FIELDS, "source_id")
UPDATE_TARGET = _update_sql("targets", TARGET_FIELDS, "target")
UPDATE_PUBLICATION = _update_sql("publications", PUBLICATION_FIELDS, "key")


class SqliteStateStore(StateStore):
    """:param path: the database file; created with its schema if missing.
    :param in_worker_threads: run each database call in a worker thread, so that an event
        loop runs on meanwhile (the default); False runs it in the caller's thread, so that
        every method's coroutine ends without suspending: a process that only reads jobs then
        needs no event loop, nor asyncio (see :func:`imagedist._no_loop.finish`).
    """

    def __init__(self, path: Path, *, in_worker_threads: bool = True) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(
            path, timeout=30.0, check_same_thread=False, isolation_level=None
        )
        self._lock = threading.Lock()
        self._in_worker_threads = in_worker_threads
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        _add_missing_columns(self._db)

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def locked() -> T:
            with self._lock:
                return fn(self._db)

        return await self._call(locked)

    async def _call(self, fn: Callable[[], T]) -> T:
        """``fn()``, in a worker thread unless the store works in the caller's thread."""
        if not self._in_worker_threads:
            return fn()
        import asyncio  # here, not with the module: reading jobs in this thread never needs it

        return await asyncio.to_thread(fn)

    async def aclose(self) -> None:
        await self._run(lambda db: db.close())

    # jobs

    async def create_job(
        self,
        job: Job,
        sources: Sequence[SourceRow],
        targets: Sequence[TargetRow],
        publications: Sequence[PublicationRow] = (),
    ) -> None:
        def create(db: sqlite3.Connection) -> None:
            db.execute("BEGIN IMMEDIATE")
            try:
                if db.execute("SELECT 1 FROM jobs WHERE id = ?", (job.id,)).fetchone():
                    raise Conflict(f"Job {job.id!r} already exists.")
                db.execute(
                    f"INSERT INTO jobs ({JOB_COLUMNS}) VALUES ({_marks(len(JOB_FIELDS))})",
                    _values(job_fields(job), JOB_FIELDS),
                )
                for source in sources:
                    db.execute(
                        f"INSERT INTO sources ({SOURCE_COLUMNS}) VALUES ({_marks(len(SOURCE_FIELDS))})",
                        _values(source_fields(source), SOURCE_FIELDS),
                    )
                for target in targets:
                    db.execute(
                        f"INSERT INTO targets ({TARGET_COLUMNS}) VALUES ({_marks(len(TARGET_FIELDS))})",
                        _values(target_fields(target), TARGET_FIELDS),
                    )
                for publication in publications:
                    db.execute(
                        f"INSERT INTO publications ({PUBLICATION_COLUMNS})"
                        f" VALUES ({_marks(len(PUBLICATION_FIELDS))})",
                        _values(publication_fields(publication), PUBLICATION_FIELDS),
                    )
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

        await self._run(create)

    async def get_job(self, job_id: str) -> Job:
        row = await self._run(
            lambda db: db.execute(
                f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,)
            ).fetchone()
        )
        if row is None:
            raise NotFound(f"Job {job_id!r} does not exist; `imagedist jobs` lists the jobs.")
        return job_from(dict(zip(JOB_FIELDS, row, strict=True)))

    async def list_jobs(self) -> list[Job]:
        rows = await self._run(
            lambda db: db.execute(
                f"SELECT {JOB_COLUMNS} FROM jobs ORDER BY created_at DESC, id DESC"
            ).fetchall()
        )
        return [job_from(dict(zip(JOB_FIELDS, row, strict=True))) for row in rows]

    async def update_job(self, job: Job, *, expected_revision: int | None = None) -> None:
        def update(db: sqlite3.Connection) -> int:
            cursor = db.execute(
                "UPDATE jobs SET state = ?, finished_at = ?, revision = ?"
                " WHERE id = ? AND (? IS NULL OR revision = ?)",
                (
                    job.state.value,
                    job.finished_at,
                    job.revision,
                    job.id,
                    expected_revision,
                    expected_revision,
                ),
            )
            return cursor.rowcount

        if await self._run(update) == 0:
            await self.get_job(job.id)  # NotFound if there is no such job
            raise PreconditionFailed(f"Job {job.id!r} was changed by a retry meanwhile.")

    # items

    async def list_sources(self, job_id: str) -> list[SourceRow]:
        rows = await self._run(
            lambda db: db.execute(
                f"SELECT {SOURCE_COLUMNS} FROM sources WHERE job_id = ? ORDER BY source_id",
                (job_id,),
            ).fetchall()
        )
        return [source_from(dict(zip(SOURCE_FIELDS, row, strict=True))) for row in rows]

    async def list_targets(self, job_id: str) -> list[TargetRow]:
        rows = await self._run(
            lambda db: db.execute(
                f"SELECT {TARGET_COLUMNS} FROM targets WHERE job_id = ? ORDER BY target",
                (job_id,),
            ).fetchall()
        )
        return [target_from(dict(zip(TARGET_FIELDS, row, strict=True))) for row in rows]

    async def list_publications(self, job_id: str) -> list[PublicationRow]:
        rows = await self._run(
            lambda db: db.execute(
                f"SELECT {PUBLICATION_COLUMNS} FROM publications WHERE job_id = ? ORDER BY key",
                (job_id,),
            ).fetchall()
        )
        return [publication_from(dict(zip(PUBLICATION_FIELDS, row, strict=True))) for row in rows]

    async def put_publication(self, row: PublicationRow) -> PublicationRow:
        new = redact_publication(dataclasses.replace(row, version=row.version + 1))
        values = _values(publication_fields(new), PUBLICATION_FIELDS)
        what = f"gallery version {row.key!r} of job {row.job_id!r}"
        await self._compare_and_set(
            UPDATE_PUBLICATION, (*values, row.job_id, row.key, row.version), what
        )
        return new

    async def put_source(self, row: SourceRow) -> SourceRow:
        new = dataclasses.replace(row, version=row.version + 1, error=redact(row.error))
        values = _values(source_fields(new), SOURCE_FIELDS)
        what = f"source {row.source_id!r} of job {row.job_id!r}"
        await self._compare_and_set(
            UPDATE_SOURCE, (*values, row.job_id, row.source_id, row.version), what
        )
        return new

    async def put_target(self, row: TargetRow) -> TargetRow:
        new = dataclasses.replace(row, version=row.version + 1, error=redact(row.error))
        values = _values(target_fields(new), TARGET_FIELDS)
        what = f"target {row.target!r} of job {row.job_id!r}"
        await self._compare_and_set(
            UPDATE_TARGET, (*values, row.job_id, row.target, row.version), what
        )
        return new

    async def _compare_and_set(self, sql: str, params: tuple[Any, ...], what: str) -> None:
        rowcount = await self._run(lambda db: db.execute(sql, params).rowcount)
        if rowcount == 0:
            raise PreconditionFailed(f"The {what} was changed by another worker.")

    # logs and switches

    async def append_log(self, record: LogRecord) -> None:
        values = _values(log_fields(redact_record(record)), LOG_FIELDS)
        await self._run(
            lambda db: db.execute(
                f"INSERT INTO logs ({LOG_COLUMNS}) VALUES ({_marks(len(LOG_FIELDS))})", values
            )
        )

    async def list_logs(self, job_id: str, where: LogFilter | None = None) -> list[LogRecord]:
        where = where or LogFilter()
        rows = await self._run(
            lambda db: db.execute(
                f"SELECT {LOG_COLUMNS} FROM logs WHERE job_id = ? ORDER BY seq", (job_id,)
            ).fetchall()
        )
        records = [log_from(dict(zip(LOG_FIELDS, row, strict=True))) for row in rows]
        return [record for record in records if where.matches(record)]

    async def set_target_switch(self, names: Sequence[str], enabled: bool) -> None:
        def write(db: sqlite3.Connection) -> None:
            db.executemany(
                "INSERT INTO target_switches VALUES (?, ?)"
                " ON CONFLICT (name) DO UPDATE SET enabled = excluded.enabled",
                [(name, int(enabled)) for name in names],
            )

        await self._run(write)

    async def target_switches(self) -> dict[str, bool]:
        rows = await self._run(
            lambda db: db.execute("SELECT name, enabled FROM target_switches").fetchall()
        )
        return {name: bool(enabled) for name, enabled in rows}


# Columns added after a release, with their definitions: a state file made by an older version
# gains them when it is opened (CREATE TABLE IF NOT EXISTS leaves an existing table as it is).
ADDED_COLUMNS = {
    "jobs": {
        "input_path": "TEXT NOT NULL DEFAULT ''",
        "revision": "INTEGER NOT NULL DEFAULT 0",
        "hyper_v_generation": "TEXT NOT NULL DEFAULT 'V1'",
        "publish": "TEXT NOT NULL DEFAULT 'images'",
        "gallery_version": "TEXT NOT NULL DEFAULT ''",
    },
    "sources": {"content_md5": "TEXT NOT NULL DEFAULT ''"},
}


def _add_missing_columns(db: sqlite3.Connection) -> None:
    for table, columns in ADDED_COLUMNS.items():
        present = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        for name, definition in columns.items():
            if name not in present:
                db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {definition}")


def _marks(count: int) -> str:
    return ",".join("?" * count)


def _values(fields: Mapping[str, Any], names: Sequence[str]) -> tuple[Any, ...]:
    return tuple(fields[name] for name in names)
