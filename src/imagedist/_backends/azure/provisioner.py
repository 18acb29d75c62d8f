"""Resource groups, storage accounts, resource providers and data-plane role assignments through
azure-mgmt-resource, azure-mgmt-storage and azure-mgmt-authorization."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from azure.mgmt.authorization.aio import AuthorizationManagementClient
from azure.mgmt.authorization.v2022_04_01.models import RoleAssignmentCreateParameters
from azure.mgmt.resource.resources import models as resource_models
from azure.mgmt.resource.resources.aio import ResourceManagementClient
from azure.mgmt.storage import models
from azure.mgmt.storage.aio import StorageManagementClient

from ..._domain.changes import DataRole, Role
from ..._domain.regions import region_name
from ..._exceptions import Conflict, InvalidInput, NotFound, OperationFailed
from ...abc import AccountInfo, GroupInfo, Provisioner
from .arm import ARM_SCOPE, ArmClients
from .errors import translate_errors

if TYPE_CHECKING:
    from azure.core.credentials_async import AsyncTokenCredential

__all__ = ["AzureProvisioner"]

MANAGED_TAG = {"imagedist-managed": "true"}
#: How long a resource provider may take to register before setup gives up on it.
REGISTRATION_TIMEOUT_SECONDS = 900.0
#: A namespace that distinguishes imagedist's role assignment names from anyone else's.
_ASSIGNMENT_NAMESPACE = uuid.UUID("5c1f3f0e-7d8a-4a43-9d0e-6b1f0b7e2a10")


def account_scope(account: AccountInfo) -> str:
    """The account's Resource Manager id: the scope its role assignments are made at."""
    return (
        f"/subscriptions/{account.subscription}/resourceGroups/{account.resource_group}"
        f"/providers/Microsoft.Storage/storageAccounts/{account.name}"
    )


def assignment_name(scope: str, principal_id: str, role: Role) -> str:
    """A role assignment's name (a GUID) that is the same on every run: setup is idempotent."""
    key = f"{scope.lower()}|{principal_id.lower()}|{role.definition_id}"
    return str(uuid.uuid5(_ASSIGNMENT_NAMESPACE, key))


def _scope_subscription(scope: str) -> str:
    """The subscription of a scope below one (``/subscriptions/{id}/...``)."""
    parts = [p for p in scope.split("/") if p]
    if len(parts) < 2 or parts[0].lower() != "subscriptions":
        raise ValueError(f"{scope!r} is not a scope in a subscription")
    return parts[1]


def token_object_id(token: str) -> str | None:
    """The ``oid`` claim of an Entra ID access token (a JWT): the signed-in identity's object id.

    Only read, never verified: the token is our own, and ARM checks it on every request.
    """
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (binascii.Error, ValueError):
        return None
    oid = claims.get("oid") if isinstance(claims, dict) else None
    return oid if isinstance(oid, str) and oid else None


# The SDK client of each kind of call.
_CLIENTS: dict[str, Callable[..., Any]] = {
    "resource": ResourceManagementClient,
    "authorization": AuthorizationManagementClient,
    "storage": StorageManagementClient,
}


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
        principal_id: str | None = None,
        data_roles: bool = True,
    ) -> None:
        """:param principal_id: the object id to grant data roles to; default: the signed-in
            identity's, read from its ARM access token.
        :param data_roles: whether data access goes by Entra ID roles (False with account keys).
        """
        self._arm = ArmClients(
            credential, endpoint=arm_endpoint, scope=arm_scope, client_kwargs=client_kwargs
        )
        self._principal = principal_id
        self._data_roles = data_roles
        self._poll_seconds = float(self._arm.options.get("polling_interval", 5.0))

    def _client(self, kind: str, subscription: str) -> Any:
        return self._arm.get(_CLIENTS[kind], subscription)

    async def aclose(self) -> None:
        await self._arm.aclose()

    async def get_resource_group(self, subscription: str, name: str) -> GroupInfo | None:
        client = self._client("resource", subscription)
        try:
            with translate_errors(f"read resource group {name!r}"):
                group = await client.resource_groups.get(name)
        except NotFound:
            return None
        managed = (group.tags or {}).get("imagedist-managed") == "true"
        return GroupInfo(subscription, name, str(group.location), managed)

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

    async def principal_id(self) -> str | None:
        if not self._data_roles:
            return None
        if self._principal is None:
            token = await self._arm.credential.get_token(self._arm.scope)  # its cloud's
            self._principal = token_object_id(token.token)
        if self._principal is None:
            raise InvalidInput(
                "The access token does not say which identity is signed in (no oid claim); set"
                " [azure] principal_id in the config to the identity's object id."
            )
        return self._principal

    async def has_role(self, account: AccountInfo, principal_id: str, role: DataRole) -> bool:
        return await self.has_role_at(account_scope(account), principal_id, role)

    async def grant_role(self, account: AccountInfo, principal_id: str, role: DataRole) -> None:
        await self.grant_role_at(account_scope(account), principal_id, role)

    async def has_role_at(self, scope: str, principal_id: str, role: Role) -> bool:
        client = self._client("authorization", _scope_subscription(scope))
        wanted = f"/roledefinitions/{role.definition_id}"
        with translate_errors(f"list the role assignments at {scope!r}"):
            async for assignment in client.role_assignments.list_for_scope(
                scope, filter=f"principalId eq '{principal_id}'"
            ):
                if str(assignment.role_definition_id or "").lower().endswith(wanted):
                    return True
        return False

    async def grant_role_at(self, scope: str, principal_id: str, role: Role) -> None:
        subscription = _scope_subscription(scope)
        client = self._client("authorization", subscription)
        body = RoleAssignmentCreateParameters(
            role_definition_id=(
                f"/subscriptions/{subscription}/providers/Microsoft.Authorization"
                f"/roleDefinitions/{role.definition_id}"
            ),
            principal_id=principal_id,
        )
        try:
            with translate_errors(f"grant {role} at {scope!r}"):
                await client.role_assignments.create(
                    scope, assignment_name(scope, principal_id, role), body
                )
        except Conflict as exc:
            if "RoleAssignmentExists" not in str(exc):  # the same grant, made before: fine
                raise

    async def provider_registered(self, subscription: str, namespace: str) -> bool:
        client = self._client("resource", subscription)
        with translate_errors(f"read resource provider {namespace}"):
            provider = await client.providers.get(namespace)
        return str(provider.registration_state or "").lower() == "registered"

    async def register_provider(self, subscription: str, namespace: str) -> None:
        client = self._client("resource", subscription)
        with translate_errors(f"register resource provider {namespace}"):
            await client.providers.register(namespace)
        # Registration runs on in the background (Registering, then Registered): wait for it.
        deadline = time.monotonic() + REGISTRATION_TIMEOUT_SECONDS
        while not await self.provider_registered(subscription, namespace):
            if time.monotonic() > deadline:
                raise OperationFailed(
                    f"resource provider {namespace} is still not registered in subscription"
                    f" {subscription!r} after {REGISTRATION_TIMEOUT_SECONDS:.0f} s; run setup"
                    " again later"
                )
            await asyncio.sleep(self._poll_seconds)
