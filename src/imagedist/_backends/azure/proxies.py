"""The proxy of one endpoint, as the environment says, looked up once per client.

azure-core's aiohttp transport lets aiohttp read the proxy settings (``HTTPS_PROXY``,
``NO_PROXY``...) and ``~/.netrc`` itself by default, which it does for every request, in a thread
of the executor, going through every environment variable each time. Each of our clients talks to
one endpoint, so the answer is the same for all its requests: it is worked out here when the
client is made, and the transport is told not to look again.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit
from urllib.request import getproxies_environment

__all__ = ["proxy_options"]


def proxy_options(endpoint: str, proxies: Mapping[str, str] | None = None) -> dict[str, Any]:
    """azure-core client options for requests to ``endpoint``: the environment's proxy for its
    scheme unless ``NO_PROXY`` exempts its host, and no lookup of the environment per request.

    :param proxies: ``urllib.request.getproxies_environment()``, read once by a caller that makes
        many clients (reading the environment goes through all of it); else read here.
    """
    proxies = getproxies_environment() if proxies is None else dict(proxies)
    parts = urlsplit(endpoint)
    options: dict[str, Any] = {"use_env_settings": False}
    proxy = proxies.get(parts.scheme)
    if proxy and not _exempt(parts.hostname or "", proxies):
        # azure-core picks the entry whose key starts the request's URL: the scheme does.
        options["proxies"] = {parts.scheme: proxy}
    return options


def _exempt(host: str, proxies: Mapping[str, str]) -> bool:
    """Whether ``NO_PROXY`` (``proxies["no"]``) exempts ``host``, as aiohttp would judge it."""
    bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]  # not in typeshed
    return bool(bypass(host, proxies))
