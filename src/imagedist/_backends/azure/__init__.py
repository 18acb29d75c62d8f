"""The Azure backend: the official SDKs behind the ports. Imported only when a config asks for it.

Authentication is Entra ID through ``DefaultAzureCredential`` (``az login``, a managed identity,
workload identity...) or, for Azurite, account connection strings read from the environment
(``IMAGEDIST_CONNECTION_STRING_<ACCOUNT>``), never from the config file. For test servers of the
ARM protocol, ``IMAGEDIST_ARM_ACCESS_TOKEN`` may hold a pre-issued bearer token.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from azure.core.credentials import AccessToken

from ..._domain import BlobRef
from ..._exceptions import InvalidInput
from ...abc import Backend, SystemClock
from .blobs import AccountAccess, AzureBlobStore
from .images import AzureImageService
from .provisioner import AzureProvisioner
from .state import AzureTableStateStore

if TYPE_CHECKING:
    from ..._config import Config

__all__ = ["connection_string_variable", "open_backend"]

TOKEN_VARIABLE = "IMAGEDIST_ARM_ACCESS_TOKEN"


class _StaticToken:
    """An async token credential holding one pre-issued token (test servers of ARM, CI)."""

    def __init__(self, token: str) -> None:
        self._token = token

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken(self._token, int(time.time()) + 3600)

    async def close(self) -> None:
        return None

    async def __aenter__(self) -> _StaticToken:
        return self

    async def __aexit__(self, *args: object) -> None:
        return None


def _credential() -> Any:
    token = os.environ.get(TOKEN_VARIABLE)
    if token:
        return _StaticToken(token)
    from azure.identity.aio import DefaultAzureCredential

    return DefaultAzureCredential()


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


def open_backend(config: Config) -> Backend:
    """Open the Azure backend for the config; no network call happens before first use."""
    options = config.azure
    credential = _credential()
    by_key = options.auth == "connection-strings"

    def access(account: str) -> AccountAccess:
        endpoint = options.blob_endpoint.format(account=account)
        if by_key:
            return AccountAccess(account, endpoint, connection_string=_connection_string(account))
        return AccountAccess.with_credential(account, credential, endpoint)

    accounts = {name: access(name) for name in _accounts(config)}

    def blob_url(ref: BlobRef) -> str:
        return (
            f"{options.blob_endpoint.format(account=ref.account)}/{ref.container}/{quote(ref.name)}"
        )

    state_account = options.state_account or config.staging.account
    state = (
        AzureTableStateStore(_connection_string(state_account), table_prefix=options.table_prefix)
        if by_key
        else AzureTableStateStore(
            options.table_endpoint.format(account=state_account),
            credential=credential,
            table_prefix=options.table_prefix,
        )
    )
    arm = {"polling_interval": config.concurrency.poll_interval_seconds}
    return Backend(
        blobs=AzureBlobStore(accounts),
        images=AzureImageService(
            credential,
            arm_endpoint=options.arm_endpoint,
            blob_url=blob_url,
            client_kwargs=arm,
        ),
        state=state,
        clock=SystemClock(),
        provisioner=AzureProvisioner(
            credential,
            arm_endpoint=options.arm_endpoint,
            client_kwargs=arm,
            principal_id=options.principal_id,
            data_roles=not by_key,  # account keys bypass Entra ID roles
        ),
        closers=[credential.close],
    )
