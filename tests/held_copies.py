"""A test-only azure-core transport that holds Azure copies pending, fails them and aborts them.

Azurite finishes a Copy Blob inside its request, so without help the Azure adapter is never seen
with a copy pending, failed or aborted, and the paths that resume such copies would run against
the local and simulated adapters only. :class:`HeldCopiesTransport` wraps the real transport of
the storage SDK (the adapter's ``wrap_transport`` parameter), so every request still goes through
the SDK's pipeline, its signing, retries and deserialisation, and Azurite still does the copy.
Only what the service *says* about a copy changes, as a real account would say it:

- Copy Blob answers ``x-ms-copy-status: pending`` for a copy the world holds, and a second Copy
  Blob into a blob whose copy is pending gets Azure's ``409 PendingCopyOperation``;
- Get Blob Properties (and Get Blob) of a held copy report ``pending`` with a partial
  ``x-ms-copy-progress`` that advances at the copy's bandwidth in the test's clock time, then
  ``success``; ``failed`` with an ``x-ms-copy-status-description`` once the test fails it, its
  destination account fails every copy, or its source is deleted while it is pending;
- Abort Copy Blob stops a pending copy (``204``; then ``aborted``, and the destination reads as
  zero bytes long, as Azure leaves it) and refuses as Azure does: ``409 CopyIdMismatch`` for
  another copy id, ``409 NoPendingCopyOperation`` when no copy is pending.

:class:`CopyWorld` is the storage service's state that the transports share (copies belong to
the service, not to the client that started them), so a copy started by one adapter is seen
pending by another, as after a crash.
"""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from azure.core.pipeline.transport import AsyncHttpResponse, AsyncHttpTransport, HttpRequest
from azure.core.utils import case_insensitive_dict

from imagedist.abc import Clock

__all__ = ["COPY_FAILED", "SOURCE_GONE", "CopyWorld", "HeldCopiesTransport", "HeldCopy"]

#: The descriptions Azure gives a failed copy (``x-ms-copy-status-description``).
COPY_FAILED = '500 InternalServerError "Copy failed."'
SOURCE_GONE = '404 BlobNotFound "Copy failed when reading the source."'

#: (account, container, blob name) of a blob, as its path-style URL names it.
BlobKey = tuple[str, str, str]


@dataclass
class HeldCopy:
    """One copy the world holds: how far it got, and how it ended."""

    copy_id: str
    source: BlobKey
    #: bytes to copy: the source's occupied pages, as the other adapters count them
    total: int
    started: float
    #: bytes per clock second; ``None``: it never ends by itself (failed from the start)
    bandwidth: float | None
    status: str = "pending"
    #: where progress stopped, once the copy failed or was aborted
    stopped_at: int = 0
    description: str = ""

    def settle(self, now: float) -> None:
        """Finish the copy once its bandwidth has carried all its bytes."""
        if (
            self.status == "pending"
            and self.bandwidth is not None
            and (now - self.started) * self.bandwidth >= self.total
        ):
            self.status = "success"

    def progress(self, now: float) -> int:
        if self.status == "success":
            return self.total
        if self.status != "pending" or self.bandwidth is None:
            return self.stopped_at
        return min(self.total, int((now - self.started) * self.bandwidth))

    def stop(self, status: str, now: float, description: str = "") -> None:
        self.stopped_at, self.status, self.description = self.progress(now), status, description


class CopyWorld:
    """The copies a test holds, shared by every transport of the test's adapters.

    :param clock: the test's clock; held copies advance in its time.
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.copies: dict[BlobKey, HeldCopy] = {}
        #: Copy Blob requests the service accepted, per destination
        self.started: dict[BlobKey, int] = {}
        self._failing_accounts: set[str] = set()
        self._slow_accounts: dict[str, float] = {}

    def fail_copies_into(self, account: str) -> None:
        """Every copy into ``account`` from now on fails (after it was accepted, as on Azure)."""
        self._failing_accounts.add(account)

    def hold_copies_into(self, account: str, bandwidth: float) -> None:
        """Every copy into ``account`` from now on advances at ``bandwidth`` bytes per clock
        second, whichever adapter starts it."""
        self._slow_accounts[account] = bandwidth

    def pending_into(self, account: str) -> int:
        """How many copies into ``account`` are pending now."""
        return sum(
            1
            for dest in self.copies
            if dest[0] == account and (held := self.current(dest)) and held.status == "pending"
        )

    def fail(self, account: str, container: str, name: str, description: str = COPY_FAILED) -> None:
        """Fail the pending copy into that blob now."""
        self.copies[(account, container, name)].stop("failed", self.clock.now(), description)

    def current(self, dest: BlobKey) -> HeldCopy | None:
        copy = self.copies.get(dest)
        if copy is not None:
            copy.settle(self.clock.now())
        return copy

    def accepted(self, dest: BlobKey, copy: HeldCopy) -> None:
        if dest[0] in self._failing_accounts:
            copy.bandwidth = None
            copy.stop("failed", copy.started, COPY_FAILED)
        self.copies[dest] = copy

    def source_deleted(self, source: BlobKey) -> None:
        now = self.clock.now()
        for copy in self.copies.values():
            copy.settle(now)
            if copy.source == source and copy.status == "pending":
                copy.stop("failed", now, SOURCE_GONE)

    def bandwidth_into(self, account: str, default: float | None) -> float | None:
        """The bandwidth of a copy into ``account``; ``default``: the starting adapter's."""
        return self._slow_accounts.get(account, default)

    def holds_into(self, account: str) -> bool:
        return account in self._failing_accounts or account in self._slow_accounts


def _blob_key(url: str) -> BlobKey | None:
    """The blob a path-style (Azurite) URL names, or None for an account or container URL."""
    parts = unquote(urlsplit(url).path).lstrip("/").split("/", 2)
    return (parts[0], parts[1], parts[2]) if len(parts) == 3 and all(parts) else None


def _query(url: str) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(urlsplit(url).query).items()}


class _Answer(AsyncHttpResponse):
    """A response the transport gives itself, as the storage service would have sent it."""

    def __init__(
        self, request: Any, status: int, reason: str, headers: dict[str, str], body: bytes = b""
    ) -> None:
        super().__init__(request, None)
        self.status_code = status
        self.reason = reason
        self.headers = case_insensitive_dict(
            {
                "Date": formatdate(usegmt=True),
                "x-ms-request-id": str(uuid.uuid4()),
                "x-ms-version": request.headers.get("x-ms-version", ""),
                "Content-Length": str(len(body)),
                **headers,
            }
        )
        self.content_type = self.headers.get("Content-Type")
        self._body = body

    def body(self) -> bytes:
        return self._body

    async def load_body(self) -> None:
        """The body is in memory already (older storage SDKs load it on their error path)."""


def _storage_error(request: Any, status: int, reason: str, code: str, message: str) -> _Answer:
    """Azure Storage's error response: the code in ``x-ms-error-code`` and in an XML body."""
    request_id = str(uuid.uuid4())
    body = (
        '<?xml version="1.0" encoding="utf-8"?><Error>'
        f"<Code>{code}</Code><Message>{message}\nRequestId:{request_id}\n"
        f"Time:{formatdate(usegmt=True)}</Message></Error>"
    ).encode()
    headers = {
        "x-ms-error-code": code,
        "x-ms-request-id": request_id,
        "Content-Type": "application/xml",
    }
    return _Answer(request, status, reason, headers, body)


class HeldCopiesTransport(AsyncHttpTransport[Any, Any]):
    """The real transport, with copies held in ``world`` (see the module's docstring).

    :param inner: the transport the SDK would have used.
    :param world: the held copies, shared with the other adapters' transports.
    :param bandwidth: bytes per clock second at which the copies this transport starts advance;
        ``None``: they finish at once, as Azurite's do (unless their account fails copies).
    """

    def __init__(self, inner: Any, world: CopyWorld, bandwidth: float | None = None) -> None:
        self._inner = inner
        self._world = world
        self._bandwidth = bandwidth

    async def __aenter__(self) -> HeldCopiesTransport:
        await self._inner.__aenter__()
        return self

    async def __aexit__(self, *args: Any) -> None:
        await self._inner.__aexit__(*args)

    async def open(self) -> None:
        await self._inner.open()

    async def close(self) -> None:
        await self._inner.close()

    async def sleep(self, duration: float) -> None:
        await self._inner.sleep(duration)

    async def send(self, request: Any, **kwargs: Any) -> Any:
        key = _blob_key(request.url)
        if key is None:
            return await self._inner.send(request, **kwargs)
        query = _query(request.url)
        handler: Callable[..., Any] = self._forward
        if request.method == "PUT" and query.get("comp") == "copy":
            handler = self._abort
        elif request.method == "PUT" and "comp" not in query and _is_async_copy(request):
            handler = self._copy
        elif request.method == "DELETE" and "comp" not in query:
            handler = self._delete
        return await handler(request, key, query, **kwargs)

    # -- the operations ---------------------------------------------------------------------------

    async def _forward(
        self, request: Any, key: BlobKey, query: dict[str, str], **kwargs: Any
    ) -> Any:
        response = await self._inner.send(request, **kwargs)
        if request.method in ("HEAD", "GET") and "comp" not in query and response.status_code < 300:
            self._describe(response, key)
        return response

    async def _copy(self, request: Any, key: BlobKey, query: dict[str, str], **kwargs: Any) -> Any:
        held = self._world.current(key)
        if held is not None and held.status == "pending":
            return _storage_error(
                request,
                409,
                "There is currently a pending copy operation.",
                "PendingCopyOperation",
                "There is currently a pending copy operation.",
            )
        self._world.copies.pop(key, None)
        source_url = request.headers["x-ms-copy-source"]
        hold = self._bandwidth is not None or self._world.holds_into(key[0])
        total = await self._occupied(request, source_url) if hold else 0
        response = await self._inner.send(request, **kwargs)
        if response.status_code == 202:
            self._world.started[key] = self._world.started.get(key, 0) + 1
        source = _blob_key(source_url)
        if not hold or response.status_code != 202 or source is None:
            return response
        copy_id = response.headers["x-ms-copy-id"]
        now = self._world.clock.now()
        bandwidth = self._world.bandwidth_into(key[0], self._bandwidth)
        self._world.accepted(key, HeldCopy(copy_id, source, total, now, bandwidth))
        response.headers["x-ms-copy-status"] = "pending"
        return response

    async def _abort(self, request: Any, key: BlobKey, query: dict[str, str], **kwargs: Any) -> Any:
        held = self._world.current(key)
        if held is None:
            return await self._inner.send(request, **kwargs)  # Azurite answers for its own copies
        if held.status != "pending":
            return _storage_error(
                request,
                409,
                "There is currently no pending copy operation.",
                "NoPendingCopyOperation",
                "There is currently no pending copy operation.",
            )
        if query.get("copyid") != held.copy_id:
            return _storage_error(
                request,
                409,
                "The specified copy ID did not match the copy ID for the pending copy operation.",
                "CopyIdMismatch",
                "The specified copy ID did not match the copy ID for the pending copy operation.",
            )
        held.stop("aborted", self._world.clock.now())
        return _Answer(request, 204, "No Content", {})

    async def _delete(
        self, request: Any, key: BlobKey, query: dict[str, str], **kwargs: Any
    ) -> Any:
        response = await self._inner.send(request, **kwargs)
        if response.status_code == 202:
            self._world.copies.pop(key, None)  # the destination is gone, and its copy with it
            self._world.source_deleted(key)
        return response

    # -- helpers ----------------------------------------------------------------------------------

    def _describe(self, response: Any, key: BlobKey) -> None:
        """Rewrite the copy headers of a blob's properties to what the held copy says."""
        held = self._world.current(key)
        if held is None or response.headers.get("x-ms-copy-id") != held.copy_id:
            return  # not a copy we hold (a later one replaced it outside the world)
        now = self._world.clock.now()
        headers = response.headers
        headers["x-ms-copy-status"] = held.status
        headers["x-ms-copy-progress"] = f"{held.progress(now)}/{held.total}"
        for name in ("x-ms-copy-status-description", "x-ms-copy-completion-time"):
            headers.pop(name, None)
        if held.description:
            headers["x-ms-copy-status-description"] = held.description
        if held.status != "pending":
            headers["x-ms-copy-completion-time"] = formatdate(now, usegmt=True)
        if held.status == "aborted":
            headers["Content-Length"] = "0"  # "leaves a destination blob with zero length"

    async def _occupied(self, request: Any, source_url: str) -> int:
        """Bytes in the source's page ranges, read with the copy's own SAS (it may read)."""
        separator = "&" if urlsplit(source_url).query else "?"
        pages = HttpRequest(
            "GET",
            f"{source_url}{separator}comp=pagelist",
            headers={"x-ms-version": request.headers.get("x-ms-version", "2021-12-02")},
        )
        response = await self._inner.send(pages)
        if response.status_code != 200:
            return 0  # the copy itself will say what is wrong with its source
        ranges = ET.fromstring(response.body()).iter("PageRange")
        return sum(int(r.findtext("End", "0")) - int(r.findtext("Start", "0")) + 1 for r in ranges)


def _is_async_copy(request: Any) -> bool:
    """Copy Blob, not Put Blob from URL nor the synchronous Copy Blob From URL."""
    headers = request.headers
    return (
        "x-ms-copy-source" in headers
        and "x-ms-requires-sync" not in headers
        and "x-ms-blob-type" not in headers
    )
