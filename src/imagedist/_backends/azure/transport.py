"""The HTTP transport every Azure client of ours sends through: azure-core's aiohttp transport,
with one TLS context per CA bundle and big bodies streamed.

Given a CA bundle's path (``connection_verify``, from ``[azure] ca_bundle``), azure-core's
transport builds a new ``ssl.SSLContext`` from the file for every request; aiohttp keeps apart
the connections of different contexts, so no connection was ever used twice: a TLS handshake and
a read of the bundle on every request. Here a bundle's context is made once and shared, so a
client's connections are kept alive as they are with the system's CAs.
"""

from __future__ import annotations

import functools
import io
import ssl
from collections.abc import Mapping
from typing import Any

from azure.core.pipeline.transport import AioHttpTransport

__all__ = ["TIMEOUTS", "Transport", "tls_context", "with_transport"]

#: aiohttp writes a ``bytes`` body in one piece and warns above this size; a stream goes in chunks.
_STREAM_BODIES_OVER = 1024 * 1024
#: The client options that are the transport's own (azure-core reads them when it makes one).
_TRANSPORT_OPTIONS = (
    "connection_timeout",
    "read_timeout",
    "connection_data_block_size",
    "connection_verify",
    "connection_cert",
    "use_env_settings",
)


#: Unless a client's options say otherwise: azure-core waits 300 s to connect and 300 s for each
#: read, so a connection dropped without a word (a NAT's idle timeout, a half-open socket) held a
#: request for five minutes before its retry; every request of ours answers within seconds.
TIMEOUTS = {"connection_timeout": 20, "read_timeout": 60}


@functools.cache
def tls_context(cafile: str) -> ssl.SSLContext:
    """The TLS context trusting the CAs of the PEM file ``cafile`` (one per file and process).

    :raises ssl.SSLError: the file holds no CA certificate in PEM form.
    """
    return ssl.create_default_context(cafile=cafile)


# azure-core exports the transport through a module __getattr__, so mypy sees Any.
class Transport(AioHttpTransport):  # type: ignore[misc]
    """azure-core's aiohttp transport, with one TLS context per CA bundle (see the module), and
    big byte bodies handed to aiohttp as streams.

    The SDK passes a Put Page body as ``bytes``; above 1 MiB aiohttp then warns (``ResourceWarning:
    Sending a large body directly with raw bytes might lock the event loop``, Azure SDK issue
    #39845). A fresh ``BytesIO`` per attempt keeps retries intact.
    """

    def _build_ssl_config(self, cert: Any, verify: Any) -> Any:
        if not cert and isinstance(verify, str):
            return tls_context(verify)
        return super()._build_ssl_config(cert, verify)

    def _get_request_data(self, request: Any) -> Any:
        data = super()._get_request_data(request)
        if isinstance(data, bytes | bytearray) and len(data) > _STREAM_BODIES_OVER:
            return io.BytesIO(data)
        return data


def with_transport(
    options: Mapping[str, Any], defaults: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Client ``options`` with a :class:`Transport` of their own (unless they name one): the
    transport's settings (timeouts, TLS verification, environment) move into it, over
    ``defaults``, over :data:`TIMEOUTS`. One per client: a client closes its transport when it
    closes."""
    rest = dict(options)
    if "transport" in rest:
        return rest
    settings = {**TIMEOUTS, **(defaults or {})}
    for name in _TRANSPORT_OPTIONS:
        if name in rest:
            settings[name] = rest.pop(name)
    return {**rest, "transport": Transport(**settings)}
