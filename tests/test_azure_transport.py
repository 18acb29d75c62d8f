"""The transport every Azure client sends through: with a CA bundle (``[azure] ca_bundle``),
connections are kept alive as with the system's CAs. azure-core's own transport makes a new TLS
context from the file for each request, and aiohttp never reuses a connection across contexts:
each request paid a TLS handshake. The ARM test server counts its handshakes."""

from __future__ import annotations

from pathlib import Path

import pytest
from azure.core import AsyncPipelineClient
from azure.core.rest import AsyncHttpResponse, HttpRequest

from armserver.credentials import AsyncStaticTokenCredential
from armserver.process import ArmServerProcess
from imagedist._backends.azure.images import AzureImageService
from imagedist._backends.azure.transport import Transport, with_transport

from helpers import run

REQUESTS = 12


def _handshakes(arm: ArmServerProcess) -> int:
    return int(arm.counters()["tls_handshakes"])


def test_an_arm_client_with_a_ca_bundle_keeps_its_connection(arm: ArmServerProcess) -> None:
    service = AzureImageService(
        AsyncStaticTokenCredential(),
        arm_endpoint=arm.url,
        blob_url=lambda ref: f"https://{ref.account}.blob.core.windows.net/{ref.container}/x",
        client_kwargs={"connection_verify": str(arm.ca_file), "retry_total": 0},
    )

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
