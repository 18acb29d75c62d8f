"""One SQLite file of the local backend that several processes share (WAL, a busy timeout,
immediate write transactions), made with its schema on first use rather than on opening, so
that a command which never touches it leaves no file behind."""

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

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction, locked at once so that read-then-write cannot interleave."""
        with closing(self.connect()) as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
