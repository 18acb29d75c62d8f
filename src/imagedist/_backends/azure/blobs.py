"""Page blobs in Azure Storage accounts, with server-side copies between accounts.

The adapter reaches each storage account through an :class:`AccountAccess`: a connection string
with an account key (Azurite, or accounts where keys are allowed) or an account URL with a token
credential (``DefaultAzureCredential``). It grants each copy read access to its one source blob with
a short-lived SAS: an account-key SAS for the first kind, a user-delegation SAS for the second.

Clients are ``azure.storage.blob.aio.BlobServiceClient``, one per account and event loop, created on
first use. Retries of throttled and failed requests are the SDK's (the storage ``ExponentialRetry``
policy, configured through client keyword arguments); whatever still fails is translated by
:mod:`.errors`. No URL carrying a SAS is ever logged or put in an exception message.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote, urlsplit
from urllib.request import getproxies_environment

from azure.storage.blob import BlobProperties as AzureBlobProperties
from azure.storage.blob import BlobSasPermissions, BlobType, ContentSettings, generate_blob_sas
from azure.storage.blob.aio import BlobClient, BlobServiceClient

from ..._domain import BlobRef, SecretUrl
from ..._domain.access import copy_access_lifetime
from ..._exceptions import Conflict, NotFound, OperationFailed
from ...abc import RANGED_COPY_UNSUPPORTED, BlobProperties, BlobStore, CopyStatus
from .errors import redact, translate_errors
from .proxies import proxy_options
from .transport import with_transport

__all__ = [
    "AccountAccess",
    "AzureBlobStore",
    "parse_copy_source",
]

PAGE = 512
#: Azure's limit for one Put Page request.
MAX_PUT_PAGE = 4 * 1024 * 1024
#: How far back a SAS starts, for clocks running ahead of the storage service's.
CLOCK_SKEW = timedelta(minutes=15)

#: How long the read SAS of a ranged copy's source lasts, and how much of it is left when a new
#: one is made: a range copy reads its source within the request, so an hour covers many calls.
RANGE_SAS_LIFETIME = timedelta(hours=1)
RANGE_SAS_RENEW = timedelta(minutes=10)

_MAX_CACHED_SIZES = 10_000
_COPY_STATUS = {status.value: status for status in CopyStatus}


def _md5_of(props: AzureBlobProperties) -> bytes | None:
    md5 = props.content_settings.content_md5 if props.content_settings else None
    return bytes(md5) if md5 else None


@dataclass(frozen=True)
class AccountAccess:
    """How to reach one storage account: exactly one of a connection string or a token credential.

    :param name: the storage account's name.
    :param blob_endpoint: its blob service URL (``https://<name>.blob.core.windows.net``).
    :param connection_string: an account-key connection string (Azurite, key-enabled accounts).
    :param credential: an async token credential, such as ``DefaultAzureCredential`` from
        ``azure.identity.aio``; the caller owns it and closes it.
    """

    name: str
    blob_endpoint: str
    connection_string: str | None = field(default=None, repr=False)  # holds the account key
    credential: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if (self.connection_string is None) == (self.credential is None):
            raise ValueError(
                f"account '{self.name}': give exactly one of connection_string and credential"
            )
        if self.connection_string is not None and _account_key(self.connection_string) is None:
            raise ValueError(f"account '{self.name}': the connection string has no AccountKey")

    @classmethod
    def from_connection_string(cls, connection_string: str) -> AccountAccess:
        """Access by account key; name and blob endpoint are read from the string."""
        parts = _conn_parts(connection_string)
        name = parts.get("accountname")
        if not name:
            raise ValueError("the connection string has no AccountName")
        endpoint = parts.get("blobendpoint") or (
            f"{parts.get('defaultendpointsprotocol', 'https')}://{name}.blob."
            f"{parts.get('endpointsuffix', 'core.windows.net')}"
        )
        return cls(name, endpoint.rstrip("/"), connection_string=connection_string)

    @classmethod
    def with_credential(
        cls, name: str, credential: Any, blob_endpoint: str | None = None
    ) -> AccountAccess:
        """Access by Entra ID token.

        The identity needs *Storage Blob Data Contributor* on accounts it writes to, and on copy
        sources a role that may read blobs and get a user delegation key (*Storage Blob Data
        Reader* or above): the copy's SAS is signed with that key and reads with those rights.
        """
        endpoint = blob_endpoint or f"https://{name}.blob.core.windows.net"
        return cls(name, endpoint.rstrip("/"), credential=credential)

    @property
    def account_key(self) -> str | None:
        return None if self.connection_string is None else _account_key(self.connection_string)


Accounts = Callable[[str], AccountAccess] | Mapping[str, AccountAccess]

#: The transport's settings for a blob client, unless the caller chose others (the proxy and
#: ``use_env_settings`` come with the options, see .proxies; the timeouts are every client's).
_TRANSPORT_DEFAULTS = {"connection_data_block_size": 256 * 1024}


@dataclass
class _LoopClients:
    """The clients opened in one event loop, and the generator that closes them when it ends."""

    clients: dict[str, BlobServiceClient] = field(default_factory=dict)
    # A blob's client, kept: making one builds the SDK's serializers anew (a few % of a worker's
    # CPU when made per call), and a target's blob is called several times.
    blobs: dict[BlobRef, BlobClient] = field(default_factory=dict)
    closer: AsyncGenerator[None, None] | None = None


class AzureBlobStore(BlobStore):
    """The :class:`~imagedist.abc.BlobStore` port on Azure Storage (and Azurite).

    :param accounts: the access to each account, as a mapping or a function of the account name
        (raising ``KeyError`` for an unknown account).
    :param retry_total: retries of a failed request (connection errors, 408, 5xx), by the SDK.
    :param initial_backoff: seconds before the first retry.
    :param increment_base: later retries wait ``initial_backoff + increment_base ** n`` seconds.
    :param client_options: more keyword arguments for each ``BlobServiceClient`` (timeouts,
        ``logging_enable``...).
    :param wrap_transport: given the transport each new client would use, returns the one it
        uses instead (a test double in front of the real one); called once per client, as
        clients belong to one event loop.

    Clients belong to the event loop that made them. Used from another loop (successive
    ``asyncio.run`` calls, say), the adapter opens new ones there, and closes each loop's clients
    when that loop shuts down its async generators, as ``asyncio.run`` does, unless :meth:`aclose`
    did first.
    """

    def __init__(
        self,
        accounts: Accounts,
        *,
        retry_total: int = 5,
        initial_backoff: int = 2,
        increment_base: int = 4,
        client_options: Mapping[str, Any] | None = None,
        wrap_transport: Callable[[Any], Any] | None = None,
    ) -> None:
        self._accounts = accounts
        self._wrap_transport = wrap_transport
        self._options: dict[str, Any] = {
            "retry_total": retry_total,
            "initial_backoff": initial_backoff,
            "increment_base": increment_base,
            "random_jitter_range": 1,
            **(client_options or {}),
        }
        self._loops: dict[asyncio.AbstractEventLoop, _LoopClients] = {}
        # Read once for the clients of every account (see .proxies).
        self._proxies = getproxies_environment()
        # Sizes of blobs as last seen, so that writes are checked without a request each.
        self._sizes: dict[BlobRef, int] = {}
        # Read-SAS URLs of range-copy sources and when they expire; held in memory only.
        self._range_sources: dict[BlobRef, tuple[str, datetime]] = {}
        # Written bytes of copy sources, which size a copy's SAS lifetime: a source serves many
        # copies and does not change while it does, so its pages are listed once, not per copy;
        # a copy's destination is known to hold what its source held.
        self._occupied: dict[BlobRef, int] = {}

    # -- the port ---------------------------------------------------------------------------------

    async def ensure_container(self, account: str, container: str) -> None:
        service = await self._service(account)
        try:
            with translate_errors(f"create container '{account}/{container}'"):
                await service.create_container(container)
        except Conflict:
            pass  # it exists (or is being deleted, which the next call will tell)

    async def container_exists(self, account: str, container: str) -> bool:
        service = await self._service(account)
        with translate_errors(f"read container '{account}/{container}'"):
            return bool(await service.get_container_client(container).exists())

    async def create_page_blob(self, ref: BlobRef, size: int, *, overwrite: bool = False) -> None:
        if size <= 0 or size % PAGE:
            raise ValueError(f"page blob size must be a positive multiple of {PAGE}, not {size}")
        blob = await self._blob(ref)
        operation = f"create page blob '{ref}'"
        if overwrite:
            self._forget(ref)
            with translate_errors(operation):
                await blob.create_page_blob(size)
            self._sizes[ref] = size
            return
        try:
            with translate_errors(operation):
                await blob.create_page_blob(size, if_none_match="*")
            self._sizes[ref] = size
            return
        except Conflict:
            pass  # it exists: keep it if it is the same page blob, so an upload can resume
        existing = await self._raw_properties(ref)
        if existing.blob_type != BlobType.PAGEBLOB:
            raise Conflict(f"blob '{ref}' exists and is not a page blob")
        if existing.size != size:
            raise Conflict(f"blob '{ref}' exists with size {existing.size}, not {size}")

    async def write_pages(self, ref: BlobRef, offset: int, data: bytes) -> None:
        length = len(data)
        if offset < 0 or offset % PAGE or length % PAGE or length == 0:
            raise ValueError(f"offset {offset} and length {length} must be multiples of {PAGE} > 0")
        blob = await self._blob(ref)
        # Check the range here: Azurite takes a write running past the end, and a write of several
        # requests must not land its first ones before a later one is refused.
        size = self._sizes.get(ref)
        if size is None or offset + length > size:
            size = (await self._raw_properties(ref)).size  # unknown, or maybe grown since
        if offset + length > size:
            raise ValueError(f"range {offset}+{length} is outside the blob of {size} bytes")
        self._occupied.pop(ref, None)  # its pages change
        view = memoryview(data)
        for start in range(0, length, MAX_PUT_PAGE):
            chunk = bytes(view[start : start + MAX_PUT_PAGE])
            at = offset + start
            with translate_errors(
                f"write {len(chunk)} bytes at {at} to blob '{ref}'",
                {416: ValueError, "InvalidPageRange": ValueError},  # past the end of the blob
            ):
                await blob.upload_page(chunk, offset=at, length=len(chunk))

    async def read(self, ref: BlobRef, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise ValueError(f"range {offset}+{length} is invalid")
        blob = await self._blob(ref)
        if length == 0:
            size = (await self._raw_properties(ref)).size
            if offset > size:
                raise ValueError(f"range {offset}+0 is outside the blob of {size} bytes")
            return b""
        with translate_errors(
            f"read {length} bytes at {offset} from blob '{ref}'",
            {416: ValueError, "InvalidRange": ValueError},
        ):
            stream = await blob.download_blob(offset=offset, length=length, max_concurrency=4)
            data = await stream.readall()
        if len(data) != length:  # Azure serves a range that runs past the end up to the end
            raise ValueError(f"range {offset}+{length} runs past the end of blob '{ref}'")
        return data

    async def page_ranges(self, ref: BlobRef) -> list[tuple[int, int]]:
        blob = await self._blob(ref)
        ranges: list[tuple[int, int]] = []
        with translate_errors(f"list the page ranges of blob '{ref}'"):
            async for page_range in blob.list_page_ranges():
                start, end = page_range.start, page_range.end
                if not page_range.cleared and start is not None and end is not None:
                    ranges.append((start, end + 1))  # Azure's end is inclusive
        return _merge(ranges)

    async def get_properties(self, ref: BlobRef) -> BlobProperties:
        props = await self._raw_properties(ref)
        copy = props.copy
        status = _COPY_STATUS.get(str(copy.status or "").lower(), CopyStatus.NONE)
        if status is CopyStatus.NONE:
            return BlobProperties(
                ref=ref,
                size=props.size,
                metadata=dict(props.metadata or {}),
                content_md5=_md5_of(props),
            )
        progress, total = _parse_progress(copy.progress)
        source = parse_copy_source(copy.source or "")
        return BlobProperties(
            ref=ref,
            size=props.size,
            copy_status=status,
            copy_id=copy.id or "",
            copy_source=source,
            copy_progress=progress,
            copy_total=total,
            copy_error=_copy_error(status, source, ref, copy.status_description or ""),
            metadata=dict(props.metadata or {}),
            content_md5=_md5_of(props),
        )

    async def set_content_md5(self, ref: BlobRef, md5: bytes) -> None:
        blob = await self._blob(ref)
        with translate_errors(f"set the Content-MD5 of blob '{ref}'"):
            await blob.set_http_headers(ContentSettings(content_md5=bytearray(md5)))

    async def set_metadata(self, ref: BlobRef, metadata: dict[str, str]) -> None:
        blob = await self._blob(ref)
        with translate_errors(f"set the metadata of blob '{ref}'"):
            await blob.set_blob_metadata(dict(metadata))

    async def start_copy(self, source: BlobRef, dest: BlobRef) -> str:
        if source == dest:
            raise ValueError(f"cannot copy blob '{source}' onto itself")
        occupied = await self._occupied_bytes(source)
        source_url = await self._read_sas_url(source, copy_access_lifetime(occupied))
        blob = await self._blob(dest)
        self._forget(dest)  # the copy gives it the source's size and pages
        # The message names blobs, never the URL: it carries the SAS.
        with translate_errors(f"start a copy of blob '{source}' into '{dest}'"):
            result = await blob.start_copy_from_url(source_url)
        # The copy will hold the source's pages: when it serves copies in turn (a region filled
        # from its own finished copies), its pages need no listing either.
        self._occupied[dest] = occupied
        return str(result["copy_id"])

    async def start_copy_from_url(self, source: SecretUrl, dest: BlobRef) -> str:
        blob = await self._blob(dest)
        self._forget(dest)  # the copy gives it the source's size and pages
        operation = f"start a copy from an access URL into blob '{dest}'"
        # The message names the destination only, and the SDK's own errors (which may quote the
        # URL) are replaced: the URL carries the SAS.
        try:
            with translate_errors(operation):
                result = await blob.start_copy_from_url(source.reveal())
        except (ValueError, TypeError) as exc:
            raise OperationFailed(
                f"{operation} failed: the SDK refused the URL ({type(exc).__name__})",
                code="InvalidCopySource",
            ) from None
        return str(result["copy_id"])

    copy_range_bytes = MAX_PUT_PAGE
    ranged_copy_faster = True

    async def copy_range(self, source: BlobRef, dest: BlobRef, offset: int, length: int) -> None:
        if source == dest:
            raise ValueError(f"cannot copy blob '{source}' onto itself")
        if offset < 0 or offset % PAGE or length % PAGE or not 0 < length <= MAX_PUT_PAGE:
            raise ValueError(
                f"a range copy takes a 512-aligned range of at most {MAX_PUT_PAGE} bytes,"
                f" not {offset}+{length}"
            )
        source_url = await self._range_source_url(source)
        blob = await self._blob(dest)
        # The message names blobs, never the URL: it carries the SAS. No SDK retry: a 503 goes
        # to the engine's pacer, which slows this blob's ranges down instead of hammering it.
        with translate_errors(
            f"copy range {offset}+{length} of blob '{source}' into '{dest}'",
            {
                416: ValueError,
                "InvalidPageRange": ValueError,
                # Azurite, and any service without Put Page From URL: the port's own refusal.
                501: lambda message: OperationFailed(message, code=RANGED_COPY_UNSUPPORTED),
            },
        ):
            await blob.upload_pages_from_url(
                source_url, offset=offset, length=length, source_offset=offset, retry_total=0
            )

    async def _range_source_url(self, source: BlobRef) -> str:
        """A read SAS for the source, reused by its range copies while it has time left (a
        user-delegation SAS costs a request to make)."""
        now = datetime.now(UTC)
        cached = self._range_sources.get(source)
        if cached is not None and cached[1] - now > RANGE_SAS_RENEW:
            return cached[0]
        url = await self._read_sas_url(source, RANGE_SAS_LIFETIME)
        if len(self._range_sources) >= _MAX_CACHED_SIZES:
            self._range_sources.clear()
        self._range_sources[source] = (url, now + RANGE_SAS_LIFETIME)
        return url

    async def abort_copy(self, dest: BlobRef, copy_id: str) -> None:
        blob = await self._blob(dest)
        with translate_errors(
            f"abort copy '{copy_id}' into blob '{dest}'",
            # The port says NotFound when no such copy is pending; Azure says 409.
            {"NoPendingCopyOperation": NotFound, "CopyIdMismatch": NotFound},
        ):
            await blob.abort_copy(copy_id)

    async def delete_blob(self, ref: BlobRef) -> bool:
        blob = await self._blob(ref)
        self._forget(ref)
        try:
            with translate_errors(f"delete blob '{ref}'"):
                await blob.delete_blob(delete_snapshots="include")
        except NotFound:
            return False
        return True

    async def list_blobs(self, account: str, container: str, prefix: str = "") -> list[str]:
        client = (await self._service(account)).get_container_client(container)
        names: list[str] = []
        try:
            with translate_errors(f"list the blobs of container '{account}/{container}'"):
                async for item in client.list_blobs(name_starts_with=prefix or None):
                    names.append(item.name)
        except NotFound:
            return []  # no container, no blobs
        return sorted(names)

    async def aclose(self) -> None:
        loop = asyncio.get_running_loop()
        for other in [other for other in self._loops if other.is_closed()]:
            del self._loops[other]  # closed without shutting down its generators: nothing to do
        entry = self._loops.get(loop)
        if entry is not None and entry.closer is not None:
            await entry.closer.aclose()  # runs _close_at_shutdown's finally

    # -- clients ----------------------------------------------------------------------------------

    def _access(self, account: str) -> AccountAccess:
        try:
            if isinstance(self._accounts, Mapping):
                access = self._accounts[account]
            else:
                access = self._accounts(account)
        except KeyError:
            raise NotFound(f"storage account '{account}' is not configured") from None
        if access.name != account:
            raise ValueError(f"the access for account '{account}' names account '{access.name}'")
        return access

    async def _service(self, account: str) -> BlobServiceClient:
        loop = asyncio.get_running_loop()
        entry = self._loops.get(loop)
        if entry is None:
            entry = self._loops[loop] = _LoopClients()
            closer = self._close_at_shutdown(loop, entry)
            await closer.__anext__()  # registers it with the loop, which closes it at shutdown
            entry.closer = closer
        client = entry.clients.get(account)
        if client is None:
            client = entry.clients[account] = self._new_client(self._access(account))
        return client

    def _new_client(self, access: AccountAccess) -> BlobServiceClient:
        options = {**proxy_options(access.blob_endpoint, self._proxies), **self._options}
        options = with_transport(options, _TRANSPORT_DEFAULTS)
        if self._wrap_transport is not None:
            options["transport"] = self._wrap_transport(options["transport"])
        if access.connection_string is not None:
            return BlobServiceClient.from_connection_string(access.connection_string, **options)
        return BlobServiceClient(access.blob_endpoint, credential=access.credential, **options)

    async def _close_at_shutdown(
        self, loop: asyncio.AbstractEventLoop, entry: _LoopClients
    ) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            if self._loops.get(loop) is entry:
                del self._loops[loop]
            clients, entry.clients = list(entry.clients.values()), {}
            entry.blobs = {}  # they share their service client's transport, closed here
            for client in clients:
                await client.close()

    async def _blob(self, ref: BlobRef) -> BlobClient:
        service = await self._service(ref.account)
        blobs = self._loops[asyncio.get_running_loop()].blobs
        blob = blobs.get(ref)
        if blob is None:
            if len(blobs) >= _MAX_CACHED_SIZES:
                blobs.clear()  # only a shortcut: a forgotten client is made again
            blob = blobs[ref] = service.get_blob_client(ref.container, ref.name)
        return blob

    async def _occupied_bytes(self, source: BlobRef) -> int:
        occupied = self._occupied.get(source)
        if occupied is None:
            occupied = sum(end - start for start, end in await self.page_ranges(source))
            if len(self._occupied) >= _MAX_CACHED_SIZES:
                self._occupied.clear()  # only a shortcut: a forgotten source is listed again
            self._occupied[source] = occupied
        return occupied

    def _forget(self, ref: BlobRef) -> None:
        """What this instance remembers of a blob that is being replaced or deleted."""
        self._sizes.pop(ref, None)
        self._occupied.pop(ref, None)

    async def _raw_properties(self, ref: BlobRef) -> AzureBlobProperties:
        blob = await self._blob(ref)
        with translate_errors(f"get the properties of blob '{ref}'"):
            try:
                props = await blob.get_blob_properties()
            except Exception:
                self._sizes.pop(ref, None)
                raise
        if len(self._sizes) >= _MAX_CACHED_SIZES:
            self._sizes.clear()  # only a shortcut: a forgotten size is fetched again
        self._sizes[ref] = props.size
        return props

    async def _read_sas_url(self, ref: BlobRef, lifetime: timedelta) -> str:
        """The source's URL with a read-only SAS for that one blob, valid for ``lifetime``."""
        access = self._access(ref.account)
        service = await self._service(ref.account)
        now = datetime.now(UTC)
        start, expiry = now - CLOCK_SKEW, now + lifetime
        blob = await self._blob(ref)
        protocol = "https" if blob.url.lower().startswith("https:") else None
        if access.account_key is not None:
            sas = generate_blob_sas(
                access.name,
                ref.container,
                ref.name,
                account_key=access.account_key,
                permission=BlobSasPermissions(read=True),
                start=start,
                expiry=expiry,
                protocol=protocol,
            )
        else:
            with translate_errors(f"get a user delegation key for account '{ref.account}'"):
                key = await service.get_user_delegation_key(start, expiry)
            sas = generate_blob_sas(
                access.name,
                ref.container,
                ref.name,
                user_delegation_key=key,
                permission=BlobSasPermissions(read=True),
                start=start,
                expiry=expiry,
                protocol=protocol,
            )
        return f"{blob.url}?{sas}"


# -- helpers --------------------------------------------------------------------------------------


def _conn_parts(connection_string: str) -> dict[str, str]:
    parts: dict[str, str] = {}
    for item in connection_string.split(";"):
        key, sep, value = item.partition("=")
        if sep:
            parts[key.strip().lower()] = value.strip()
    return parts


def _account_key(connection_string: str) -> str | None:
    return _conn_parts(connection_string).get("accountkey") or None


def _merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(ranges):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _copy_error(status: CopyStatus, source: str, dest: BlobRef, description: str) -> str:
    """What went wrong with a copy, naming both blobs.

    Azure's ``x-ms-copy-status-description`` (``500 InternalServerError "Copy failed."``) says
    neither which source nor which destination, and a log line needs both.
    """
    if status not in (CopyStatus.FAILED, CopyStatus.ABORTED):
        return redact(description)  # a pending copy's description is a non-fatal retry
    ended = f"the copy of '{source or 'an unknown source'}' into '{dest}' {status.value}"
    return f"{ended}: {redact(description)}" if description else ended


def _parse_progress(progress: str | None) -> tuple[int, int]:
    """Azure's ``x-ms-copy-progress``, ``"<bytes copied>/<bytes total>"``."""
    copied, _, total = (progress or "").partition("/")
    try:
        return int(copied), int(total)
    except ValueError:
        return 0, 0


def _is_path_style(host: str) -> bool:
    """Whether URLs on ``host`` name the account in the path (emulator, IP) or the host name."""
    if host == "localhost":
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def parse_copy_source(url: str) -> str:
    """``"account/container/name"`` of a copy source URL, without its query; ``""`` if unknown.

    ``https://acct.blob.core.windows.net/c/a/b.vhd?sv=...`` and Azurite's
    ``http://127.0.0.1:10000/acct/c/a/b.vhd?sv=...`` both give ``acct/c/a/b.vhd``.
    """
    if not url:
        return ""
    parts = urlsplit(url)
    host = parts.hostname or ""
    path = parts.path.lstrip("/")
    if not _is_path_style(host):
        path = f"{host.split('.')[0]}/{path}"
    segments = path.split("/", 2)
    if len(segments) < 3 or not all(segments):
        return redact(url)  # not a blob URL we understand; still never a secret
    return "/".join(unquote(segment) for segment in segments)
