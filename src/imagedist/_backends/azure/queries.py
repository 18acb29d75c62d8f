"""Queries of Table storage entities, with a reader of our own for the answers.

The tables SDK reads each entity of a query's answer through its generated deserializer (a
model object per entity, each property looked at by type name) and then converts it again: a
worker's listings of changed items read thousands of entities, and that was their main cost. The
answer is plain JSON; it is read here with :func:`json.loads` and the property types the state
store writes. The request still goes through the SDK client's own pipeline (its
``send_request``, as for :mod:`.transactions`): authentication, retries, proxies and the transport
stay the SDK's, and a refusal is raised as an ``HttpResponseError`` with the service's status and
error code.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from azure.core.rest import HttpRequest

from .transactions import base_url, edm_datetime, send

if TYPE_CHECKING:
    from azure.data.tables.aio import TableClient

__all__ = ["Row", "datetime_of", "filter_text", "query_rows", "row_of"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NEXT = ("NextPartitionKey", "NextRowKey")


@dataclass(frozen=True)
class Row:
    """One entity as read: its properties as plain values (Int64 as ``int``), its ETag and the
    time the service stamped it with, in microseconds since the epoch."""

    fields: dict[str, Any]
    etag: str
    stamp: int


async def query_rows(
    table: TableClient,
    where: str,
    parameters: Mapping[str, str | datetime],
    known: dict[tuple[str, str], Row] | None = None,
) -> list[Row]:
    """Every entity of ``table`` matching the filter ``where``, whose ``@name`` placeholders are
    filled from ``parameters`` (quoted as the SDK quotes them), page after page.

    ``known``, if given, holds the rows read before by (PartitionKey, RowKey): an entity whose
    ETag is its row's is that row, unchanged (an ETag changes with every write), and is not
    read again; the others are read and put in it. Listings of changes overlap, so most of what
    they answer was read before.

    :raises HttpResponseError: the service refused the query (a missing table is a 404).
    """
    url = f"{base_url(table.url)}/{table.table_name}()"
    params: dict[str, str] = {"$filter": filter_text(where, parameters)}
    rows: list[Row] = []
    while True:
        request = HttpRequest(
            "GET",
            url,
            params=params,
            headers={
                "x-ms-version": table.api_version,
                "DataServiceVersion": "3.0",
                "Accept": "application/json;odata=minimalmetadata",
            },
        )
        response, headers = await send(table, request, 200)
        entities = json.loads(response.content)["value"]
        rows += (
            [_read(entity, known) for entity in entities]
            if known is not None
            else [row_of(entity) for entity in entities]
        )
        following = {
            name: headers[f"x-ms-continuation-{name.lower()}"]
            for name in _NEXT
            if f"x-ms-continuation-{name.lower()}" in headers
        }
        if not following:
            return rows
        params = {**{k: v for k, v in params.items() if k not in _NEXT}, **following}


def filter_text(where: str, parameters: Mapping[str, str | datetime]) -> str:
    """``where`` with each ``@name`` replaced by its parameter as an OData literal (a string
    quoted, its quotes doubled; a datetime as ``datetime'...Z'``), longest names first."""
    for name in sorted(parameters, key=len, reverse=True):
        where = where.replace(f"@{name}", _literal(parameters[name]))
    return where


def _literal(value: str | datetime) -> str:
    if isinstance(value, datetime):
        return f"datetime'{edm_datetime(value)}'"
    return "'" + value.replace("'", "''") + "'"


def _read(entity: Mapping[str, Any], known: dict[tuple[str, str], Row]) -> Row:
    key = (entity.get("PartitionKey", ""), entity.get("RowKey", ""))
    row = known.get(key)
    if row is None or not row.etag or row.etag != entity.get("odata.etag"):
        row = known[key] = row_of(entity)
    return row


def row_of(entity: Mapping[str, Any]) -> Row:
    """A query answer's entity (minimal metadata) as a :class:`Row`."""
    fields: dict[str, Any] = {}
    types: dict[str, str] = {}
    for name, value in entity.items():
        if name.endswith("@odata.type"):
            types[name[: -len("@odata.type")]] = value
        elif not name.startswith("odata.") and name != "Timestamp":
            fields[name] = value
    for name, edm in types.items():  # only annotated properties need converting
        if name in fields:
            fields[name] = _plain(edm, fields[name])
    stamp = entity.get("Timestamp")
    return Row(fields, str(entity.get("odata.etag", "")), _microseconds(stamp) if stamp else 0)


def _plain(edm: str, value: Any) -> Any:
    """A property's value, by its type annotation."""
    if edm in ("Edm.String", "Edm.Boolean", "Edm.Int32"):
        return value
    if edm == "Edm.Int64":
        return int(value)
    if edm == "Edm.Double":
        return float(value)  # also "NaN", "Infinity", "-Infinity"
    raise TypeError(f"A property of type {edm} is not one the state store writes.")


def _microseconds(text: str) -> int:
    """An ``Edm.DateTime`` (``2026-01-02T03:04:05.1234567Z``, 0 to 7 decimals) in microseconds
    since the epoch, cut to whole microseconds as the SDK cuts it."""
    whole, _, fraction = text.removesuffix("Z").partition(".")
    stamp = datetime.fromisoformat(whole).replace(tzinfo=UTC)
    micros = int((fraction + "000000")[:6])
    return (stamp - _EPOCH) // timedelta(microseconds=1) + micros


def datetime_of(microseconds: int) -> datetime:
    """The instant ``microseconds`` after the epoch (a :attr:`Row.stamp`), in UTC."""
    return _EPOCH + timedelta(microseconds=microseconds)
