"""The Resource Manager clients of one credential and cloud, shared by the adapters that call ARM
(images, galleries, provisioning): one client per SDK and subscription, made on first use with the
cloud's endpoint and token scope, closed together."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

from .proxies import proxy_options
from .transport import with_transport

if TYPE_CHECKING:
    from azure.core.credentials_async import AsyncTokenCredential

__all__ = ["ARM_SCOPE", "ArmClients"]

ARM_SCOPE = "https://management.azure.com/.default"
C = TypeVar("C")


class ArmClients:
    """:param scope: the token scope of the endpoint's cloud's ARM audience.
    :param client_kwargs: azure-core options (retry policy, TLS verification, polling interval)
        for every client; azure-core's retry policy handles 429/503 and Retry-After, and the
        defaults here only tune it."""

    def __init__(
        self,
        credential: AsyncTokenCredential,
        *,
        endpoint: str,
        scope: str = ARM_SCOPE,
        client_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.credential = credential
        self.scope = scope
        self._endpoint = endpoint.rstrip("/")
        self.options: dict[str, Any] = {
            "retry_total": 6,
            "retry_backoff_factor": 1.0,
            **proxy_options(self._endpoint),
            **(client_kwargs or {}),
        }
        self._clients: dict[tuple[Callable[..., Any], str], Any] = {}

    def get(self, make: Callable[..., C], subscription: str) -> C:
        """The client ``make`` (an SDK's async management client class) for ``subscription``."""
        key = (make, subscription)
        if key not in self._clients:
            self._clients[key] = make(
                self.credential,
                subscription,
                base_url=self._endpoint,
                credential_scopes=[self.scope],
                **with_transport(self.options),
            )
        return cast(C, self._clients[key])

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.close()
