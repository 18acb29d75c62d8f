"""A loopback HTTP proxy in front of Azurite that implements Put Page From URL (issue 13).

Azurite answers Put Page From URL (``PUT ?comp=page`` with ``x-ms-copy-source``) with 501. This
proxy forwards every other request to Azurite untouched and implements that one the way Azure
does, with Azurite doing the checking wherever it can:

- the headers Azure requires: ``x-ms-range`` and ``x-ms-source-range`` of equal length, at most
  4 MiB, 512-aligned, ``x-ms-page-write: update``, no body;
- the caller's own authorization, by forwarding the request as is: Azurite checks the signature
  before it answers 501, so a caller it refuses is refused here with Azurite's answer;
- the source range is read through its URL and SAS (or ``x-ms-copy-source-authorization``), so an
  expired, wrong-scope or missing SAS is refused by Azurite itself; the proxy then answers Azure's
  ``CannotVerifyCopySource`` with the source's status, as Azure does;
- the page is written to the destination through Azurite with the proxy's own key (Put Page with
  a body), and the answer carries the headers Azure returns: 201, ETag, Last-Modified,
  ``x-ms-blob-sequence-number``, ``x-ms-request-server-encrypted``, ``x-ms-version``,
  ``x-ms-request-id``.

:class:`ProxySettings` adds latency, bandwidth and injected 503 ServerBusy answers (with Azure's
error body). Lease and sequence-number conditions on the destination are not implemented.
"""

from __future__ import annotations

import http.client
import re
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from azure.core.exceptions import HttpResponseError
from azure.storage.blob import BlobClient

from azurite import HOST, AzuriteServer

__all__ = ["ProxySettings", "PutPageProxy", "RangeCall"]

PAGE = 512
MAX_RANGE = 4 * 1024 * 1024
_RANGE = re.compile(r"^bytes=(\d+)-(\d+)$")
# Hop-by-hop headers, and the ones the proxy sets itself on what it relays.
_DROPPED = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length", "host"})
SERVER_BUSY = "The server is currently unable to receive requests. Please retry your request."


@dataclass
class ProxySettings:
    """How the proxy's Put Page From URL behaves; change it while the proxy runs."""

    latency: float = 0.0  # seconds added to each call
    bandwidth: float = 0.0  # bytes per second of each call; 0: as fast as Azurite
    busy_next: int = 0  # the next this many calls answer 503 ServerBusy
    busy_every: int = 0  # every n-th call answers 503 ServerBusy; 0: never
    retry_after: int | None = None  # seconds a 503 asks the caller to wait, if any


@dataclass(frozen=True)
class RangeCall:
    """One Put Page From URL the proxy answered."""

    dest: str  # "account/container/blob"
    offset: int
    length: int
    status: int


@dataclass
class _Answer:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


class PutPageProxy:
    """The proxy, on a free loopback port, in a thread; a context manager."""

    def __init__(self, azurite: AzuriteServer, settings: ProxySettings | None = None) -> None:
        self.azurite = azurite
        self.settings = settings or ProxySettings()
        self.calls: list[RangeCall] = []
        self._count = 0
        self._lock = threading.Lock()
        self._in_flight = 0
        self._idle = threading.Condition(self._lock)
        self._server = ThreadingHTTPServer((HOST, 0), _handler_for(self))
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="putpage-proxy", daemon=True
        )

    def __enter__(self) -> PutPageProxy:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

    def blob_endpoint(self, account: str) -> str:
        return f"http://{HOST}:{self.port}/{account}"

    def connection_string(self, account: str) -> str:
        """Azurite's connection string for ``account``, with blob requests sent to the proxy."""
        real = f"BlobEndpoint={self.azurite.blob_endpoint(account)};"
        return self.azurite.connection_string(account).replace(
            real, f"BlobEndpoint={self.blob_endpoint(account)};"
        )

    def wait_idle(self, timeout: float = 60.0) -> None:
        """Wait until no Put Page From URL is being answered (one whose caller gave up, say)."""
        with self._idle:
            if not self._idle.wait_for(lambda: self._in_flight == 0, timeout):
                raise TimeoutError(f"{self._in_flight} range copies still running")

    def range_calls(self, status: int | None = 201) -> list[RangeCall]:
        """The calls answered with ``status`` (None: all)."""
        with self._lock:
            return [c for c in self.calls if status is None or c.status == status]

    @contextmanager
    def running(self) -> Iterator[None]:
        """Counts one Put Page From URL in flight, for :meth:`wait_idle`."""
        with self._lock:
            self._in_flight += 1
        try:
            yield
        finally:
            with self._lock:
                self._in_flight -= 1
                self._idle.notify_all()

    # -- Put Page From URL --------------------------------------------------------------------------

    def put_page_from_url(self, path: str, headers: dict[str, str], forwarded: _Answer) -> _Answer:
        """Answer one Put Page From URL whose caller Azurite accepted (``forwarded`` is its 501)."""
        if forwarded.status != 501:
            return forwarded  # Azurite refused the caller (signature, SAS...): its answer stands
        dest_range, source_range, _ = _check_headers(headers)
        if self._busy_now():
            return self.record(path, dest_range, _server_busy(self.settings.retry_after))
        assert dest_range is not None and source_range is not None
        data = _read_source(headers, source_range)
        if isinstance(data, _Answer):
            return self.record(path, dest_range, data)
        self._pace(len(data))
        return self.record(path, dest_range, self._write(path, dest_range[0], data, headers))

    def _busy_now(self) -> bool:
        with self._lock:
            self._count += 1
            settings = self.settings
            if settings.busy_next > 0:
                settings.busy_next -= 1
                return True
            return bool(settings.busy_every) and self._count % settings.busy_every == 0

    def _pace(self, length: int) -> None:
        settings = self.settings
        delay = settings.latency + (length / settings.bandwidth if settings.bandwidth else 0.0)
        if delay > 0:
            time.sleep(delay)

    def _write(self, path: str, offset: int, data: bytes, headers: dict[str, str]) -> _Answer:
        account, container, name = _split_blob_path(path)
        blob = BlobClient.from_connection_string(
            self.azurite.connection_string(account), container, name
        )
        seen: dict[str, str] = {}

        def keep_headers(response: Any) -> None:
            seen.update({k.lower(): v for k, v in response.http_response.headers.items()})

        try:
            with blob:
                blob.upload_page(
                    data, offset=offset, length=len(data), raw_response_hook=keep_headers
                )
        except HttpResponseError as exc:
            response: Any = exc.response  # azure-core types it loosely; a pipeline response
            return _Answer(
                response.status_code,
                {k.lower(): v for k, v in response.headers.items()},
                response.body(),
            )
        kept = (
            "etag",
            "last-modified",
            "content-md5",
            "x-ms-content-crc64",
            "x-ms-blob-sequence-number",
            "x-ms-request-server-encrypted",
            "x-ms-version",
            "x-ms-request-id",
            "date",
        )
        out = {name: seen[name] for name in kept if name in seen}
        out.setdefault("x-ms-request-server-encrypted", "true")
        if "x-ms-client-request-id" in headers:
            out["x-ms-client-request-id"] = headers["x-ms-client-request-id"]
        return _Answer(201, out)

    def record(self, path: str, dest_range: tuple[int, int] | None, answer: _Answer) -> _Answer:
        account, container, name = _split_blob_path(path)
        offset, length = dest_range or (0, 0)
        with self._lock:
            self.calls.append(
                RangeCall(f"{account}/{container}/{name}", offset, length, answer.status)
            )
        return answer


# -- requests -------------------------------------------------------------------------------------


def _check_headers(
    headers: dict[str, str],
) -> tuple[tuple[int, int] | None, tuple[int, int] | None, _Answer | None]:
    """The destination and source ranges as (offset, length), or Azure's refusal."""
    dest = _parse_range(headers.get("x-ms-range") or headers.get("range"))
    source = _parse_range(headers.get("x-ms-source-range"))
    if dest is None:
        return None, None, _error(400, "MissingRequiredHeader", "x-ms-range is missing.")
    if source is None:
        return dest, None, _error(400, "MissingRequiredHeader", "x-ms-source-range is missing.")
    if headers.get("x-ms-page-write", "").lower() != "update":
        return dest, source, _error(400, "InvalidHeaderValue", "x-ms-page-write must be update.")
    if int(headers.get("content-length", "0") or 0):
        return dest, source, _error(400, "InvalidHeaderValue", "Content-Length must be 0.")
    if dest[1] != source[1]:
        return dest, source, _error(400, "InvalidHeaderValue", "Ranges differ in length.")
    if dest[1] > MAX_RANGE:
        return dest, source, _error(413, "RequestBodyTooLarge", "The range exceeds 4 MiB.")
    if any(n % PAGE for n in (*dest, *source)):
        return dest, source, _error(416, "InvalidPageRange", "The page range specified is invalid.")
    return dest, source, None


def _parse_range(value: str | None) -> tuple[int, int] | None:
    match = _RANGE.match((value or "").strip())
    if match is None:
        return None
    start, end = int(match[1]), int(match[2])
    return (start, end - start + 1) if end >= start else None


def _read_source(headers: dict[str, str], source_range: tuple[int, int]) -> bytes | _Answer:
    """The source range, read through its URL as the caller gave it (Azurite checks the SAS)."""
    url = urlsplit(headers["x-ms-copy-source"])
    start, length = source_range
    request_headers = {
        "x-ms-range": f"bytes={start}-{start + length - 1}",
        "x-ms-version": headers.get("x-ms-version", "2021-08-06"),
    }
    if "x-ms-copy-source-authorization" in headers:
        request_headers["authorization"] = headers["x-ms-copy-source-authorization"]
    target = url.path + (f"?{url.query}" if url.query else "")
    connection = http.client.HTTPConnection(url.hostname or HOST, url.port or 80, timeout=60)
    try:
        connection.request("GET", target, headers=request_headers)
        response = connection.getresponse()
        body = response.read()
        code = response.getheader("x-ms-error-code") or ""
    finally:
        connection.close()
    if response.status not in (200, 206):
        # Azure's answer when it cannot read the source: its status, and the source's own word.
        return _error(
            response.status,
            "CannotVerifyCopySource",
            response.reason or "Could not verify the copy source.",
            extra=(
                f"<CopySourceStatusCode>{response.status}</CopySourceStatusCode>"
                f"<CopySourceErrorCode>{code}</CopySourceErrorCode>"
                f"<CopySourceErrorMessage>{response.reason}</CopySourceErrorMessage>"
            ),
        )
    if len(body) != length:
        return _error(416, "InvalidSourceRange", "The source range is outside the source blob.")
    return body


def _split_blob_path(path: str) -> tuple[str, str, str]:
    parts = unquote(urlsplit(path).path).lstrip("/").split("/", 2)
    while len(parts) < 3:
        parts.append("")
    return parts[0], parts[1], parts[2]


def _error(status: int, code: str, message: str, extra: str = "") -> _Answer:
    request_id = str(uuid.uuid4())
    text = f"{message}\nRequestId:{request_id}\nTime:{time.strftime('%Y-%m-%dT%H:%M:%SZ')}"
    body = (
        '<?xml version="1.0" encoding="utf-8"?>'
        f"<Error><Code>{code}</Code><Message>{text}</Message>{extra}</Error>"
    ).encode()
    return _Answer(
        status,
        {
            "content-type": "application/xml",
            "x-ms-error-code": code,
            "x-ms-request-id": request_id,
            "x-ms-version": "2021-08-06",
            "date": formatdate(usegmt=True),
        },
        body,
    )


def _server_busy(retry_after: int | None) -> _Answer:
    answer = _error(503, "ServerBusy", SERVER_BUSY)
    if retry_after is not None:
        answer.headers["retry-after"] = str(retry_after)
    return answer


def _is_put_page_from_url(method: str, path: str, headers: dict[str, str]) -> bool:
    query = parse_qs(urlsplit(path).query)
    return method == "PUT" and query.get("comp") == ["page"] and "x-ms-copy-source" in headers


def _handler_for(proxy: PutPageProxy) -> type[BaseHTTPRequestHandler]:
    azurite_port = proxy.azurite.blob_port

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the SDK's clients expect

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: URLs carry SAS tokens

        def _serve(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            if not _is_put_page_from_url(self.command, self.path, headers):
                self._reply(_forward(azurite_port, self.command, self.path, headers, body))
                return
            # Checked before Azurite sees it: it would take a bad one as another operation (a
            # Clear Pages, say) and carry it out.
            dest_range, _, problem = _check_headers(headers)
            if problem is not None:
                self._reply(proxy.record(self.path, dest_range, problem))
                return
            with proxy.running():
                answer = _forward(azurite_port, self.command, self.path, headers, body)
                answer = proxy.put_page_from_url(self.path, headers, answer)
            self._reply(answer)

        def _reply(self, answer: _Answer) -> None:
            self.send_response(answer.status)
            for name, value in answer.headers.items():
                if name not in _DROPPED:
                    self.send_header(name, value)
            if self.command == "HEAD":
                self.send_header("content-length", answer.headers.get("content-length", "0"))
                self.end_headers()
                return
            self.send_header("content-length", str(len(answer.body)))
            self.end_headers()
            self.wfile.write(answer.body)

        do_GET = do_PUT = do_HEAD = do_DELETE = do_POST = do_OPTIONS = _serve

    return Handler


def _forward(port: int, method: str, path: str, headers: dict[str, str], body: bytes) -> _Answer:
    connection = http.client.HTTPConnection(HOST, port, timeout=120)
    try:
        sent = {k: v for k, v in headers.items() if k not in ("connection", "keep-alive")}
        connection.request(method, path, body=body or None, headers=sent)
        response = connection.getresponse()
        data = b"" if method == "HEAD" else response.read()
        return _Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, data)
    finally:
        connection.close()
