"""The provisioner in the simulator: resource groups, accounts, role assignments, resource
providers and regions, in memory."""

from __future__ import annotations

from collections.abc import Mapping

from ..._domain.changes import DataRole, Role
from ..._domain.regions import REGIONS
from ...abc import AccountInfo, GroupInfo, Provisioner

__all__ = ["SimProvisioner"]


class SimProvisioner(Provisioner):
    """Resource groups and storage accounts in memory; the sim's accounts exist from the start.

    :param principal: the identity whose data access goes by roles, or None (no roles apply).
    """

    def __init__(
        self, account_locations: Mapping[str, tuple[str, str]], *, principal: str | None = None
    ) -> None:
        self._groups: dict[tuple[str, str], GroupInfo] = {}
        self._accounts: dict[str, AccountInfo] = {
            name: AccountInfo(sub, "imagedist-storage", name, region, managed=False)
            for name, (sub, region) in account_locations.items()
        }
        self._principal = principal
        self.roles: set[tuple[str, str, str, DataRole]] = set()  # (sub, account, principal, role)
        self.scoped_roles: set[tuple[str, str, Role]] = set()  # (scope, principal, role), lower
        #: (subscription, namespace) pairs not registered; a test adds to it
        self.unregistered: set[tuple[str, str]] = set()

    async def get_resource_group(self, subscription: str, name: str) -> GroupInfo | None:
        return self._groups.get((subscription, name))

    async def create_resource_group(self, subscription: str, name: str, region: str) -> None:
        found = self._groups.get((subscription, name))
        region = found.region if found is not None else region  # ARM keeps a group's region
        self._groups[(subscription, name)] = GroupInfo(subscription, name, region, managed=True)

    async def delete_resource_group(self, subscription: str, name: str) -> None:
        self._groups.pop((subscription, name), None)
        for key, info in list(self._accounts.items()):
            if (info.subscription, info.resource_group) == (subscription, name):
                del self._accounts[key]

    def add_foreign_group(self, subscription: str, name: str, region: str) -> None:
        """A resource group someone else made (no managed tag): the sim's stand-in for one."""
        self._groups[(subscription, name)] = GroupInfo(subscription, name, region, managed=False)

    async def get_storage_account(
        self, subscription: str, resource_group: str, name: str
    ) -> AccountInfo | None:
        info = self._accounts.get(name)
        if info is None or (info.subscription, info.resource_group) != (
            subscription,
            resource_group,
        ):
            return None
        return info

    async def account_name_available(self, subscription: str, name: str) -> tuple[bool, str]:
        return (False, "AlreadyExists") if name in self._accounts else (True, "")

    async def create_storage_account(
        self, subscription: str, resource_group: str, name: str, region: str, sku: str
    ) -> None:
        self._accounts[name] = AccountInfo(subscription, resource_group, name, region, managed=True)

    async def delete_storage_account(
        self, subscription: str, resource_group: str, name: str
    ) -> None:
        self._accounts.pop(name, None)

    async def list_regions(self, subscription: str) -> list[str]:
        return sorted(REGIONS)

    async def principal_id(self) -> str | None:
        return self._principal

    async def has_role(self, account: AccountInfo, principal_id: str, role: DataRole) -> bool:
        return (account.subscription, account.name, principal_id, role) in self.roles

    async def grant_role(self, account: AccountInfo, principal_id: str, role: DataRole) -> None:
        self.roles.add((account.subscription, account.name, principal_id, role))

    async def has_role_at(self, scope: str, principal_id: str, role: Role) -> bool:
        parts = [p for p in scope.lower().split("/") if p]
        above = {"/" + "/".join(parts[:n]) for n in range(2, len(parts) + 1, 2)}
        return any((s, principal_id.lower(), role) in self.scoped_roles for s in above)

    async def grant_role_at(self, scope: str, principal_id: str, role: Role) -> None:
        self.scoped_roles.add(("/" + scope.lower().strip("/"), principal_id.lower(), role))

    async def provider_registered(self, subscription: str, namespace: str) -> bool:
        return (subscription, namespace.lower()) not in self.unregistered

    async def register_provider(self, subscription: str, namespace: str) -> None:
        self.unregistered.discard((subscription, namespace.lower()))
