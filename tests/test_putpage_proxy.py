"""The Put Page From URL test proxy answers and refuses as Azure does (tests/putpage_proxy.py)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from azure.core.exceptions import HttpResponseError
from azure.core.rest import HttpRequest
from azure.storage.blob import BlobClient, BlobSasPermissions, ContainerClient, generate_blob_sas

from azurite import AzuriteServer
from imagedist._backends.azure.errors import error_code, retry_after
from putpage_proxy import ProxySettings, PutPageProxy

from helpers import pattern

MiB = 1024 * 1024
ACCOUNT, OTHER = "stagingacct", "targetacct"


@pytest.fixture
def proxy(azurite_server: AzuriteServer) -> Iterator[PutPageProxy]:
    with PutPageProxy(azurite_server) as running:
        yield running


@pytest.fixture
def container() -> str:
    return f"p{uuid.uuid4().hex[:10]}"


def client(proxy: PutPageProxy, account: str, container: str, name: str) -> BlobClient:
    return BlobClient.from_connection_string(
        proxy.connection_string(account), container, name, retry_total=0
    )


def make_source(proxy: PutPageProxy, container: str) -> tuple[BlobClient, bytes]:
    for account in (ACCOUNT, OTHER):
        conn = proxy.connection_string(account)
        with ContainerClient.from_connection_string(conn, container) as made:
            if not made.exists():
                made.create_container()
    source = client(proxy, ACCOUNT, container, "source.vhd")
    data = pattern(MiB)
    source.create_page_blob(8 * MiB)
    source.upload_page(data, offset=MiB, length=MiB)
    dest = client(proxy, OTHER, container, "dest.vhd")
    dest.create_page_blob(8 * MiB)
    return source, data


def sas_url(
    azurite: AzuriteServer,
    proxy: PutPageProxy,
    container: str,
    name: str,
    *,
    expiry: timedelta = timedelta(hours=1),
    scoped_to: str | None = None,
) -> str:
    now = datetime.now(UTC)
    sas = generate_blob_sas(
        ACCOUNT,
        container,
        scoped_to or name,
        account_key=azurite.key(ACCOUNT),
        permission=BlobSasPermissions(read=True),
        start=now - timedelta(hours=2),
        expiry=now + expiry,
    )
    return f"{proxy.blob_endpoint(ACCOUNT)}/{container}/{name}?{sas}"


def test_a_range_is_copied_with_the_headers_azure_returns(
    proxy: PutPageProxy, azurite_server: AzuriteServer, container: str
) -> None:
    _, data = make_source(proxy, container)
    dest = client(proxy, OTHER, container, "dest.vhd")
    url = sas_url(azurite_server, proxy, container, "source.vhd")

    result = dest.upload_pages_from_url(url, offset=2 * MiB, length=MiB, source_offset=MiB)

    assert dest.download_blob(offset=2 * MiB, length=MiB).readall() == data
    assert result["etag"] and result["last_modified"] is not None
    assert result["blob_sequence_number"] == 0
    assert result["request_server_encrypted"] is True
    assert [(c.offset, c.length, c.status) for c in proxy.range_calls()] == [(2 * MiB, MiB, 201)]


@pytest.mark.parametrize(
    ("expiry", "scoped_to", "status"),
    [
        pytest.param(timedelta(hours=-1), None, 403, id="expired-sas"),
        pytest.param(timedelta(hours=1), "dest.vhd", 403, id="wrong-scope-sas"),
    ],
)
def test_a_source_azurite_refuses_is_cannot_verify_copy_source(
    proxy: PutPageProxy,
    azurite_server: AzuriteServer,
    container: str,
    expiry: timedelta,
    scoped_to: str | None,
    status: int,
) -> None:
    make_source(proxy, container)
    dest = client(proxy, OTHER, container, "dest.vhd")
    url = sas_url(
        azurite_server, proxy, container, "source.vhd", expiry=expiry, scoped_to=scoped_to
    )

    with pytest.raises(HttpResponseError) as caught:
        dest.upload_pages_from_url(url, offset=0, length=MiB, source_offset=MiB)

    assert caught.value.status_code == status
    assert error_code(caught.value) == "CannotVerifyCopySource"
    assert dest.download_blob(offset=0, length=MiB).readall() == bytes(MiB)


def test_a_missing_source_is_cannot_verify_copy_source_404(
    proxy: PutPageProxy, azurite_server: AzuriteServer, container: str
) -> None:
    make_source(proxy, container)
    dest = client(proxy, OTHER, container, "dest.vhd")
    url = sas_url(azurite_server, proxy, container, "gone.vhd")

    with pytest.raises(HttpResponseError) as caught:
        dest.upload_pages_from_url(url, offset=0, length=MiB, source_offset=0)

    assert (caught.value.status_code, error_code(caught.value)) == (404, "CannotVerifyCopySource")


def test_a_caller_azurite_refuses_is_refused(
    proxy: PutPageProxy, azurite_server: AzuriteServer, container: str
) -> None:
    make_source(proxy, container)
    key = azurite_server.key(OTHER)
    wrong = proxy.connection_string(OTHER).replace(key, "QUJD" + key[4:])
    dest = BlobClient.from_connection_string(wrong, container, "dest.vhd", retry_total=0)
    url = sas_url(azurite_server, proxy, container, "source.vhd")

    with pytest.raises(HttpResponseError) as caught:
        dest.upload_pages_from_url(url, offset=0, length=MiB, source_offset=MiB)

    assert caught.value.status_code == 403
    assert proxy.range_calls(None) == []  # refused before the proxy did anything


def raw_put_page_from_url(
    proxy: PutPageProxy, azurite: AzuriteServer, container: str, headers: dict[str, str]
) -> tuple[int, str]:
    """A Put Page From URL by hand (the SDK never sends a bad range), signed by the SDK's own
    pipeline with the account key (Azurite answers this operation 500 under a SAS)."""
    dest = client(proxy, OTHER, container, "dest.vhd")
    sent = {
        "x-ms-version": "2021-08-06",
        "x-ms-page-write": "update",
        "x-ms-copy-source": sas_url(azurite, proxy, container, "source.vhd"),
        "content-length": "0",
        **headers,
    }
    request = HttpRequest("PUT", f"{dest.url}?comp=page", headers=sent)
    with dest:
        response = dest._client._send_request(request)
    return response.status_code, response.headers.get("x-ms-error-code", "")


@pytest.mark.parametrize(
    ("headers", "answer"),
    [
        pytest.param(
            {"x-ms-range": "bytes=0-511", "x-ms-source-range": "bytes=0-1023"},
            (400, "InvalidHeaderValue"),
            id="lengths-differ",
        ),
        pytest.param(
            {"x-ms-range": "bytes=100-611", "x-ms-source-range": "bytes=0-511"},
            (416, "InvalidPageRange"),
            id="misaligned",
        ),
        pytest.param(
            {"x-ms-range": f"bytes=0-{8 * MiB - 1}", "x-ms-source-range": f"bytes=0-{8 * MiB - 1}"},
            (413, "RequestBodyTooLarge"),
            id="over-4-MiB",
        ),
        pytest.param(
            {
                "x-ms-range": "bytes=0-511",
                "x-ms-source-range": "bytes=0-511",
                "x-ms-page-write": "clear",
            },
            (400, "InvalidHeaderValue"),
            id="not-update",
        ),
    ],
)
def test_bad_headers_are_refused_as_azure_refuses_them(
    proxy: PutPageProxy,
    azurite_server: AzuriteServer,
    container: str,
    headers: dict[str, str],
    answer: tuple[int, str],
) -> None:
    make_source(proxy, container)
    assert raw_put_page_from_url(proxy, azurite_server, container, headers) == answer


def test_injected_server_busy_answers_503_with_azures_error(
    proxy: PutPageProxy, azurite_server: AzuriteServer, container: str
) -> None:
    make_source(proxy, container)
    proxy.settings = ProxySettings(busy_next=1, retry_after=3)
    dest = client(proxy, OTHER, container, "dest.vhd")
    url = sas_url(azurite_server, proxy, container, "source.vhd")

    with pytest.raises(HttpResponseError) as caught:
        dest.upload_pages_from_url(url, offset=0, length=MiB, source_offset=MiB)
    assert (caught.value.status_code, error_code(caught.value)) == (503, "ServerBusy")
    assert retry_after(caught.value) == 3

    dest.upload_pages_from_url(url, offset=0, length=MiB, source_offset=MiB)  # the next one lands
    assert [c.status for c in proxy.range_calls(None)] == [503, 201]
