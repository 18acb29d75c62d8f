"""The Azure blob adapter beyond the port's contract: SAS sizing and secrecy, error translation.

The contract itself runs against Azurite in ``tests/contract`` (the ``azure`` param); the tests here
that need a server use the same session-wide Azurite and skip when it is not installed.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.storage.blob import BlobServiceClient as SyncBlobServiceClient
from azure.storage.blob import UserDelegationKey, generate_blob_sas
from azure.storage.blob.aio import BlobClient, BlobServiceClient

import azurite
from azurite import AzuriteServer
from imagedist._backends.azure import blobs as _azure_blobs
from imagedist._backends.azure.blobs import (
    AccountAccess,
    AzureBlobStore,
    parse_copy_source,
)
from imagedist._backends.azure.errors import redact, retry_after, translate_errors
from imagedist._domain import BlobRef
from imagedist._domain.access import copy_access_lifetime
from imagedist._exceptions import (
    AuthFailed,
    Conflict,
    NotFound,
    OperationFailed,
    PreconditionFailed,
    TransientError,
)
from imagedist.abc import CopyStatus

MiB = 1024 * 1024
SIG = "aemJpX/qCd1bkI6/DjBDBTFS/gNoxLZljr5RLQeUvV0%3D"
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


# -- copy_access_lifetime ---------------------------------------------------------------------------------


def test_copy_access_lifetime_is_the_copy_at_4_mb_per_second_plus_an_hour() -> None:
    assert copy_access_lifetime(4_000_000 * 3600) == timedelta(hours=2)
    assert copy_access_lifetime(30 * 1024**3) == timedelta(seconds=8054) + timedelta(hours=1)
    assert copy_access_lifetime(1) == timedelta(hours=1, seconds=1)  # rounded up to the second


def test_copy_access_lifetime_is_at_least_an_hour_and_at_most_seven_days() -> None:
    assert copy_access_lifetime(0) == timedelta(hours=1)
    assert copy_access_lifetime(4_000_000 * 86400 * 7) == timedelta(days=7)
    assert copy_access_lifetime(2**60) == timedelta(days=7)
    with pytest.raises(ValueError):
        copy_access_lifetime(-1)


def test_copy_access_lifetime_grows_with_the_data() -> None:
    sizes = [0, MiB, 10**9, 10**10, 10**11, 10**12, 10**13]
    lifetimes = [copy_access_lifetime(size) for size in sizes]
    assert lifetimes == sorted(lifetimes)


# -- redact ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            f"copy from https://acct.blob.core.windows.net/c/disk.vhd?sv=2024&sp=r&sig={SIG} failed",
            "copy from https://acct.blob.core.windows.net/c/disk.vhd failed",
        ),
        (
            f"source 'http://127.0.0.1:10000/acct/c/d.vhd?se=x&sig={SIG}'.",
            "source 'http://127.0.0.1:10000/acct/c/d.vhd'.",
        ),
        (f"token sv=2024&sr=b&sig={SIG}&sp=r", "token sv=2024&sr=b&sig=REDACTED&sp=r"),
        (
            f"DefaultEndpointsProtocol=http;AccountName=a;AccountKey={KEY};BlobEndpoint=x;",
            "DefaultEndpointsProtocol=http;AccountName=a;AccountKey=REDACTED;BlobEndpoint=x;",
        ),
        (f"SharedAccessSignature=sv=1&sig={SIG};", "SharedAccessSignature=REDACTED;"),
        (f"Authorization: SharedKey acct:{SIG}", "Authorization: SharedKey acct:REDACTED"),
        ("Authorization: Bearer eyJ0eXAi.eyJhdWQi.c2lnbmF0", "Authorization: Bearer REDACTED"),
        (
            "blob https://acct.blob.core.windows.net/c/d.vhd",
            "blob https://acct.blob.core.windows.net/c/d.vhd",
        ),
        (
            "nothing secret here (HTTP 404, BlobNotFound)",
            "nothing secret here (HTTP 404, BlobNotFound)",
        ),
    ],
)
def test_redact_drops_queries_signatures_and_keys(text: str, expected: str) -> None:
    assert redact(text) == expected
    assert SIG not in redact(text) and KEY not in redact(text)


# -- translate_errors -----------------------------------------------------------------------------


class FakeResponse:
    """Just enough of an azure-core HTTP response for its exceptions."""

    def __init__(self, status: int, headers: dict[str, str] | None = None) -> None:
        self.status_code = status
        self.reason = "Reason"
        self.headers = headers or {}
        self.request = None
        self.content_type = "application/xml"

    def text(self, encoding: str | None = None) -> str:
        return ""

    def body(self) -> bytes:
        return b""


def http_error(
    cls: type[HttpResponseError],
    status: int,
    code: str = "",
    headers: dict[str, str] | None = None,
    message: str = "The service said no.\nRequestId:abc\nTime:now",
) -> HttpResponseError:
    exc = cls(message=message, response=FakeResponse(status, headers))
    exc.error_code = code or None  # type: ignore[attr-defined]  # the storage SDK sets it so too
    return exc


def translated(exc: Exception, overrides: Any = None) -> Exception:
    with pytest.raises(Exception) as info, translate_errors("read blob 'a/c/d.vhd'", overrides):
        raise exc
    assert info.value.__cause__ is exc
    return info.value


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (http_error(ResourceNotFoundError, 404, "BlobNotFound"), NotFound),
        (http_error(HttpResponseError, 404, "ContainerNotFound"), NotFound),
        (http_error(ResourceExistsError, 409, "BlobAlreadyExists"), Conflict),
        (http_error(HttpResponseError, 409, "PendingCopyOperation"), Conflict),
        (http_error(ResourceModifiedError, 412, "ConditionNotMet"), PreconditionFailed),
        (
            http_error(HttpResponseError, 412, "LeaseIdMismatchWithBlobOperation"),
            PreconditionFailed,
        ),
        (http_error(ClientAuthenticationError, 403, "AuthenticationFailed"), AuthFailed),
        (http_error(HttpResponseError, 401, "InvalidAuthenticationInfo"), AuthFailed),
        (http_error(HttpResponseError, 403, "AuthorizationPermissionMismatch"), AuthFailed),
        # the SDK's name for a refused copy source, though the source was there
        (http_error(ResourceNotFoundError, 403, "CannotVerifyCopySource"), AuthFailed),
        (ClientAuthenticationError("no credential found"), AuthFailed),
        (http_error(HttpResponseError, 429, "TooManyRequests"), TransientError),
        (http_error(HttpResponseError, 500, "InternalError"), TransientError),
        (http_error(HttpResponseError, 503, "ServerBusy"), TransientError),
        (ServiceRequestError("Cannot connect to host acct.blob.core.windows.net"), TransientError),
        (ServiceResponseError("Connection reset"), TransientError),
        (http_error(HttpResponseError, 400, "InvalidHeaderValue"), OperationFailed),
    ],
)
def test_azure_errors_become_ours(exc: Exception, expected: type[Exception]) -> None:
    ours = translated(exc)
    assert type(ours) is expected
    assert str(ours).startswith("read blob 'a/c/d.vhd' failed: ")
    code = getattr(exc, "error_code", None)
    if code:
        assert code in str(ours)
    assert "RequestId" not in str(ours)  # only the first line of Azure's message


def test_other_failures_keep_azure_s_error_code() -> None:
    ours = translated(http_error(HttpResponseError, 400, "InvalidBlobType"))
    assert isinstance(ours, OperationFailed)
    assert ours.code == "InvalidBlobType"
    assert "HTTP 400, InvalidBlobType" in str(ours)


def test_retry_after_is_read_from_the_headers() -> None:
    ours = translated(http_error(HttpResponseError, 503, "ServerBusy", {"Retry-After": "7"}))
    assert isinstance(ours, TransientError) and ours.retry_after == 7.0

    later = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    ours = translated(http_error(HttpResponseError, 429, "", {"Retry-After": later}))
    assert isinstance(ours, TransientError) and ours.retry_after
    assert 100 < ours.retry_after <= 120

    ours = translated(http_error(HttpResponseError, 500, "InternalError"))
    assert isinstance(ours, TransientError) and ours.retry_after is None

    exc = http_error(HttpResponseError, 429, "", {"retry-after-ms": "1500"})
    assert retry_after(exc) == 1.5
    assert retry_after(http_error(HttpResponseError, 429, "", {"Retry-After": "soon"})) is None


def test_overrides_come_first() -> None:
    overrides = {"NoPendingCopyOperation": NotFound, 416: ValueError}
    assert isinstance(
        translated(http_error(ResourceExistsError, 409, "NoPendingCopyOperation"), overrides),
        NotFound,
    )
    assert isinstance(translated(http_error(HttpResponseError, 416, ""), overrides), ValueError)
    assert isinstance(
        translated(http_error(ResourceExistsError, 409, "PendingCopyOperation"), overrides),
        Conflict,
    )


def test_messages_never_carry_a_sas_or_key() -> None:
    message = (
        f"Copy source https://acct.blob.core.windows.net/c/d.vhd?sv=1&sig={SIG} refused; "
        f"AccountKey={KEY}"
    )
    ours = translated(http_error(HttpResponseError, 400, "CannotVerifyCopySource", message=message))
    assert SIG not in str(ours) and KEY not in str(ours) and "?" not in str(ours)
    ours = translated(ServiceRequestError(f"Cannot connect: http://h/a?sig={SIG}"))
    assert SIG not in str(ours)


def test_translate_errors_works_around_awaits_and_lets_other_errors_through() -> None:
    async def failing() -> None:
        await asyncio.sleep(0)
        raise http_error(ResourceNotFoundError, 404, "BlobNotFound")

    async def main() -> None:
        with translate_errors("get blob"):
            await failing()

    with pytest.raises(NotFound):
        asyncio.run(main())
    with pytest.raises(KeyError), translate_errors("look up"):
        raise KeyError("not an Azure error")


# -- account access and copy sources --------------------------------------------------------------


def test_account_access_from_a_connection_string_hides_the_key() -> None:
    conn = f"DefaultEndpointsProtocol=http;AccountName=acct;AccountKey={KEY};BlobEndpoint=http://127.0.0.1:10000/acct;"
    access = AccountAccess.from_connection_string(conn)
    assert (access.name, access.blob_endpoint, access.account_key) == (
        "acct",
        "http://127.0.0.1:10000/acct",
        KEY,
    )
    assert KEY not in repr(access)
    real = AccountAccess.from_connection_string(
        f"DefaultEndpointsProtocol=https;AccountName=prod;AccountKey={KEY};EndpointSuffix=core.windows.net"
    )
    assert real.blob_endpoint == "https://prod.blob.core.windows.net"


def test_account_access_needs_exactly_one_way_in() -> None:
    with pytest.raises(ValueError):
        AccountAccess("acct", "https://acct.blob.core.windows.net")
    with pytest.raises(ValueError):
        AccountAccess(
            "acct", "https://x", connection_string="AccountName=acct;", credential=object()
        )
    with pytest.raises(ValueError):
        AccountAccess("acct", "https://x", connection_string="AccountName=acct;")  # no key
    access = AccountAccess.with_credential("prod", credential=object())
    assert (access.blob_endpoint, access.account_key) == (
        "https://prod.blob.core.windows.net",
        None,
    )


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            f"https://acct.blob.core.windows.net/vhds/golden.vhd?sv=1&sig={SIG}",
            "acct/vhds/golden.vhd",
        ),
        (f"http://127.0.0.1:10000/acct/vhds/a/b%20c.vhd?sig={SIG}", "acct/vhds/a/b c.vhd"),
        ("http://localhost:10000/acct/vhds/golden.vhd", "acct/vhds/golden.vhd"),
        ("https://acct.privatelink.blob.core.windows.net/vhds/x/y.vhd", "acct/vhds/x/y.vhd"),
        ("", ""),
    ],
)
def test_copy_sources_are_account_container_name(url: str, expected: str) -> None:
    assert parse_copy_source(url) == expected


# -- against Azurite ------------------------------------------------------------------------------


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[AzuriteServer]:
    """The session's Azurite; the containers a test made (named ``t...``) are dropped after it."""
    running: AzuriteServer = request.getfixturevalue("azurite_server")
    yield running
    for name in running.accounts:
        conn = running.connection_string(name)
        with SyncBlobServiceClient.from_connection_string(conn) as svc:
            for container in svc.list_containers(name_starts_with="t"):
                svc.delete_container(container.name)


def accounts(server: AzuriteServer) -> dict[str, AccountAccess]:
    return {
        name: AccountAccess.from_connection_string(server.connection_string(name))
        for name in server.accounts
    }


async def two_blobs(store: AzureBlobStore) -> tuple[BlobRef, BlobRef]:
    src, dst = (
        BlobRef("stagingacct", "tvhds", "golden.vhd"),
        BlobRef("targetacct", "tvhds", "g.vhd"),
    )
    for account in (src.account, dst.account):
        await store.ensure_container(account, "tvhds")
    await store.create_page_blob(src, 4 * MiB)
    await store.write_pages(src, MiB, b"\x07" * MiB)
    return src, dst


def test_the_sas_of_a_copy_is_never_logged(
    server: AzuriteServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    # logging_enable: the SDK logs every request and response with its headers at DEBUG.
    store = AzureBlobStore(accounts(server), client_options={"logging_enable": True})

    async def main() -> str:
        src, dst = await two_blobs(store)
        copy_id = await store.start_copy(src, dst)
        props = await store.get_properties(dst)
        assert (props.copy_status, props.copy_id) == (CopyStatus.SUCCESS, copy_id)
        assert props.copy_source == str(src)  # no URL, no query
        await store.aclose()
        # What Azure stores as the copy source: the SAS URL we gave it.
        conn = server.connection_string(dst.account)
        async with BlobServiceClient.from_connection_string(conn) as raw:
            raw_props = await raw.get_blob_client(dst.container, dst.name).get_blob_properties()
        return str(raw_props.copy.source)

    source_url = asyncio.run(main())
    sig = parse_qs(urlsplit(source_url).query)["sig"][0]
    assert len(sig) > 20
    logged = caplog.text + "".join(str(r.args) for r in caplog.records)
    assert "x-ms-copy-source" in logged  # the header was logged, redacted
    assert "Request URL" in logged
    assert sig not in logged
    for key in server.keys:
        assert key not in logged


def test_a_refused_copy_source_is_auth_failed_without_the_sas(
    server: AzuriteServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    signed: list[str] = []
    real = generate_blob_sas

    def wrong_key(*args: Any, **kwargs: Any) -> str:
        kwargs["account_key"] = server.key("targetacct")  # not the source account's key
        sas = real(*args, **kwargs)
        signed.append(sas)
        return sas

    monkeypatch.setattr(_azure_blobs, "generate_blob_sas", wrong_key)
    store = AzureBlobStore(accounts(server))

    async def main() -> None:
        src, dst = await two_blobs(store)
        try:
            await store.start_copy(src, dst)
        finally:
            await store.aclose()

    with pytest.raises(AuthFailed) as info:
        asyncio.run(main())
    sig = parse_qs(signed[0])["sig"][0]
    assert "CannotVerifyCopySource" in str(info.value)
    assert sig not in str(info.value) and "?" not in str(info.value)


def test_the_sas_reads_one_blob_for_its_lifetime(server: AzuriteServer) -> None:
    store = AzureBlobStore(accounts(server))

    async def main() -> str:
        src, _ = await two_blobs(store)
        url = await store._read_sas_url(src, copy_access_lifetime(MiB))
        await store.aclose()
        return url

    before = datetime.now(UTC)
    url = asyncio.run(main())
    assert url.startswith(server.blob_endpoint("stagingacct") + "/tvhds/golden.vhd?")
    query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    assert (query["sp"], query["sr"]) == ("r", "b")
    expiry = datetime.fromisoformat(query["se"].replace("Z", "+00:00"))
    assert abs(expiry - (before + copy_access_lifetime(MiB))) < timedelta(minutes=1)
    assert "spr" not in query  # Azurite speaks http; real endpoints get spr=https


def test_a_token_credential_gets_a_user_delegation_sas(monkeypatch: pytest.MonkeyPatch) -> None:
    requested: list[tuple[datetime, datetime]] = []

    async def delegation_key(self: Any, start: datetime, expiry: datetime, **kw: Any) -> Any:
        requested.append((start, expiry))
        key = UserDelegationKey()
        key.signed_oid, key.signed_tid = "oid-1", "tid-1"
        key.signed_start, key.signed_expiry = "2026-01-01T00:00:00Z", "2026-01-08T00:00:00Z"
        key.signed_service, key.signed_version = "b", "2025-01-05"
        key.value = KEY
        return key

    monkeypatch.setattr(BlobServiceClient, "get_user_delegation_key", delegation_key)

    class Credential:
        async def get_token(self, *scopes: str, **kw: Any) -> Any:
            raise AssertionError("no request expected")

    store = AzureBlobStore({"prod": AccountAccess.with_credential("prod", Credential())})

    async def main() -> str:
        url = await store._read_sas_url(BlobRef("prod", "vhds", "g.vhd"), timedelta(hours=3))
        await store.aclose()
        return url

    url = asyncio.run(main())
    query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    assert url.startswith("https://prod.blob.core.windows.net/vhds/g.vhd?")
    assert (query["sp"], query["sr"], query["skoid"], query["spr"]) == ("r", "b", "oid-1", "https")
    ((start, expiry),) = requested
    assert timedelta(hours=3) < expiry - start <= timedelta(hours=3, minutes=16)


def test_big_writes_go_in_requests_of_at_most_4_mib(
    server: AzuriteServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    sizes: list[int] = []
    real = BlobClient.upload_page

    async def spy(self: BlobClient, page: bytes, offset: int, length: int, **kw: Any) -> Any:
        sizes.append(length)
        return await real(self, page, offset, length, **kw)

    monkeypatch.setattr(BlobClient, "upload_page", spy)
    store = AzureBlobStore(accounts(server))
    ref, data = BlobRef("stagingacct", "tbig", "big.vhd"), bytes(range(256)) * (9 * MiB // 256)

    async def main() -> tuple[bytes, list[tuple[int, int]]]:
        await store.ensure_container(ref.account, ref.container)
        await store.create_page_blob(ref, 12 * MiB)
        await store.write_pages(ref, MiB, data)
        with pytest.raises(ValueError):  # runs past the end: refused before any request
            await store.write_pages(ref, 8 * MiB, data)
        result = await store.read(ref, MiB, len(data)), await store.page_ranges(ref)
        await store.aclose()
        return result

    read, ranges = asyncio.run(main())
    assert sizes == [4 * MiB, 4 * MiB, MiB]
    assert read == data
    assert ranges == [(MiB, 10 * MiB)]


def test_clients_are_closed_when_their_event_loop_ends(server: AzuriteServer) -> None:
    store = AzureBlobStore(accounts(server))
    for _ in range(3):  # each asyncio.run is a new loop; no "unclosed session" warning may follow
        asyncio.run(store.ensure_container("stagingacct", "tloops"))
        assert store._loops == {}
    assert asyncio.run(store.list_blobs("stagingacct", "tloops")) == []


def test_an_unknown_account_is_not_found(server: AzuriteServer) -> None:
    store = AzureBlobStore(accounts(server))
    with pytest.raises(NotFound, match="nosuchacct"):
        asyncio.run(store.ensure_container("nosuchacct", "tvhds"))


# -- the Azurite helper ---------------------------------------------------------------------------


def test_without_azurite_the_helper_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(azurite.AzuriteNotInstalled, match="npm install -g azurite"):
        azurite.start_azurite()


def test_azurite_serves_every_account_with_its_own_key(server: AzuriteServer) -> None:
    assert set(server.accounts) >= {"stagingacct", "targetacct"}
    assert len(set(server.keys)) == len(server.keys)
    for name in server.accounts:
        with SyncBlobServiceClient.from_connection_string(server.connection_string(name)) as svc:
            svc.create_container("thelper")
            assert [c.name for c in svc.list_containers(name_starts_with="thelper")] == ["thelper"]
