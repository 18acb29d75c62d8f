"""One SQLite file of the local backend that several processes share (WAL, a busy timeout,
immediate write transactions), made with its schema on first use rather than on opening, so
that a command which never touches it leaves no file behind.

Each thread keeps its one connection open (issue 13: opening one per call was a fifth of the
local backend's CPU per target); a connection is only ever used by the thread that opened it.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

__all__ = ["SqliteFile"]


class SqliteFile:
    """:param schema: the script that creates its tables (``CREATE ... IF NOT EXISTS``)."""

    def __init__(self, path: str | Path, schema: str) -> None:
        self.path = Path(path)
        self._schema = schema
        self._schema_ready = False
        self._schema_lock = threading.Lock()
        self._kept = threading.local()  # .db: this thread's open connection

    def _make_schema(self) -> None:
        with self._schema_lock:
            if self._schema_ready:
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with closing(sqlite3.connect(self.path, timeout=30.0, isolation_level=None)) as db:
                db.execute("PRAGMA journal_mode=WAL")  # persistent in the file; readers never block
                db.executescript(self._schema)
            self._schema_ready = True

    def connect(self) -> sqlite3.Connection:
        """A connection (rows as ``sqlite3.Row``); the file and its tables are made first."""
        if not self._schema_ready:
            self._make_schema()
        # timeout is SQLite's busy timeout: other processes hold the write lock only briefly.
        db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        db.row_factory = sqlite3.Row
        return db

    def _thread_connection(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._kept, "db", None)
        if db is None:
            db = self._kept.db = self.connect()
        return db

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """This thread's connection, for reads (each statement its own snapshot, autocommit)."""
        yield self._thread_connection()

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction, locked at once so that read-then-write cannot interleave."""
        db = self._thread_connection()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
