"""The transport every Azure client sends through: with a CA bundle (``[azure] ca_bundle``),
connections are kept alive as with the system's CAs. azure-core's own transport makes a new TLS
context from the file for each request, and aiohttp never reuses a connection across contexts:
each request paid a TLS handshake. The ARM test server counts its handshakes."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from azure.core import AsyncPipelineClient
from azure.core.rest import AsyncHttpResponse, HttpRequest

from armserver.credentials import AsyncStaticTokenCredential
from armserver.process import ArmServerProcess
from imagedist._backends.azure.images import AzureImageService
from imagedist._backends.azure.state import AzureTableStateStore
from imagedist._backends.azure.transport import (
    CONNECTIONS_PER_HOST,
    TIMEOUTS,
    Transport,
    with_transport,
)
from imagedist._exceptions import ImagedistError

from helpers import run

REQUESTS = 12


def _handshakes(arm: ArmServerProcess) -> int:
    return int(arm.counters()["tls_handshakes"])


def _image_service(arm: ArmServerProcess) -> AzureImageService:
    """The image service's ARM clients, trusting the test server's CA through a bundle."""
    return AzureImageService(
        AsyncStaticTokenCredential(),
        arm_endpoint=arm.url,
        blob_url=lambda ref: f"https://{ref.account}.blob.core.windows.net/{ref.container}/x",
        client_kwargs={"connection_verify": str(arm.ca_file), "retry_total": 0},
    )


def test_an_arm_client_with_a_ca_bundle_keeps_its_connection(arm: ArmServerProcess) -> None:
    service = _image_service(arm)

    async def main() -> None:
        try:
            await service.ensure_resource_group("sub-0", "rg-tls", "westeurope")
            for _ in range(REQUESTS):
                assert await service.list_images("sub-0", "rg-tls") == []
        finally:
            await service.aclose()

    before = _handshakes(arm)
    run(main())
    # One connection per client (the resource and the compute client), one for the count itself.
    assert _handshakes(arm) - before <= 3


@pytest.mark.parametrize("verify", ["bundle", "system"])
def test_with_transport_moves_the_transport_settings_into_one_transport(
    arm: ArmServerProcess, verify: str
) -> None:
    bundle = str(arm.ca_file)
    options = with_transport(
        {"connection_verify": bundle, "read_timeout": 7, "retry_total": 1},
        {"read_timeout": 60, "connection_timeout": 5},
    )
    transport = options.pop("transport")
    assert isinstance(transport, Transport)
    assert options == {"retry_total": 1}  # what is not the transport's stays the client's
    assert transport.connection_config.read_timeout == 7  # the caller's over the defaults
    assert transport.connection_config.timeout == 5
    if verify == "system":  # the server's CA is not the system's: refused, as it must be
        transport = Transport(connection_verify=True)

    async def main() -> list[int]:
        pipeline = AsyncPipelineClient[HttpRequest, AsyncHttpResponse]
        async with pipeline(arm.url, transport=transport) as client:
            statuses = []
            for _ in range(REQUESTS):
                response = await client.send_request(
                    HttpRequest("GET", f"{arm.url}/_test/counters")
                )
                statuses.append(response.status_code)
            return statuses

    before = _handshakes(arm)
    if verify == "system":
        with pytest.raises(Exception, match="CERTIFICATE_VERIFY_FAILED"):
            run(main())
        return
    assert run(main()) == [200] * REQUESTS
    assert _handshakes(arm) - before <= 2  # ours, and the count's own


def test_options_naming_a_transport_keep_it(tmp_path: Path) -> None:
    mine = Transport()
    assert with_transport({"transport": mine, "connection_verify": str(tmp_path)}) == {
        "transport": mine,
        "connection_verify": str(tmp_path),
    }


CONFIG = """\
backend = "azure"

[staging]
subscription = "sub-staging"
region = "westeurope"
account = "stagingacct"

[azure]
auth = "connection-strings"
ca_bundle = "bundle.pem"

[[targets]]
subscription = "sub-a"
region = "japaneast"
account = "targetacct"
"""


@pytest.mark.parametrize("bundle", ["text", "empty", "binary", "folder", "fifo", "missing"])
def test_a_ca_bundle_that_is_no_pem_file_is_refused_in_one_sentence(
    tmp_path: Path, bundle: str
) -> None:
    (tmp_path / "imagedist.toml").write_text(CONFIG, encoding="utf-8")
    path = tmp_path / "bundle.pem"
    if bundle == "text":
        path.write_text("not a certificate\n", encoding="utf-8")
    elif bundle == "empty":
        path.write_bytes(b"")
    elif bundle == "binary":
        path.write_bytes(bytes(range(256)) * 4)
    elif bundle == "folder":
        path.mkdir()
    elif bundle == "fifo":
        os.mkfifo(path)
    # A connection string for each account, to a port where nothing listens: never reached.
    string = (
        "DefaultEndpointsProtocol=https;AccountName={0};AccountKey=a2V5;"
        "BlobEndpoint=https://127.0.0.1:9/{0};TableEndpoint=https://127.0.0.1:9/{0}"
    )
    env = {
        **os.environ,
        "IMAGEDIST_CONNECTION_STRING_STAGINGACCT": string.format("stagingacct"),
        "IMAGEDIST_CONNECTION_STRING_TARGETACCT": string.format("targetacct"),
    }
    done = subprocess.run(
        [sys.executable, "-m", "imagedist", "-c", str(tmp_path / "imagedist.toml"), "jobs"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("Error: [azure] ca_bundle 'bundle.pem' ")
    assert "PEM" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_a_client_waits_seconds_for_an_answer_not_azure_cores_five_minutes() -> None:
    transport = with_transport({})["transport"]
    assert (transport.connection_config.timeout, transport.connection_config.read_timeout) == (
        TIMEOUTS["connection_timeout"],
        TIMEOUTS["read_timeout"],
    )
    assert TIMEOUTS["read_timeout"] <= 60  # azure-core's own default is 300 s


def test_a_server_that_never_answers_costs_a_request_its_read_timeout() -> None:
    """A connection that went silent (accepted, never answered) ends in the client's read
    timeout, as an error the engine retries, instead of holding the request."""
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        string = (
            "DefaultEndpointsProtocol=http;AccountName=silentacct;AccountKey=a2V5;"
            f"TableEndpoint=http://127.0.0.1:{port}/silentacct"
        )
        store = AzureTableStateStore(string, client_kwargs={"read_timeout": 1, "retry_total": 0})

        async def main() -> None:
            try:
                await store.list_jobs()
            finally:
                await store.aclose()

        began = time.monotonic()
        with pytest.raises(ImagedistError):
            run(main())
        assert time.monotonic() - began < 30


def test_the_clients_of_one_loop_share_their_connections(arm: ArmServerProcess) -> None:
    """Every subscription has its ARM clients (resources, compute), all talking to the one ARM
    endpoint: they share one session, so one connection serves them in turn."""
    service = _image_service(arm)
    subscriptions = [f"sub-{n}" for n in range(5)]

    async def main() -> None:
        try:
            for subscription in subscriptions:  # ten clients, one after the other
                await service.ensure_resource_group(subscription, "rg-shared", "westeurope")
                assert await service.list_images(subscription, "rg-shared") == []
        finally:
            await service.aclose()

    before = _handshakes(arm)
    run(main())
    assert _handshakes(arm) - before <= 2  # ours, and the count's own


def test_the_shared_session_closes_with_its_last_transport() -> None:
    async def main() -> None:
        first, second = Transport(), Transport()
        await first.open()
        await second.open()
        shared = first.session
        assert shared is not None and second.session is shared
        await first.close()
        assert not shared.closed  # the other transport still uses it
        await first.close()  # a second close changes nothing
        assert not shared.closed
        await second.close()
        assert shared.closed
        with pytest.raises(ValueError, match="already been closed"):
            await second.open()  # as azure-core's own: closed for good, the session not remade
        third = Transport()
        await third.open()  # a transport opened later gets a new one
        assert third.session is not None and third.session is not shared
        await third.close()

    run(main())


def test_a_burst_of_requests_shares_a_bounded_number_of_connections(
    arm: ArmServerProcess,
) -> None:
    """Three times as many requests at once as a host's connections: they wait for a
    connection rather than each open one (and pay a TLS handshake), and a second burst uses
    the same connections."""
    service = _image_service(arm)
    burst = 3 * CONNECTIONS_PER_HOST

    async def main() -> None:
        try:
            await service.ensure_resource_group("sub-0", "rg-burst", "westeurope")
            for _ in range(2):
                looks = [service.list_images("sub-0", "rg-burst") for _ in range(burst)]
                assert await asyncio.gather(*looks) == [[]] * burst
        finally:
            await service.aclose()

    before = _handshakes(arm)
    run(main())
    assert _handshakes(arm) - before <= CONNECTIONS_PER_HOST + 1  # and the count's own
