"""Role assignments, role enforcement and resource provider registration in the ARM test server,
driven through imagedist's Azure provisioner and the real azure-mgmt clients: the server refuses
what Azure refuses, with Azure's status, code and message."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest
from azure.core.exceptions import HttpResponseError
from azure.mgmt.authorization import AuthorizationManagementClient
from azure.mgmt.authorization.v2022_04_01.models import RoleAssignmentCreateParameters

from armserver import ArmServerProcess, StaticTokenCredential
from armserver.authz import assign, dump, enforce, principal_token, unregister
from imagedist._backends.azure.provisioner import AzureProvisioner
from imagedist._domain.changes import DataRole
from imagedist._exceptions import AuthFailed, Conflict, InvalidInput
from imagedist.abc import AccountInfo

from helpers import run

T = TypeVar("T")
SUB = "sub-a"
ME = "4e5f6a7b-8c9d-4e0f-a1b2-c3d4e5f6a7b8"
SUBSCRIPTION = f"/subscriptions/{SUB}"
BLOB_ROLE = f"{SUBSCRIPTION}/providers/Microsoft.Authorization/roleDefinitions/{DataRole.BLOB_DATA_CONTRIBUTOR.definition_id}"


def _with_provisioner(arm: ArmServerProcess, body: Callable[[AzureProvisioner], Awaitable[T]]) -> T:
    """Run ``body`` with a provisioner signed in as ``ME`` (one event loop, closed after)."""
    from armserver.credentials import AsyncStaticTokenCredential

    async def main() -> T:
        prov = AzureProvisioner(
            AsyncStaticTokenCredential(principal_token(ME)),
            arm_endpoint=arm.url,
            client_kwargs={
                "connection_verify": arm.ca_file,
                "polling_interval": 0.02,
                "retry_total": 0,
            },
        )
        try:
            return await body(prov)
        finally:
            await prov.aclose()

    return run(main())


async def _account(prov: AzureProvisioner) -> AccountInfo:
    await prov.create_resource_group(SUB, "rg", "westeurope")
    await prov.create_storage_account(SUB, "rg", "imgdweu01", "westeurope", "Standard_LRS")
    found = await prov.get_storage_account(SUB, "rg", "imgdweu01")
    assert found is not None
    return found


def test_a_principal_without_a_role_gets_authorization_failed(arm: ArmServerProcess) -> None:
    enforce(arm)

    with pytest.raises(AuthFailed) as refused:
        _with_provisioner(arm, lambda prov: prov.create_resource_group(SUB, "rg", "westeurope"))

    message = str(refused.value).lower()  # the scope is the path as sent: "resourcegroups"
    assert "http 403, authorizationfailed" in message
    assert (
        f"The client '{ME}' with object id '{ME}' does not have authorization to perform action"
        f" 'Microsoft.Resources/subscriptions/resourceGroups/write' over scope"
        f" '{SUBSCRIPTION}/resourceGroups/rg'"
    ).lower() in message


def test_a_contributor_makes_accounts_but_cannot_grant_roles(arm: ArmServerProcess) -> None:
    enforce(arm)
    assign(arm, SUBSCRIPTION, ME, "Contributor")

    async def body(prov: AzureProvisioner) -> None:
        account = await _account(prov)
        assert not await prov.has_role(account, ME, DataRole.BLOB_DATA_CONTRIBUTOR)
        await prov.grant_role(account, ME, DataRole.BLOB_DATA_CONTRIBUTOR)

    with pytest.raises(AuthFailed) as refused:
        _with_provisioner(arm, body)
    assert "'Microsoft.Authorization/roleAssignments/write'" in str(refused.value)


def test_an_owner_grants_the_data_role_once_with_a_stable_name(arm: ArmServerProcess) -> None:
    enforce(arm)
    assign(arm, SUBSCRIPTION, ME, "Owner")

    async def body(prov: AzureProvisioner) -> bool:
        account = await _account(prov)
        await prov.grant_role(account, ME, DataRole.BLOB_DATA_CONTRIBUTOR)
        await prov.grant_role(account, ME, DataRole.BLOB_DATA_CONTRIBUTOR)  # 409: fine
        return await prov.has_role(account, ME, DataRole.BLOB_DATA_CONTRIBUTOR)

    assert _with_provisioner(arm, body) is True
    assignments = [a["properties"] for a in dump(arm)["assignments"]]
    granted = [a for a in assignments if a["scope"].endswith("/imgdweu01")]
    assert len(granted) == 1 and granted[0]["principalId"] == ME


def test_the_same_assignment_under_another_name_is_refused(arm: ArmServerProcess) -> None:
    scope = f"{SUBSCRIPTION}/resourceGroups/rg"
    body = RoleAssignmentCreateParameters(role_definition_id=BLOB_ROLE, principal_id=ME)
    names = ["11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222"]
    with AuthorizationManagementClient(StaticTokenCredential(), SUB, **arm.client_kwargs()) as c:
        c.role_assignments.create(scope, names[0], body)
        with pytest.raises(HttpResponseError) as exists:
            c.role_assignments.create(scope, names[1], body)
        with pytest.raises(HttpResponseError) as not_a_guid:
            c.role_assignments.create(scope, "not-a-guid", body)
        listed = list(
            c.role_assignments.list_for_scope(f"{scope}/x", filter=f"principalId eq '{ME}'")
        )

    assert (exists.value.status_code, exists.value.error.code) == (409, "RoleAssignmentExists")  # type: ignore[union-attr]
    assert not_a_guid.value.status_code == 400
    assert [a.name for a in listed] == [names[0]]  # an assignment above the scope applies


def test_an_unregistered_provider_refuses_until_registered(arm: ArmServerProcess) -> None:
    unregister(arm, SUB, "Microsoft.Storage")

    async def refused(prov: AzureProvisioner) -> None:
        await prov.create_resource_group(SUB, "rg", "westeurope")  # Microsoft.Resources: fine
        await prov.create_storage_account(SUB, "rg", "imgdweu01", "westeurope", "Standard_LRS")

    with pytest.raises(Conflict) as missing:
        _with_provisioner(arm, refused)
    assert "MissingSubscriptionRegistration" in str(missing.value)
    assert "not registered to use namespace 'Microsoft.Storage'" in str(missing.value)

    async def registered(prov: AzureProvisioner) -> AccountInfo:
        assert not await prov.provider_registered(SUB, "Microsoft.Storage")
        await prov.register_provider(SUB, "Microsoft.Storage")  # Registering, then Registered
        return await _account(prov)

    assert _with_provisioner(arm, registered).name == "imgdweu01"


def test_the_principal_comes_from_the_config_or_the_tokens_oid(arm: ArmServerProcess) -> None:
    from armserver.credentials import AsyncStaticTokenCredential

    async def principal(token: str, configured: str | None) -> str | None:
        prov = AzureProvisioner(
            AsyncStaticTokenCredential(token), arm_endpoint=arm.url, principal_id=configured
        )
        try:
            return await prov.principal_id()
        finally:
            await prov.aclose()

    assert run(principal(principal_token(ME), None)) == ME
    assert run(principal("opaque-token", ME)) == ME
    with pytest.raises(InvalidInput, match=r"set \[azure\] principal_id"):
        run(principal("opaque-token", None))
