"""Resource groups and storage accounts through azure-mgmt-resource and azure-mgmt-storage."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from azure.mgmt.resource.resources import models as resource_models
from azure.mgmt.resource.resources.aio import ResourceManagementClient
from azure.mgmt.storage import models
from azure.mgmt.storage.aio import StorageManagementClient

from ..._domain.regions import region_name
from ..._exceptions import NotFound
from ...abc import AccountInfo, Provisioner
from .errors import translate_errors
from .images import ARM_SCOPE

if TYPE_CHECKING:
    from azure.core.credentials_async import AsyncTokenCredential

__all__ = ["AzureProvisioner"]

MANAGED_TAG = {"imagedist-managed": "true"}


class AzureProvisioner(Provisioner):
    """:param arm_scope: the token scope of the ARM endpoint's cloud.
    :param client_kwargs: azure-core options (retry policy, TLS verification) for every client."""

    def __init__(
        self,
        credential: AsyncTokenCredential,
        *,
        arm_endpoint: str,
        arm_scope: str = ARM_SCOPE,
        client_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self._credential = credential
        self._endpoint = arm_endpoint.rstrip("/")
        self._scope = arm_scope  # the endpoint's cloud's ARM audience (issue 10)
        self._kwargs = {"retry_total": 6, "retry_backoff_factor": 1.0, **(client_kwargs or {})}
        self._clients: dict[tuple[str, str], Any] = {}

    def _client(self, kind: str, subscription: str) -> Any:
        key = (kind, subscription)
        if key not in self._clients:
            options = {
                "base_url": self._endpoint,
                "credential_scopes": [self._scope],
                **self._kwargs,
            }
            if kind == "resource":
                self._clients[key] = ResourceManagementClient(
                    self._credential, subscription, **options
                )
            else:
                self._clients[key] = StorageManagementClient(
                    self._credential, subscription, **options
                )
        return self._clients[key]

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.close()

    async def get_resource_group(self, subscription: str, name: str) -> str | None:
        client = self._client("resource", subscription)
        try:
            with translate_errors(f"read resource group {name!r}"):
                group = await client.resource_groups.get(name)
        except NotFound:
            return None
        return str(group.location)

    async def create_resource_group(self, subscription: str, name: str, region: str) -> None:
        client = self._client("resource", subscription)
        with translate_errors(f"create resource group {name!r}"):
            await client.resource_groups.create_or_update(
                name, resource_models.ResourceGroup(location=region, tags=MANAGED_TAG)
            )

    async def delete_resource_group(self, subscription: str, name: str) -> None:
        client = self._client("resource", subscription)
        try:
            with translate_errors(f"delete resource group {name!r}"):
                poller = await client.resource_groups.begin_delete(name)
                await poller.result()
        except NotFound:
            return

    async def get_storage_account(
        self, subscription: str, resource_group: str, name: str
    ) -> AccountInfo | None:
        client = self._client("storage", subscription)
        try:
            with translate_errors(f"read storage account {name!r}"):
                account = await client.storage_accounts.get_properties(resource_group, name)
        except NotFound:
            return None
        managed = (account.tags or {}).get("imagedist-managed") == "true"
        return AccountInfo(subscription, resource_group, name, str(account.location), managed)

    async def account_name_available(self, subscription: str, name: str) -> tuple[bool, str]:
        client = self._client("storage", subscription)
        with translate_errors(f"check the name {name!r}"):
            result = await client.storage_accounts.check_name_availability(
                models.StorageAccountCheckNameAvailabilityParameters(name=name)
            )
        reason = getattr(result.reason, "value", result.reason)  # an enum: keep Azure's word
        return bool(result.name_available), str(reason or result.message or "")

    async def create_storage_account(
        self, subscription: str, resource_group: str, name: str, region: str, sku: str
    ) -> None:
        client = self._client("storage", subscription)
        body = models.StorageAccountCreateParameters(
            location=region,
            kind="StorageV2",
            sku=models.Sku(name=sku),
            tags=MANAGED_TAG,
            properties=models.StorageAccountPropertiesCreateParameters(
                enable_https_traffic_only=True,
                allow_blob_public_access=False,
                minimum_tls_version="TLS1_2",
            ),
        )
        with translate_errors(f"create storage account {name!r}"):
            poller = await client.storage_accounts.begin_create(resource_group, name, body)
            await poller.result()

    async def delete_storage_account(
        self, subscription: str, resource_group: str, name: str
    ) -> None:
        client = self._client("storage", subscription)
        try:
            with translate_errors(f"delete storage account {name!r}"):
                await client.storage_accounts.delete(resource_group, name)
        except NotFound:
            return

    async def list_regions(self, subscription: str) -> list[str]:
        """Where the subscription may create managed images (Microsoft.Compute/images)."""
        client = self._client("resource", subscription)
        with translate_errors(f"list the regions of subscription {subscription!r}"):
            provider = await client.providers.get("Microsoft.Compute")
        regions: set[str] = set()
        for resource_type in provider.resource_types or []:
            if (resource_type.resource_type or "").lower() == "images":
                # ARM lists display names ("West Europe"); configs use names ("westeurope").
                regions |= {region_name(loc) for loc in resource_type.locations or []}
        return sorted(regions)
