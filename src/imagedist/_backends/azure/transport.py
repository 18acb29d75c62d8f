"""The HTTP transport every Azure client of ours sends through: azure-core's aiohttp transport,
with one aiohttp session per event loop, one TLS context per CA bundle, and big bodies streamed.

azure-core gives each client a session of its own, and so a pool of connections of its own: a
worker has a client per storage account and one per subscription and kind of ARM client, and
each opened its own connections to hosts the others were already connected to (every ARM client
talks to the same endpoint), and made a session (about half a millisecond of CPU each). Here the
clients of one event loop share one session; a client's ``close`` leaves it open for the others,
and the last one to close closes it.

Given a CA bundle's path (``connection_verify``, from ``[azure] ca_bundle``), azure-core's
transport builds a new ``ssl.SSLContext`` from the file for every request; aiohttp keeps apart
the connections of different contexts, so no connection was ever used twice: a TLS handshake and
a read of the bundle on every request. Here a bundle's context is made once and shared, so a
client's connections are kept alive as they are with the system's CAs.
"""

from __future__ import annotations

import asyncio
import functools
import io
import ssl
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
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
    """azure-core's aiohttp transport, sharing its event loop's session unless given one, with
    one TLS context per CA bundle (see the module), and big byte bodies handed to aiohttp as
    streams.

    The SDK passes a Put Page body as ``bytes``; above 1 MiB aiohttp then warns (``ResourceWarning:
    Sending a large body directly with raw bytes might lock the event loop``, Azure SDK issue
    #39845). A fresh ``BytesIO`` per attempt keeps retries intact.
    """

    session: aiohttp.ClientSession | None

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # Without a session of the caller's, the loop's shared one (see the module).
        self._shares = kwargs.get("session") is None
        self._joined: _Shared | None = None

    async def open(self) -> None:
        # Once closed, a transport stays closed (azure-core's open refuses it), never rejoining.
        if self._shares and self._joined is None and not self._has_been_opened:
            self._joined = _join(self._use_env_settings)
            self.session = self._joined.session
            self._session_owner = False  # closed by the last transport to leave it
        await super().open()

    async def close(self) -> None:
        joined, self._joined = self._joined, None
        if joined is not None:
            self.session = None
            await joined.leave()
        await super().close()

    def _build_ssl_config(self, cert: Any, verify: Any) -> Any:
        if not cert and isinstance(verify, str):
            return tls_context(verify)
        return super()._build_ssl_config(cert, verify)

    def _get_request_data(self, request: Any) -> Any:
        data = super()._get_request_data(request)
        if isinstance(data, bytes | bytearray) and len(data) > _STREAM_BODIES_OVER:
            return io.BytesIO(data)
        return data


@dataclass
class _Shared:
    """A loop's session of one kind, and how many open transports use it."""

    session: aiohttp.ClientSession
    registry: dict[bool, _Shared]  # its loop's sessions, by kind
    trust_env: bool
    users: int = 0

    async def leave(self) -> None:
        self.users -= 1
        if self.users == 0:
            if self.registry.get(self.trust_env) is self:
                del self.registry[self.trust_env]
            await self.session.close()


#: By event loop, by whether the environment's proxy settings are read: the session its open
#: transports share, closed when the last of them closes.
_SESSIONS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[bool, _Shared]] = (
    weakref.WeakKeyDictionary()
)


#: Connections kept per host (scheme, host and port): Resource Manager is one host for every
#: subscription, and so is Azurite for every account. Without a cap, a burst (the images of
#: every copy that ended on one poll) opened a connection, and a TLS handshake, per request: 600
#: to 850 ARM connections in a 1,000-target job, most of them closed idle before the next burst.
#: As many as a ranged copy's pacer may have in flight for one blob.
CONNECTIONS_PER_HOST = 64
#: Seconds an idle connection is kept (aiohttp's default: 15): a worker's requests come in
#: bursts a poll interval or a copy apart. A server that closes one first costs a retry.
KEEPALIVE_SECONDS = 60.0


def _join(trust_env: bool) -> _Shared:
    """The running loop's shared session, made on first use as azure-core makes its own (no
    cookies, bodies not decompressed), with :data:`CONNECTIONS_PER_HOST` and no cap on hosts
    (each client's session had its own cap of 100)."""
    sessions = _SESSIONS.setdefault(asyncio.get_running_loop(), {})
    shared = sessions.get(trust_env)
    if shared is None:  # or its last transport left, which closed it and took it out
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=0, limit_per_host=CONNECTIONS_PER_HOST, keepalive_timeout=KEEPALIVE_SECONDS
            ),
            trust_env=trust_env,
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
        )
        shared = sessions[trust_env] = _Shared(session, sessions, trust_env)
    shared.users += 1
    return shared


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
