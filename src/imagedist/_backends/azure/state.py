"""The state store on Azure Table storage: jobs, their items, logs and target switches.

Four tables, ``<prefix>jobs``, ``<prefix>items``, ``<prefix>logs`` and ``<prefix>switches``, created
on first use (or by :meth:`AzureTableStateStore.ensure_tables`, for ``imagedist setup``):

* jobs: PartitionKey ``"job"``, RowKey the job id.
* items: PartitionKey the job id, RowKey ``"s:<source id>"`` or ``"t:<target name>"``. Every item
  write is a compare-and-set: the entity is replaced only if its ETag is the one of the version the
  caller read (``If-Match``), so of two workers writing the same version exactly one wins. Writes
  of one job that arrive together (within ``WRITE_WINDOW_SECONDS``) go in one entity-group
  transaction of at most 100; the service applies all or none, so when one entity's ETag no
  longer matches, its caller gets PreconditionFailed and the others are sent again without it.
  A worker's pass lists only the items written lately, by their Timestamp (see
  :meth:`AzureTableStateStore._list_items_changed`). Transactions are written and read by
  :mod:`.transactions` and item listings read by :mod:`.queries`, through the SDK client's
  pipeline.
* logs: PartitionKey the job id, RowKey ``<ts, zero-padded>-<sequence>-<random>``, so lexical order
  is time order and two processes never collide. Lines are buffered and written in batches (one
  entity-group transaction per job and hundred lines) at least every second, when the store is
  closed and before it lists a log: a killed process loses at most its last second of log lines,
  never a state row (item writes are never buffered).
* switches: PartitionKey ``"switch"``, RowKey the target name.

Keys are escaped (:func:`escape_key`): target names hold ``/``, which keys forbid, and ``%`` and
``'`` are legal but break point operations on Azure and Azurite alike.

The async SDK client is bound to the event loop it first ran in, and callers (the CLI, the tests)
may run several loops one after the other; so the store keeps one client per running loop and closes
it when that loop shuts down (see :meth:`AzureTableStateStore._loop_client`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import json
import logging
import math
import time
import uuid
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError
from azure.data.tables import (
    EdmType,
    EntityProperty,
    TableEntity,
    TableTransactionError,
    UpdateMode,
)
from azure.data.tables.aio import TableClient, TableServiceClient

from ..._domain import (
    Job,
    LogFilter,
    LogRecord,
    SourceRow,
    TargetRow,
)
from ..._domain.publications import PublicationRow
from ..._exceptions import Conflict, InvalidInput, NotFound, PreconditionFailed, TransientError
from ..._redact import redact, redact_publication, redact_record
from ...abc import StateStore
from ..codec import (
    Fields,
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
from . import transactions
from .errors import Override, translate_errors
from .proxies import proxy_options
from .queries import Row, datetime_of, query_rows
from .transactions import Operation
from .transport import with_transport

if TYPE_CHECKING:
    from azure.core.credentials import AzureNamedKeyCredential, AzureSasCredential
    from azure.core.credentials_async import AsyncTokenCredential

    Credential = AsyncTokenCredential | AzureNamedKeyCredential | AzureSasCredential

__all__ = ["AzureTableStateStore", "escape_key", "unescape_key"]


#: A batch (entity group transaction) holds at most 100 operations on one partition.
BATCH_SIZE = 100
#: Batches of one create_job sent at once.
BATCH_CONCURRENCY = 4
#: A string property holds at most 64 KiB of UTF-16, i.e. 32 Ki code units; stay well below.
MAX_TEXT = 16_000
#: Items kept as last read (a few KiB each), for listings to skip reading them again unchanged.
MAX_ROWS_KEPT = 50_000
MAX_EXTRA_VALUE = 2_000
TRUNCATED = " [truncated]"
#: Read-change-replace rounds of update_job before giving up on a job that keeps changing.
UPDATE_JOB_ATTEMPTS = 10
#: ETags remembered from reads and writes, to save a read before each compare-and-set.
ETAG_CACHE_SIZE = 50_000
#: Item writes of one job arriving within this many seconds go in one transaction.
WRITE_WINDOW_SECONDS = 0.05
#: Log lines wait at most this long in memory before they are written, in batches.
LOG_FLUSH_SECONDS = 1.0
#: Characters of log entities in one transaction (UTF-8 and JSON escapes stay below 4 MiB).
LOG_BATCH_CHARS = 1_000_000
#: Lines kept while the log table refuses writes; older ones beyond this are dropped (a warning).
LOG_BUFFER_LIMIT = 50_000
#: A listing of changed items reads back this far before the newest write it has seen.
CHANGE_OVERLAP_SECONDS = 10.0
#: A listing of changed items reads every item at least this often (see _list_items_changed).
FULL_LISTING_SECONDS = 300.0

logger = logging.getLogger("imagedist.state")

_JOB_PK = "job"
_SWITCH_PK = "switch"
_SOURCE_PREFIX = "s:"
_TARGET_PREFIX = "t:"
_PUBLICATION_PREFIX = "p:"

#: Characters kept as they are in keys; everything else is escaped as ``!XX`` per UTF-8 byte.
_KEY_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.:@+=,")
_KEY_ESCAPE = "!"

#: Ties between log lines of one process with the same timestamp keep their order.
_log_sequence = itertools.count()


def escape_key(text: str) -> str:
    """``text`` as a legal PartitionKey/RowKey, reversibly (:func:`unescape_key`).

    Keys forbid ``/ \\ # ?`` and control characters; ``%`` and ``'`` are allowed but break point
    operations on real Azure and on Azurite, and ``~`` broke request signing in the past. So only
    letters, digits and ``-_.:@+=,`` stay; any other byte of the UTF-8 encoding becomes ``!XX``.
    """
    return "".join(
        chr(byte) if byte in _KEY_SAFE else f"{_KEY_ESCAPE}{byte:02X}"
        for byte in text.encode("utf-8")
    )


def unescape_key(key: str) -> str:
    """The text :func:`escape_key` made ``key`` from."""
    out = bytearray()
    i = 0
    while i < len(key):
        if key[i] == _KEY_ESCAPE:
            out.append(int(key[i + 1 : i + 3], 16))
            i += 3
        else:
            out += key[i].encode("utf-8")
            i += 1
    return out.decode("utf-8")


def _truncate(text: str, limit: int = MAX_TEXT) -> str:
    return text if len(text) <= limit else text[: limit - len(TRUNCATED)] + TRUNCATED


@dataclass
class _LoopClient:
    """The SDK clients of one event loop, and the generator that closes them with the loop."""

    service: TableServiceClient
    tables: dict[str, TableClient]
    closer: AsyncGenerator[None, None]


class AzureTableStateStore(StateStore):
    """The state store on Azure Table storage (or Azurite).

    :param endpoint_or_connection_string: a connection string (Azurite, account key) or the table
        endpoint URL of the account, ``https://<account>.table.core.windows.net``, with ``credential``.
    :param credential: for an endpoint URL: a token credential (``DefaultAzureCredential``), or a
        named-key or SAS credential.
    :param table_prefix: the tables are ``<prefix>jobs``, ``<prefix>items``, ``<prefix>logs`` and
        ``<prefix>switches``; letters and digits, starting with a letter.
    :param client_kwargs: extra keywords for the SDK client (retry policy, timeouts, transport).
    :raises InvalidInput: if the prefix is not a valid table name start, the connection string is
        malformed or an endpoint URL comes without a credential.
    """

    def __init__(
        self,
        endpoint_or_connection_string: str,
        *,
        credential: Credential | None = None,
        table_prefix: str = "imagedist",
        client_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        if not (
            table_prefix.isascii()
            and table_prefix.isalnum()
            and table_prefix[:1].isalpha()
            and len(table_prefix) + len("switches") <= 63
        ):
            raise InvalidInput(
                f"Table prefix {table_prefix!r} is invalid: use letters and digits, starting with a"
                " letter, at most 55 characters."
            )
        self._tables_names = {
            kind: f"{table_prefix}{kind}" for kind in ("jobs", "items", "logs", "switches")
        }
        # azure-core's retry policy retries 408/429/500/502/503/504 and connection errors, with
        # exponential backoff and honouring Retry-After; these only tune it.
        kwargs: dict[str, Any] = {
            "retry_total": 6,
            "retry_backoff_factor": 0.8,
            "retry_backoff_max": 30,
            **(client_kwargs or {}),
        }
        target = endpoint_or_connection_string.strip()
        if target.lower().startswith(("https://", "http://")):
            if credential is None:
                raise InvalidInput(
                    "A table endpoint URL needs a credential (DefaultAzureCredential, for example)."
                )
            endpoint = target.rstrip("/")
            kwargs = {**proxy_options(endpoint), **kwargs}

            def make() -> TableServiceClient:
                return TableServiceClient(endpoint, credential=credential, **with_transport(kwargs))

        else:
            try:  # parse now, so a bad string fails early; no session is opened before first use
                parsed = TableServiceClient.from_connection_string(target, **kwargs)
            except (ValueError, KeyError, TypeError):
                # Never the string itself in the message: it holds the account key.
                raise InvalidInput(
                    "The table storage connection string is malformed (expected"
                    " 'AccountName=...;AccountKey=...;TableEndpoint=...')."
                ) from None
            kwargs = {**proxy_options(parsed.url), **kwargs}

            def make() -> TableServiceClient:
                return TableServiceClient.from_connection_string(target, **with_transport(kwargs))

        self._make_client: Callable[[], TableServiceClient] = make
        self._clients: dict[asyncio.AbstractEventLoop, _LoopClient] = {}
        self._tables_ready = False
        # (job id, row key) -> (version, etag) of the entity as last seen by this instance
        self._etags: dict[tuple[str, str], tuple[int, str]] = {}
        # Log entities not written yet, in the order they were appended, and the task that
        # writes them within LOG_FLUSH_SECONDS.
        self._log_buffer: list[dict[str, Any]] = []
        self._log_flusher: asyncio.Task[None] | None = None
        # Item writes waiting for their job's next transaction, by PartitionKey, and the tasks
        # that send them (held here: the loop keeps only weak references to tasks).
        self._writes: dict[str, list[_Write]] = {}
        self._senders: set[asyncio.Task[None]] = set()
        # (job id, item kind) -> when a listing of its changes last read every item (monotonic)
        self._full_listings: dict[tuple[str, str], float] = {}
        # The items last read, by partition and row key (see queries.query_rows).
        self._rows_read: dict[tuple[str, str], Row] = {}

    # clients, one per event loop

    async def _loop_client(self) -> _LoopClient:
        """The clients of the running loop, made on first use and closed when the loop shuts down.

        The closing is an async generator parked at its ``yield``: the loop registers it on first
        iteration, and ``asyncio.run`` (``loop.shutdown_asyncgens``) finalises it before closing,
        which closes the client's HTTP session on the loop that opened it. :meth:`aclose` closes
        the current loop's client at once.
        """
        loop = asyncio.get_running_loop()
        entry = self._clients.get(loop)
        if entry is not None:
            return entry
        for stale in [other for other in self._clients if other.is_closed()]:
            del self._clients[stale]  # a loop closed without shutting down its generators
        service = self._make_client()
        tables = {kind: service.get_table_client(name) for kind, name in self._tables_names.items()}
        closer = self._close_with_loop(loop, service)
        entry = _LoopClient(service, tables, closer)
        await anext(closer)
        self._clients[loop] = entry
        return entry

    async def _close_with_loop(
        self, loop: asyncio.AbstractEventLoop, service: TableServiceClient
    ) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            await self._flush_logs_quietly()  # before the loop's client goes
            if self._clients.get(loop) is not None and self._clients[loop].service is service:
                del self._clients[loop]
            await service.close()

    async def _table(self, kind: str) -> TableClient:
        """The table to write to, created first if need be."""
        entry = await self._loop_client()
        if not self._tables_ready:
            await self.ensure_tables()
        return entry.tables[kind]

    async def _read_table(self, kind: str) -> TableClient:
        """The table to read from: never created by a read (a status of an unknown job must
        change nothing); a missing table reads as empty (see :func:`_empty_if_missing`)."""
        entry = await self._loop_client()
        return entry.tables[kind]

    async def ensure_tables(self) -> None:
        """Create the four tables if they do not exist (``imagedist setup``; else done lazily)."""
        entry = await self._loop_client()

        async def create(name: str) -> None:
            with (
                translate_errors(f"create table {name!r}"),
                contextlib.suppress(ResourceExistsError),
            ):
                await entry.service.create_table(name)

        await asyncio.gather(*(create(name) for name in self._tables_names.values()))
        self._tables_ready = True

    async def is_ready(self) -> bool:
        entry = await self._loop_client()
        with translate_errors("list tables"):
            names = {table.name async for table in entry.service.list_tables()}
        return set(self._tables_names.values()) <= names

    async def ensure_ready(self) -> None:
        await self.ensure_tables()

    async def probe_write(self) -> None:
        # The switches table: small, and a probe's partition is no switch name's.
        switches = await self._read_table("switches")
        key = {"PartitionKey": "imagedist-check", "RowKey": uuid.uuid4().hex}
        with _empty_if_missing(), translate_errors("write a probe entity to the state tables"):
            await switches.upsert_entity(key)
            await switches.delete_entity(key["PartitionKey"], key["RowKey"])

    async def aclose(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # pragma: no cover - aclose is always awaited
            return
        entry = self._clients.get(loop)
        if entry is not None:
            await entry.closer.aclose()  # writes buffered log lines, closes the client

    # jobs

    async def create_job(
        self,
        job: Job,
        sources: Sequence[SourceRow],
        targets: Sequence[TargetRow],
        publications: Sequence[PublicationRow] = (),
    ) -> None:
        jobs = await self._table("jobs")
        conflict: Override = {409: lambda _: Conflict(f"Job {job.id!r} already exists.")}
        with contextlib.suppress(NotFound), translate_errors(f"read job {job.id!r}"):
            await jobs.get_entity(_JOB_PK, escape_key(job.id))
            raise Conflict(f"Job {job.id!r} already exists.")
        pk = escape_key(job.id)
        entities = [_source_entity(row) for row in sources]
        entities += [_target_entity(row) for row in targets]
        entities += [_publication_entity(row) for row in publications]
        # Items first, the job entity last: the job becomes visible to workers only once all its
        # items exist, so a process killed half-way leaves no half-made job behind.
        try:
            await self._insert_items(pk, entities)
            with translate_errors(f"create job {job.id!r}", conflict):
                await jobs.create_entity(_job_entity(job))
        except Exception:
            await self._roll_back_job(job.id)
            raise

    async def _insert_items(self, pk: str, entities: list[dict[str, Any]]) -> None:
        items = await self._table("items")
        limit = asyncio.Semaphore(BATCH_CONCURRENCY)

        async def submit(batch: list[dict[str, Any]]) -> None:
            # Upsert, not create: a batch the retry policy resends after a lost answer must not
            # fail on its own first attempt; the job entity already proved the id is ours.
            async with limit:
                with translate_errors(f"create the items of job {unescape_key(pk)!r}"):
                    results = await transactions.submit_transaction(
                        items, [Operation(e) for e in batch]
                    )
            for entity, meta in zip(batch, results, strict=False):
                if etag := meta.get("etag"):
                    self._remember(pk, entity["RowKey"], _version(entity), etag)

        chunks = [entities[i : i + BATCH_SIZE] for i in range(0, len(entities), BATCH_SIZE)]
        await asyncio.gather(*(submit(chunk) for chunk in chunks))

    async def _roll_back_job(self, job_id: str) -> None:
        """Best effort: remove a job whose items could not all be written, so it can be retried."""
        with contextlib.suppress(Exception):  # the original error is the one to report
            items = await self._table("items")
            pk = escape_key(job_id)
            async for entity in items.query_entities(
                "PartitionKey eq @pk", parameters={"pk": pk}, select=["PartitionKey", "RowKey"]
            ):
                await items.delete_entity(pk, entity["RowKey"])
            jobs = await self._table("jobs")
            await jobs.delete_entity(_JOB_PK, escape_key(job_id))

    async def get_job(self, job_id: str) -> Job:
        jobs = await self._read_table("jobs")
        with translate_errors(
            f"read job {job_id!r}",
            {
                404: lambda _: NotFound(
                    f"Job {job_id!r} does not exist; `imagedist jobs` lists the jobs."
                )
            },
        ):
            entity = await jobs.get_entity(_JOB_PK, escape_key(job_id))
        return job_from(_plain(entity))

    async def list_jobs(self) -> list[Job]:
        jobs = await self._read_table("jobs")
        found: list[Job] = []
        with _empty_if_missing(), translate_errors("list jobs"):
            found = [
                job_from(_plain(entity))
                async for entity in jobs.query_entities(
                    "PartitionKey eq @pk", parameters={"pk": _JOB_PK}
                )
            ]
        found.sort(key=lambda job: (job.created_at, job.id), reverse=True)
        return found

    async def update_job(self, job: Job, *, expected_revision: int | None = None) -> None:
        """Only the state, finish time and revision change, as in the SQLite store.

        Read, change, replace if unchanged (ETag): a MERGE could not remove ``finished_at``.
        """
        jobs = await self._table("jobs")
        not_found: Override = {404: lambda _: NotFound(f"Job {job.id!r} does not exist.")}
        for _attempt in range(UPDATE_JOB_ATTEMPTS):
            with translate_errors(f"update job {job.id!r}", not_found):
                entity = await jobs.get_entity(_JOB_PK, escape_key(job.id))
                stored = job_from(_plain(entity))
                if expected_revision is not None and stored.revision != expected_revision:
                    raise PreconditionFailed(f"Job {job.id!r} was changed by a retry meanwhile.")
                stored.state, stored.finished_at = job.state, job.finished_at
                stored.revision = job.revision
                try:
                    await jobs.update_entity(
                        _job_entity(stored),
                        mode=UpdateMode.REPLACE,
                        etag=entity.metadata["etag"],
                        match_condition=MatchConditions.IfNotModified,
                    )
                except ResourceModifiedError:
                    continue  # another writer changed the job in between: read it again
                return
        raise TransientError(f"Job {job.id!r} kept changing under the update; try again.")

    # items

    async def list_sources(self, job_id: str) -> list[SourceRow]:
        found = await self._list_items(job_id, _SOURCE_PREFIX)
        rows = [source_from(row.fields) for row in found]
        rows.sort(key=lambda row: row.source_id)
        return rows

    async def list_targets(self, job_id: str) -> list[TargetRow]:
        found = await self._list_items(job_id, _TARGET_PREFIX)
        rows = [target_from(row.fields) for row in found]
        rows.sort(key=lambda row: row.target)
        return rows

    async def list_sources_changed(self, job_id: str, cursor: int) -> tuple[list[SourceRow], int]:
        found, cursor = await self._list_items_changed(job_id, _SOURCE_PREFIX, cursor)
        rows = [source_from(row.fields) for row in found]
        rows.sort(key=lambda row: row.source_id)
        return rows, cursor

    async def list_targets_changed(self, job_id: str, cursor: int) -> tuple[list[TargetRow], int]:
        found, cursor = await self._list_items_changed(job_id, _TARGET_PREFIX, cursor)
        rows = [target_from(row.fields) for row in found]
        rows.sort(key=lambda row: row.target)
        return rows, cursor

    async def list_publications(self, job_id: str) -> list[PublicationRow]:
        found = await self._list_items(job_id, _PUBLICATION_PREFIX)
        rows = [publication_from(row.fields) for row in found]
        rows.sort(key=lambda row: row.key)
        return rows

    async def put_publication(self, row: PublicationRow) -> PublicationRow:
        new = redact_publication(dataclasses.replace(row, version=row.version + 1))
        new = dataclasses.replace(new, error=_truncate(new.error))
        await self._compare_and_set(
            row.job_id,
            _publication_entity(new),
            row.version,
            f"gallery version {row.key!r} of job {row.job_id!r}",
        )
        return new

    async def _list_items_changed(
        self, job_id: str, prefix: str, cursor: int
    ) -> tuple[list[Row], int]:
        """The job's items of a kind written since ``cursor``, and the next cursor: the newest
        Timestamp seen, in microseconds (0: read them all).

        The Table service stamps each entity with its time of writing; a listing reads the items
        stamped since CHANGE_OVERLAP_SECONDS before the newest stamp it saw (a write may become
        visible a little after a later one, and a partition's servers' clocks differ a little),
        so some unchanged items come again, which callers skip. Every FULL_LISTING_SECONDS a
        listing reads every item, whatever their stamps say.
        """
        key = (job_id, prefix)
        now = time.monotonic()
        if cursor and now - self._full_listings.get(key, -math.inf) < FULL_LISTING_SECONDS:
            since = cursor - int(CHANGE_OVERLAP_SECONDS * 1_000_000)
            found = await self._list_items(job_id, prefix, since=datetime_of(since))
        else:
            self._full_listings[key] = now
            found = await self._list_items(job_id, prefix)
        return found, max(cursor, *(row.stamp for row in found), 0)

    async def _list_items(
        self, job_id: str, prefix: str, *, since: datetime | None = None
    ) -> list[Row]:
        """The job's items of a kind (``prefix``), or those written at or after ``since``."""
        items = await self._read_table("items")
        pk = escape_key(job_id)
        upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)  # "s:" .. "s;"
        query = "PartitionKey eq @pk and RowKey ge @lo and RowKey lt @hi"
        parameters: dict[str, str | datetime] = {"pk": pk, "lo": prefix, "hi": upper}
        if since is not None:
            query += " and Timestamp ge @since"
            parameters["since"] = since
        found: list[Row] = []
        with _empty_if_missing(), translate_errors(f"list the items of job {job_id!r}"):
            found = await query_rows(items, query, parameters, self._rows_read)
        if len(self._rows_read) > MAX_ROWS_KEPT:
            self._rows_read.clear()  # only a shortcut: a forgotten row is read again
        for row in found:
            if row.etag:
                self._remember(pk, row.fields["RowKey"], _version(row.fields), row.etag)
        return found

    async def put_source(self, row: SourceRow) -> SourceRow:
        new = dataclasses.replace(row, version=row.version + 1, error=_truncate(redact(row.error)))
        await self._compare_and_set(
            row.job_id,
            _source_entity(new),
            row.version,
            f"source {row.source_id!r} of job {row.job_id!r}",
        )
        return new

    async def put_target(self, row: TargetRow) -> TargetRow:
        new = dataclasses.replace(row, version=row.version + 1, error=_truncate(redact(row.error)))
        await self._compare_and_set(
            row.job_id,
            _target_entity(new),
            row.version,
            f"target {row.target!r} of job {row.job_id!r}",
        )
        return new

    async def _compare_and_set(
        self, job_id: str, entity: dict[str, Any], expected: int, what: str
    ) -> None:
        """Replace the item if its stored version is ``expected``, atomically (ETag, If-Match).

        The ETag of version ``expected`` comes from this instance's last read or write of the item
        when it was that version, else from a fresh read. Only one write ever moves an item from a
        given version to the next, so a version has exactly one ETag: a 412 means the stored
        version moved on, never a stale cache.
        """
        items = await self._table("items")
        pk, rk = entity["PartitionKey"], entity["RowKey"]
        stale = _stale(what)
        try:
            cached = self._etags.get((pk, rk))
            if cached is not None and cached[0] == expected:
                etag = cached[1]
            else:
                with translate_errors(f"read the {what}", stale):
                    current = await items.get_entity(pk, rk)
                if _version(current) != expected:
                    raise PreconditionFailed(f"The {what} was changed by another worker.")
                etag = str(current.metadata["etag"])
            meta = await self._write_together(items, _Write(entity, etag, what))
        except PreconditionFailed:
            self._etags.pop((pk, rk), None)
            raise
        if new_etag := meta.get("etag"):
            self._remember(pk, rk, expected + 1, new_etag)

    async def _write_together(self, items: TableClient, write: _Write) -> Mapping[str, Any]:
        """Replace the entity if its ETag is still ``write.etag``, in one transaction with the
        other writes of its job that arrive within the window; returns the write's metadata."""
        pk = write.entity["PartitionKey"]
        waiting = self._writes.get(pk)
        if waiting is None:
            waiting = self._writes[pk] = []
            sender = asyncio.get_running_loop().create_task(self._send_writes(items, pk))
            self._senders.add(sender)
            sender.add_done_callback(self._senders.discard)
        waiting.append(write)
        return await write.done

    async def _send_writes(self, items: TableClient, pk: str) -> None:
        taken: list[_Write] | None = None
        try:
            await asyncio.sleep(WRITE_WINDOW_SECONDS)
            taken = writes = self._writes.pop(pk, [])
            while writes:
                batch: list[_Write] = []
                keys: set[str] = set()
                for write in writes:  # a transaction names each entity at most once
                    if len(batch) < BATCH_SIZE and write.entity["RowKey"] not in keys:
                        batch.append(write)
                        keys.add(write.entity["RowKey"])
                writes = [write for write in writes if write not in batch]
                await self._send_batch(items, batch)
        finally:
            # Cancelled (the loop ends) or broken: no caller may wait for ever.
            for write in self._writes.pop(pk, []) if taken is None else taken:
                write.settle_error(TransientError(f"the write of the {write.what} was not sent"))

    async def _send_batch(self, items: TableClient, batch: list[_Write]) -> None:
        """Send the writes; each caller gets its outcome, as if it had written alone."""
        while len(batch) > 1:
            operations = [Operation(write.entity, write.etag) for write in batch]
            try:
                results = await transactions.submit_transaction(items, operations)
            except TableTransactionError as exc:
                if not _one_refused(exc, len(batch)):
                    break  # not one entity's refusal: each write goes alone, for its own answer
                failed = batch.pop(exc.index)  # nothing was applied: the others go again
                failed.settle_error(_refusal(failed.what, exc.status_code))
                continue
            except Exception:
                break
            for write, meta in zip(batch, results, strict=True):
                write.settle(meta)
            return
        for write in batch:
            await self._send_alone(items, write)

    async def _send_alone(self, items: TableClient, write: _Write) -> None:
        # A transaction of one: the same request count and answers as the SDK's update_entity
        # (404, 412), for about two thirds of its CPU (no generated serializers).
        try:
            with translate_errors(f"write the {write.what}", _stale(write.what)):
                (meta,) = await transactions.submit_transaction(
                    items, [Operation(write.entity, write.etag)]
                )
        except Exception as exc:
            write.settle_error(exc)
        else:
            write.settle(meta)

    def _remember(self, pk: str, rk: str, version: int, etag: str) -> None:
        key = (pk, rk)
        self._etags.pop(key, None)  # re-insert: the dict's order is the eviction order
        self._etags[key] = (version, etag)
        if len(self._etags) > ETAG_CACHE_SIZE:
            del self._etags[next(iter(self._etags))]

    # logs and switches

    async def append_log(self, record: LogRecord) -> None:
        record = redact_record(record)
        await self._loop_client()  # whose closing writes the buffer when the loop ends
        # Lexical order of the RowKey is time order; the sequence keeps one process's lines with
        # equal timestamps in order; the random part makes keys of two processes distinct.
        row_key = f"{max(record.ts, 0.0):017.6f}-{next(_log_sequence):012d}-{uuid.uuid4().hex}"
        fields = log_fields(record, extra=_extra_json(record.extra))
        self._log_buffer.append(_entity(escape_key(record.job_id), row_key, fields))
        if len(self._log_buffer) > LOG_BUFFER_LIMIT:
            dropped = len(self._log_buffer) - LOG_BUFFER_LIMIT
            del self._log_buffer[:dropped]
            logger.warning("the log table refuses writes: dropped %d log lines", dropped)
        if self._log_flusher is None or self._log_flusher.done():
            self._log_flusher = asyncio.get_running_loop().create_task(self._flush_logs_soon())

    async def _flush_logs_soon(self) -> None:
        await asyncio.sleep(LOG_FLUSH_SECONDS)
        await self._flush_logs_quietly()

    async def _flush_logs_quietly(self) -> None:
        """Write the buffered lines; a failure keeps them for the next flush, with a warning."""
        try:
            await self.flush_logs()
        except Exception as exc:  # a log line must never fail the work it describes
            logger.warning("could not write log lines yet: %s", redact(str(exc)))

    async def flush_logs(self) -> None:
        """Write every buffered log line now, one transaction per job and hundred lines."""
        if not self._log_buffer:
            return
        entities, self._log_buffer = self._log_buffer, []
        batches = _log_batches(entities)
        written: set[int] = set()
        try:
            logs = await self._table("logs")
            for batch in batches:
                # Upsert: a batch resent by the retry policy after a lost answer stays one write.
                job_id = unescape_key(batch[0]["PartitionKey"])
                with translate_errors(f"append to the log of job {job_id!r}"):
                    await transactions.submit_transaction(logs, [Operation(e) for e in batch])
                written.update(id(e) for e in batch)
        except BaseException:
            # What was not written goes first in line for the next flush.
            self._log_buffer[:0] = [e for e in entities if id(e) not in written]
            raise

    async def list_logs(self, job_id: str, where: LogFilter | None = None) -> list[LogRecord]:
        where = where or LogFilter()
        await self.flush_logs()  # this process's own lines are part of the log it reads
        logs = await self._read_table("logs")
        clauses, parameters = ["PartitionKey eq @pk"], {"pk": escape_key(job_id)}
        if where.step is not None:
            clauses.append("step eq @step")
            parameters["step"] = where.step
        if where.target is not None:
            clauses.append("target eq @target")
            parameters["target"] = where.target
        entities: list[TableEntity] = []
        with _empty_if_missing(), translate_errors(f"read the log of job {job_id!r}"):
            entities = [
                entity
                async for entity in logs.query_entities(
                    " and ".join(clauses), parameters=parameters
                )
            ]
        entities.sort(key=lambda entity: str(entity["RowKey"]))
        return [
            record
            for record in (log_from({"job_id": job_id, **_plain(entity)}) for entity in entities)
            if where.matches(record)
        ]

    async def set_target_switch(self, names: Sequence[str], enabled: bool) -> None:
        switches = await self._table("switches")
        unique = list(dict.fromkeys(names))  # a transaction may not touch an entity twice
        for i in range(0, len(unique), BATCH_SIZE):
            operations = [
                Operation(
                    {
                        "PartitionKey": _SWITCH_PK,
                        "RowKey": escape_key(name),
                        "name": name,
                        "enabled": bool(enabled),
                    }
                )
                for name in unique[i : i + BATCH_SIZE]
            ]
            with translate_errors("set target switches"):
                await transactions.submit_transaction(switches, operations)

    async def target_switches(self) -> dict[str, bool]:
        switches = await self._read_table("switches")
        with _empty_if_missing(), translate_errors("read target switches"):
            return {
                str(entity.get("name") or unescape_key(entity["RowKey"])): bool(entity["enabled"])
                async for entity in switches.query_entities(
                    "PartitionKey eq @pk", parameters={"pk": _SWITCH_PK}
                )
            }
        return {}


def _log_batches(entities: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Entities in transactions: one job each, at most BATCH_SIZE lines and well within the
    4 MiB a transaction may carry (a line's text is cut at MAX_TEXT characters)."""
    batches: list[list[dict[str, Any]]] = []
    open_batches: dict[str, tuple[list[dict[str, Any]], list[int]]] = {}
    for entity in entities:
        size = sum(len(str(value)) for value in entity.values())
        batch, used = open_batches.get(entity["PartitionKey"], ([], [0]))
        if not batch or len(batch) >= BATCH_SIZE or used[0] + size > LOG_BATCH_CHARS:
            batch, used = [], [0]
            batches.append(batch)
            open_batches[entity["PartitionKey"]] = (batch, used)
        batch.append(entity)
        used[0] += size
    return batches


class _Write:
    """One compare-and-set replacement of an item, waiting for its job's transaction."""

    def __init__(self, entity: dict[str, Any], etag: str, what: str) -> None:
        self.entity = entity
        self.etag = etag
        self.what = what
        self.done: asyncio.Future[Mapping[str, Any]] = asyncio.get_running_loop().create_future()

    def settle(self, meta: Mapping[str, Any]) -> None:
        if not self.done.done():
            self.done.set_result(meta)

    def settle_error(self, exc: BaseException) -> None:
        if not self.done.done():
            self.done.set_exception(exc)


def _stale(what: str) -> Override:
    return {
        404: lambda _: PreconditionFailed(f"The {what} does not exist."),
        412: lambda _: PreconditionFailed(f"The {what} was changed by another worker."),
    }


def _one_refused(exc: TableTransactionError, size: int) -> bool:
    """Whether the service refused one entity's precondition, naming it (``"<index>:..."``)."""
    named = str(exc.message or "").split(":", 1)[0].strip()
    return exc.status_code in (404, 412) and named.isdigit() and 0 <= exc.index < size


def _refusal(what: str, status: int | None) -> PreconditionFailed:
    if status == 404:
        return PreconditionFailed(f"The {what} does not exist.")
    return PreconditionFailed(f"The {what} was changed by another worker.")


def _empty_if_missing() -> contextlib.AbstractContextManager[None]:
    """A query of a table that does not exist yet (nothing was ever written) reads as empty."""
    return contextlib.suppress(NotFound)


# entities


def _value(value: Any) -> Any:
    """The plain value of a property (Int64 and a few others come back as EntityProperty)."""
    return value.value if isinstance(value, EntityProperty) else value


def _int(value: Any) -> int:
    return int(_value(value))


def _int64(value: int) -> EntityProperty:
    return EntityProperty(int(value), EdmType.INT64)


def _version(entity: Mapping[str, Any]) -> int:
    return _int(entity["version"])


def _extra_json(extra: Mapping[str, str]) -> str:
    text = json.dumps(dict(extra))
    if len(text) <= MAX_TEXT:
        return text
    kept: dict[str, str] = {}
    for key, value in extra.items():
        kept[key[:MAX_EXTRA_VALUE]] = _truncate(value, MAX_EXTRA_VALUE)
        if len(json.dumps(kept)) > MAX_TEXT:
            del kept[key[:MAX_EXTRA_VALUE]]
            break
    return json.dumps(kept)


# Properties the Table service would refuse beyond 64 KiB, cut short (the rest are short by nature).
_LONG_TEXT = frozenset({"description", "error", "message"})


def _entity(pk: str, rk: str, fields: Fields) -> dict[str, Any]:
    """The entity of a record's fields: every int an Int64, long text cut short, no ``None``
    (a missing property reads back as None; an empty string stays an empty string)."""
    entity: dict[str, Any] = {"PartitionKey": pk, "RowKey": rk}
    for key, value in fields.items():
        if value is None:
            continue
        if isinstance(value, int) and not isinstance(value, bool):
            value = _int64(value)
        elif key in _LONG_TEXT:
            value = _truncate(value)
        entity[key] = value
    return entity


def _plain(entity: Mapping[str, Any]) -> Fields:
    return {key: _value(value) for key, value in entity.items()}


def _job_entity(job: Job) -> dict[str, Any]:
    return _entity(_JOB_PK, escape_key(job.id), job_fields(job))


def _source_entity(row: SourceRow) -> dict[str, Any]:
    rk = _SOURCE_PREFIX + escape_key(row.source_id)
    return _entity(escape_key(row.job_id), rk, source_fields(row))


def _target_entity(row: TargetRow) -> dict[str, Any]:
    rk = _TARGET_PREFIX + escape_key(row.target)
    return _entity(escape_key(row.job_id), rk, target_fields(row))


def _publication_entity(row: PublicationRow) -> dict[str, Any]:
    rk = _PUBLICATION_PREFIX + escape_key(row.key)
    return _entity(escape_key(row.job_id), rk, publication_fields(row))
