"""Entity-group transactions on Azure Table storage, with a multipart codec of our own.

The tables SDK builds each transaction as a MIME message with the standard library's ``email``
package and parses the answer the same way: most of a transaction's CPU, measured on the worker.
Our transactions hold only two kinds of operation (replace an entity, unconditionally or if its
ETag still matches), so the body is written and the answer read here, as plain text. The request
still goes through the SDK client's own pipeline (``send_request`` of the client it wraps, as the
SDK's ``submit_transaction`` does): authentication, retries, proxies and the transport stay the
SDK's. Failures are raised as the SDK raises them: a refused operation as
:class:`~azure.data.tables.TableTransactionError` (its message starts with the operation's index),
a refusal of the whole transaction as :class:`~azure.core.exceptions.HttpResponseError`, both with
the service's HTTP status and error code.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from azure.core.exceptions import HttpResponseError
from azure.core.rest import HttpRequest
from azure.data.tables import EdmType, EntityProperty, TableTransactionError

if TYPE_CHECKING:
    from azure.core.rest import AsyncHttpResponse
    from azure.data.tables.aio import TableClient

__all__ = [
    "Operation",
    "Part",
    "base_url",
    "decode_response",
    "edm_datetime",
    "encode_request",
    "entity_json",
    "send",
    "service_error",
    "submit_transaction",
]

_INT32 = 2**31
_INT64 = 2**63
_CRLF = "\r\n"
_BOUNDARY = re.compile(r'boundary="?([^";]+)"?', re.IGNORECASE)
_STATUS_LINE = re.compile(rb"HTTP/\d\.\d (\d{3})(?: ([^\r\n]*))?")
#: azure-core's retry policy retries a POST only on 500, 503 and 504; a transaction of ours
#: replaces entities, as a PUT does, so it goes again as a PUT would (a lost answer, 408, 429,
#: 502): a replacement applied twice is applied once, and a conditional one whose first attempt
#: was applied is refused (412), as a retried PUT is.
_RETRIED_METHODS = frozenset({"HEAD", "GET", "PUT", "DELETE", "OPTIONS", "TRACE", "POST"})


@dataclass(frozen=True)
class Operation:
    """Replace ``entity`` (insert it if missing, when ``etag`` is None); with an ``etag``, only if
    the stored entity still has it (``If-Match``)."""

    entity: Mapping[str, Any]
    etag: str | None = None


@dataclass(frozen=True)
class Part:
    """One operation's answer in a transaction's response."""

    status: int
    reason: str
    headers: Mapping[str, str]  # names in lower case
    body: bytes


async def submit_transaction(
    table: TableClient, operations: Sequence[Operation]
) -> list[dict[str, str]]:
    """Apply ``operations`` (one partition, at most 100) all or none; each one's metadata
    (``{"etag": ...}``), in order.

    :raises TableTransactionError: an operation was refused (``index``, ``status_code``).
    :raises HttpResponseError: the service refused the transaction as a whole.
    """
    base = base_url(table.url)
    body, content_type = encode_request(base, table.table_name, operations)
    request = HttpRequest(
        "POST",
        f"{base}/$batch",
        headers={
            "x-ms-version": table.api_version,
            "DataServiceVersion": "3.0",
            "MaxDataServiceVersion": "3.0;NetFx",
            "Content-Type": content_type,
            "Accept": "application/json",
        },
        content=body,
    )
    response, headers = await send(table, request, 202, retry_on_methods=_RETRIED_METHODS)
    parts = decode_response(headers.get("content-type", ""), response.content)
    for part in parts:
        if not 200 <= part.status < 300:
            raise service_error(
                TableTransactionError, part.status, part.reason, part.headers, part.body
            )
    return [{"etag": part.headers["etag"]} if "etag" in part.headers else {} for part in parts]


async def send(
    table: TableClient, request: HttpRequest, expected: int, **options: Any
) -> tuple[AsyncHttpResponse, dict[str, str]]:
    """Send ``request`` through ``table``'s own pipeline (the SDK sends its transactions through
    this ``send_request``: there is no public door to it) and read the answer; the answer and
    its headers, names in lower case.

    :raises HttpResponseError: unless the service answered ``expected``, with its status and
        error code.
    """
    # Streamed, as the SDK does: else the pipeline decodes the body itself, once more.
    response = await table._client.send_request(request, stream=True, **options)
    await response.read()
    headers = {name.lower(): value for name, value in response.headers.items()}
    if response.status_code != expected:
        raise service_error(
            HttpResponseError,
            response.status_code,
            response.reason,
            headers,
            response.content,
            response=response,
        )
    return response, headers


def edm_datetime(value: datetime) -> str:
    """A datetime as the Table service writes an ``Edm.DateTime`` (UTC, microseconds, ``Z``)."""
    stamp = value.astimezone(UTC) if value.tzinfo else value
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def base_url(url: str) -> str:
    """The account's endpoint without a query (a SAS is the pipeline's to add)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"


# the request


def encode_request(
    base: str, table_name: str, operations: Sequence[Operation], *, boundary: str | None = None
) -> tuple[bytes, str]:
    """The body of a transaction and its Content-Type, as the Table service expects them."""
    token = boundary or str(uuid.uuid4())
    batch, changeset = f"batch_{token}", f"changeset_{token}"
    lines = [f"--{batch}", f"Content-Type: multipart/mixed; boundary={changeset}", ""]
    for index, operation in enumerate(operations):
        payload = json.dumps(entity_json(operation.entity))
        entity = operation.entity
        url = (
            f"{base}/{table_name}(PartitionKey={_key(entity['PartitionKey'])},"
            f"RowKey={_key(entity['RowKey'])})"
        )
        lines += [
            f"--{changeset}",
            "Content-Type: application/http",
            "Content-Transfer-Encoding: binary",
            f"Content-ID: {index}",
            "",
            f"PUT {url} HTTP/1.1",
            "Content-Type: application/json",
            f"Content-Length: {len(payload.encode('utf-8'))}",
            "DataServiceVersion: 3.0",
            "Accept: application/json",
        ]
        if operation.etag is not None:
            lines.append(f"If-Match: {operation.etag}")
        lines += ["", payload]
    lines += [f"--{changeset}--", "", f"--{batch}--", ""]
    return _CRLF.join(lines).encode("utf-8"), f"multipart/mixed; boundary={batch}"


def _key(value: Any) -> str:
    """A key as a quoted OData literal in a URL (a quote doubled, then percent-encoded)."""
    return "'" + quote(str(value).replace("'", "''"), safe="") + "'"


def entity_json(entity: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON of an entity, typed as the tables SDK types it (a string needs no annotation,
    the service takes a JSON string for an ``Edm.String``)."""
    out: dict[str, Any] = {}
    for name, value in entity.items():
        if value is None:
            continue
        edm, plain = _typed(value)
        out[name] = plain
        if edm is not None:
            out[f"{name}@odata.type"] = edm
    return out


def _typed(value: Any) -> tuple[str | None, Any]:
    if isinstance(value, EntityProperty):
        return _typed_as(EdmType(value.edm_type), value.value)
    if isinstance(value, bool | str):
        return None, value
    if isinstance(value, int):
        if not -_INT32 <= value < _INT32:
            raise TypeError(f"{value} is too large for an Edm.Int32; give it as an Edm.Int64.")
        return None, value
    if isinstance(value, float):
        return _typed_as(EdmType.DOUBLE, value)
    if isinstance(value, datetime):
        return _typed_as(EdmType.DATETIME, value)
    raise TypeError(f"An entity property of type {type(value).__name__} is not supported.")


def _typed_as(edm: EdmType, value: Any) -> tuple[str | None, Any]:
    if edm is EdmType.INT64:
        if not -_INT64 <= int(value) < _INT64:
            raise TypeError(f"{value} is too large for an Edm.Int64.")
        return edm.value, str(int(value))
    if edm is EdmType.DOUBLE:
        number = float(value)
        if math.isnan(number):
            return edm.value, "NaN"
        if math.isinf(number):
            return edm.value, "Infinity" if number > 0 else "-Infinity"
        return edm.value, number
    if edm is EdmType.DATETIME and isinstance(value, datetime):
        return edm.value, edm_datetime(value)
    if edm in (EdmType.STRING, EdmType.BOOLEAN, EdmType.INT32):
        return edm.value, value
    raise TypeError(f"An entity property of type {edm.value} is not supported.")


# the response


def decode_response(content_type: str, body: bytes) -> list[Part]:
    """The answers to a transaction's operations, in order, from the response's multipart body
    (a changeset nested in the batch, or the answers directly in the batch)."""
    parts: list[Part] = []
    for headers, content in _multipart(content_type, body):
        inner = headers.get("content-type", "")
        if inner.lower().startswith("multipart/mixed"):
            parts += decode_response(inner, content)
        elif inner.lower().startswith("application/http"):
            parts.append(_http_part(content))
    return parts


def _multipart(content_type: str, body: bytes) -> list[tuple[dict[str, str], bytes]]:
    """The (headers, body) of each part of a multipart body."""
    found = _BOUNDARY.search(content_type)
    if found is None:
        raise ValueError(f"A multipart answer without a boundary: {content_type!r}")
    delimiter = b"--" + found.group(1).encode("ascii")
    chunks = body.split(delimiter)
    parts = []
    for chunk in chunks[1:]:  # before the first delimiter: the preamble
        if chunk.startswith(b"--"):
            break  # the closing delimiter
        headers, content = _head_and_body(chunk.removeprefix(b"\r\n").removeprefix(b"\n"))
        parts.append((headers, _strip_line_end(content)))
    return parts


def _http_part(data: bytes) -> Part:
    """One operation's HTTP answer, embedded in the multipart body. Lines before the status line
    are skipped: Azurite writes the changeset's name there when it refuses a whole changeset."""
    rest = data
    while rest:
        line, _, rest = rest.partition(b"\n")
        if matched := _STATUS_LINE.match(line.strip()):
            break
    else:
        raise ValueError(f"An answer without an HTTP status line: {data[:80]!r}")
    headers, body = _head_and_body(rest)
    reason = (matched.group(2) or b"").decode("latin-1").strip()
    return Part(int(matched.group(1)), reason, headers, body)


def _head_and_body(data: bytes) -> tuple[dict[str, str], bytes]:
    """Header lines up to the first empty line, and what follows."""
    headers: dict[str, str] = {}
    lines = data.split(b"\n")
    for number, raw in enumerate(lines):
        line = raw.rstrip(b"\r")
        if not line:
            return headers, b"\n".join(lines[number + 1 :])
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return headers, b""


def _strip_line_end(content: bytes) -> bytes:
    """A part's body without the line end that belongs to the next delimiter."""
    if content.endswith(b"\r\n"):
        return content[:-2]
    return content.removesuffix(b"\n")


# errors


def service_error(
    kind: type[HttpResponseError],
    status: int,
    reason: str | None,
    headers: Mapping[str, str],
    body: bytes,
    **kwargs: Any,
) -> HttpResponseError:
    """The SDK's exception for a refusal: the service's message and code, its HTTP status."""
    code, message = headers.get("x-ms-error-code"), None
    try:
        details = json.loads(body)["odata.error"]
        code = str(details.get("code", code))
        message = str(details["message"]["value"])
    except (ValueError, KeyError, TypeError):
        pass
    if status == 413:
        message = "The transaction request was too large"
    error = kind(message=f"{message}\nErrorCode:{code}", **kwargs)
    error.status_code, error.reason = status, reason
    error.error_code = code  # type: ignore[attr-defined]  # the SDK sets it on its errors too
    return error
