"""The proxy of one endpoint, as the environment says, looked up once per client.

azure-core's aiohttp transport lets aiohttp read the proxy settings (``HTTPS_PROXY``,
``NO_PROXY``...) and ``~/.netrc`` itself by default, which it does for every request, in a thread
of the executor: about a third of a worker's CPU on a job of hundreds of targets. Each of our
clients talks to one endpoint, so the answer is the same for all its requests: it is worked out
here when the client is made, and the transport is told not to look again.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit
from urllib.request import getproxies, proxy_bypass

__all__ = ["proxy_options"]


def proxy_options(endpoint: str) -> dict[str, Any]:
    """azure-core client options for requests to ``endpoint``: the environment's proxy for its
    scheme unless ``NO_PROXY`` exempts its host, and no lookup of the environment per request."""
    parts = urlsplit(endpoint)
    options: dict[str, Any] = {"use_env_settings": False}
    proxy = getproxies().get(parts.scheme)
    if proxy and not proxy_bypass(parts.hostname or ""):
        # azure-core picks the entry whose key starts the request's URL: the scheme does.
        options["proxies"] = {parts.scheme: proxy}
    return options
