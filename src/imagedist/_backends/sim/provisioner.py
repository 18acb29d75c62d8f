"""The provisioner in the simulator: resource groups, accounts and regions, in memory."""

from __future__ import annotations

from collections.abc import Mapping

from ..._domain.regions import REGIONS
from ...abc import AccountInfo, Provisioner

__all__ = ["SimProvisioner"]


class SimProvisioner(Provisioner):
    """Resource groups and storage accounts in memory; the sim's accounts exist from the start."""

    def __init__(self, account_locations: Mapping[str, tuple[str, str]]) -> None:
        self._groups: dict[tuple[str, str], str] = {}
        self._accounts: dict[str, AccountInfo] = {
            name: AccountInfo(sub, "imagedist-storage", name, region, managed=False)
            for name, (sub, region) in account_locations.items()
        }

    async def get_resource_group(self, subscription: str, name: str) -> str | None:
        return self._groups.get((subscription, name))

    async def create_resource_group(self, subscription: str, name: str, region: str) -> None:
        self._groups[(subscription, name)] = region

    async def delete_resource_group(self, subscription: str, name: str) -> None:
        self._groups.pop((subscription, name), None)
        for key, info in list(self._accounts.items()):
            if (info.subscription, info.resource_group) == (subscription, name):
                del self._accounts[key]

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
