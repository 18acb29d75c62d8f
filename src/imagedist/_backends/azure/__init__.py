"""The Azure backend: the official SDKs behind the ports. Imported only when a config asks for it.

Authentication is Entra ID through ``DefaultAzureCredential`` (``az login``, a managed identity,
workload identity...), signing in with the authority of the config's cloud, or, for Azurite,
account connection strings read from the environment (``IMAGEDIST_CONNECTION_STRING_<ACCOUNT>``),
never from the config file. For test servers of the ARM protocol, ``IMAGEDIST_ARM_ACCESS_TOKEN``
may hold a pre-issued bearer token: it is given to the ARM clients only, and refuses any other
scope, so it never reaches storage (issue 10).
"""

from __future__ import annotations

import os
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError

from ..._domain import BlobRef
from ..._exceptions import InvalidInput
from ...abc import Backend, SystemClock
from .blobs import AccountAccess, AzureBlobStore
from .gallery import AzureGalleryService
from .images import AzureImageService
from .provisioner import AzureProvisioner
from .state import AzureTableStateStore
from .transport import tls_context

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from ..._config import AzureBackendOptions, AzureEndpoints, Config

__all__ = ["TOKEN_VARIABLE", "connection_string_variable", "open_backend"]

TOKEN_VARIABLE = "IMAGEDIST_ARM_ACCESS_TOKEN"


class _StaticToken:
    """An async token credential holding one pre-issued ARM token (test servers of ARM, CI).

    It answers for its one scope only: asked for any other (storage, say), it refuses rather
    than hand an ARM token to a service it was not issued for.
    """

    def __init__(self, token: str, scope: str) -> None:
        self._token = token
        self._scope = scope

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        if scopes != (self._scope,):
            raise ClientAuthenticationError(
                f"{TOKEN_VARIABLE} holds a token for {self._scope!r} only, not for"
                f" {' '.join(scopes)!r}."
            )
        return AccessToken(self._token, int(time.time()) + 3600)

    async def close(self) -> None:
        return None

    async def __aenter__(self) -> _StaticToken:
        return self

    async def __aexit__(self, *args: object) -> None:
        return None

    def __repr__(self) -> str:  # never show the token
        return f"{type(self).__name__}(<redacted>)"


@dataclass
class _Credentials:
    """The token credential of each plane; ``None`` where that plane needs none."""

    arm: Any
    storage: Any  # None with connection strings
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)


def _credentials(options: AzureBackendOptions, endpoints: AzureEndpoints) -> _Credentials:
    """ARM gets the pre-issued token when one is set, storage always its own credential."""
    default: Any = None

    def signed_in() -> Any:
        nonlocal default
        if default is None:
            from azure.identity.aio import DefaultAzureCredential

            default = DefaultAzureCredential(authority=endpoints.authority)
        return default

    token = os.environ.get(TOKEN_VARIABLE)
    arm = _StaticToken(token, endpoints.arm_scope) if token else signed_in()
    storage = None if options.auth == "connection-strings" else signed_in()
    closers = [arm.close] + ([default.close] if default is not None and default is not arm else [])
    return _Credentials(arm, storage, closers)


def connection_string_variable(account: str) -> str:
    """The environment variable that holds an account's connection string."""
    return f"IMAGEDIST_CONNECTION_STRING_{account.upper()}"


def _connection_string(account: str) -> str:
    variable = connection_string_variable(account)
    value = os.environ.get(variable)
    if not value:
        raise InvalidInput(
            f"The config uses connection strings but {variable} is not set; set it to the"
            f" connection string of storage account {account!r}."
        )
    return value


def _accounts(config: Config) -> list[str]:
    names = [config.staging.account, *(t.account for t in config.fleet_targets())]
    if config.azure.state_account:
        names.append(config.azure.state_account)
    return list(dict.fromkeys(names))


def _account_ids(config: Config) -> dict[str, str]:
    """Every account of the config -> its ARM id (a gallery version's VHD source names it)."""
    places = {t.account: (t.subscription, t.storage_resource_group) for t in config.fleet_targets()}
    staging = config.staging
    places[staging.account] = (staging.subscription, staging.resource_group)
    return {
        account: (
            f"/subscriptions/{subscription}/resourceGroups/{group}"
            f"/providers/Microsoft.Storage/storageAccounts/{account}"
        )
        for account, (subscription, group) in places.items()
    }


def _state_store(
    config: Config, endpoints: AzureEndpoints, credential: Any, tls: dict[str, Any]
) -> AzureTableStateStore:
    options = config.azure
    account = options.state_account or config.staging.account
    if credential is None:
        return AzureTableStateStore(
            _connection_string(account), table_prefix=options.table_prefix, client_kwargs=tls
        )
    return AzureTableStateStore(
        endpoints.table.format(account=account),
        credential=credential,
        table_prefix=options.table_prefix,
        client_kwargs=tls,
    )


def _tls_options(config: Config) -> dict[str, Any]:
    """``connection_verify`` for every client: the config's CA bundle, else the system's CAs."""
    bundle = config.azure.ca_bundle
    if bundle is None:
        return {}
    path = Path(config.base_dir) / bundle
    if not path.is_file():
        raise InvalidInput(
            f"[azure] ca_bundle {bundle!r} is not a file; give the path of a PEM file of CA"
            " certificates, relative to the config file."
        )
    cafile = str(path.resolve())
    try:
        tls_context(cafile)
    except (ssl.SSLError, OSError) as exc:
        reason = exc.strerror or str(exc)
        raise InvalidInput(
            f"[azure] ca_bundle {bundle!r} holds no CA certificate in PEM form ({reason}); give"
            " a PEM file of CA certificates, relative to the config file."
        ) from None
    return {"connection_verify": cafile}


def open_backend(config: Config) -> Backend:
    """Open the Azure backend for the config; no network call happens before first use."""
    options = config.azure
    endpoints = options.endpoints()
    tls = _tls_options(config)
    credentials = _credentials(options, endpoints)

    def access(account: str) -> AccountAccess:
        endpoint = endpoints.blob.format(account=account)
        if credentials.storage is None:
            return AccountAccess(account, endpoint, connection_string=_connection_string(account))
        return AccountAccess.with_credential(account, credentials.storage, endpoint)

    accounts = {name: access(name) for name in _accounts(config)}

    def blob_url(ref: BlobRef) -> str:
        return f"{endpoints.blob.format(account=ref.account)}/{ref.container}/{quote(ref.name)}"

    arm = {"polling_interval": config.concurrency.poll_interval_seconds, **tls}
    account_ids = _account_ids(config)
    return Backend(
        blobs=AzureBlobStore(accounts, client_options=tls),
        images=AzureImageService(
            credentials.arm,
            arm_endpoint=endpoints.arm,
            arm_scope=endpoints.arm_scope,
            blob_url=blob_url,
            client_kwargs=arm,
        ),
        state=_state_store(config, endpoints, credentials.storage, tls),
        clock=SystemClock(),
        provisioner=AzureProvisioner(
            credentials.arm,
            arm_endpoint=endpoints.arm,
            arm_scope=endpoints.arm_scope,
            client_kwargs=arm,
            principal_id=options.principal_id,
            data_roles=credentials.storage is not None,  # account keys bypass Entra ID roles
        ),
        closers=credentials.closers,
        gallery=AzureGalleryService(
            credentials.arm,
            arm_endpoint=endpoints.arm,
            arm_scope=endpoints.arm_scope,
            blob_url=blob_url,
            account_id=account_ids.__getitem__,
            client_kwargs=arm,
        ),
    )
