"""Provisioning on the embedded backend: resource groups, accounts and role assignments recorded
in a JSON file, accounts as folders of the local blob store. Its data access is not by role (no
identities on a folder), and every resource provider counts as registered."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import threading
from pathlib import Path
from typing import Any

from ..._domain.changes import DataRole, Role
from ..._domain.regions import REGIONS, RESTRICTED_REGIONS
from ...abc import AccountInfo, GroupInfo, Provisioner

__all__ = ["LocalProvisioner"]


class LocalProvisioner(Provisioner):
    """:param root: the local backend's folder; accounts live under ``root/blobs``."""

    def __init__(self, root: Path) -> None:
        self._file = root / "provisioning.json"
        self._blobs = root / "blobs"
        self._lock = threading.Lock()

    def _load(self) -> dict[str, dict[str, Any]]:
        data: dict[str, dict[str, Any]] = {"groups": {}, "accounts": {}, "roles": {}}
        if self._file.exists():
            data.update(json.loads(self._file.read_text(encoding="utf-8")))
        return data

    def _save(self, data: dict[str, dict[str, Any]]) -> None:
        self._file.parent.mkdir(parents=True, exist_ok=True)  # the backend makes its folder lazily
        temp = self._file.with_suffix(".tmp")
        temp.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(temp, self._file)

    async def _edit(self, change: Any) -> Any:
        def locked() -> Any:
            with self._lock:
                data = self._load()
                result = change(data)
                self._save(data)
                return result

        return await asyncio.to_thread(locked)

    async def _read(self) -> dict[str, dict[str, Any]]:
        """The recorded state, without writing it back: a read creates no file."""

        def locked() -> dict[str, dict[str, Any]]:
            with self._lock:
                return self._load()

        return await asyncio.to_thread(locked)

    async def get_resource_group(self, subscription: str, name: str) -> GroupInfo | None:
        group = (await self._read())["groups"].get(f"{subscription}/{name}")
        if group is None:
            return None
        # A group recorded before the tag was kept counts as not ours: teardown leaves it.
        return GroupInfo(subscription, name, str(group["region"]), bool(group.get("managed")))

    async def create_resource_group(self, subscription: str, name: str, region: str) -> None:
        def create(data: dict[str, dict[str, Any]]) -> None:
            key = f"{subscription}/{name}"
            # Create or update, as ARM's PUT does: an existing group keeps its region, gets the tag.
            data["groups"].setdefault(key, {"region": region})["managed"] = True

        await self._edit(create)

    async def delete_resource_group(self, subscription: str, name: str) -> None:
        def delete(data: dict[str, dict[str, Any]]) -> list[str]:
            data["groups"].pop(f"{subscription}/{name}", None)
            doomed = [
                key
                for key, acct in data["accounts"].items()
                if acct["subscription"] == subscription and acct["resource_group"] == name
            ]
            for key in doomed:
                del data["accounts"][key]
            return doomed

        for account in await self._edit(delete):
            await asyncio.to_thread(shutil.rmtree, self._blobs / account, True)

    async def get_storage_account(
        self, subscription: str, resource_group: str, name: str
    ) -> AccountInfo | None:
        acct = (await self._read())["accounts"].get(name)
        if acct is None or (acct["subscription"], acct["resource_group"]) != (
            subscription,
            resource_group,
        ):
            return None
        return AccountInfo(subscription, resource_group, name, acct["region"], acct["managed"])

    async def account_name_available(self, subscription: str, name: str) -> tuple[bool, str]:
        taken = name in (await self._read())["accounts"]
        return (False, "AlreadyExists") if taken else (True, "")

    async def create_storage_account(
        self, subscription: str, resource_group: str, name: str, region: str, sku: str
    ) -> None:
        def create(data: dict[str, dict[str, Any]]) -> None:
            data["accounts"][name] = {
                "subscription": subscription,
                "resource_group": resource_group,
                "region": region,
                "sku": sku,
                "managed": True,
            }

        await self._edit(create)
        await asyncio.to_thread((self._blobs / name).mkdir, parents=True, exist_ok=True)

    async def delete_storage_account(
        self, subscription: str, resource_group: str, name: str
    ) -> None:
        await self._edit(lambda d: d["accounts"].pop(name, None))
        await asyncio.to_thread(shutil.rmtree, self._blobs / name, True)

    async def list_regions(self, subscription: str) -> list[str]:
        # As for a subscription that was never granted access to a restricted region.
        return sorted(set(REGIONS) - RESTRICTED_REGIONS)

    async def principal_id(self) -> str | None:
        return None

    async def has_role(self, account: AccountInfo, principal_id: str, role: DataRole) -> bool:
        key = _role_key(account, principal_id, role)
        return key in (await self._read())["roles"]

    async def grant_role(self, account: AccountInfo, principal_id: str, role: DataRole) -> None:
        def grant(data: dict[str, dict[str, Any]]) -> None:
            data["roles"][_role_key(account, principal_id, role)] = True

        await self._edit(grant)

    async def has_role_at(self, scope: str, principal_id: str, role: Role) -> bool:
        roles = (await self._read()).get("roles", {})
        return any(key in roles for key in _scope_keys(scope, principal_id, role))

    async def grant_role_at(self, scope: str, principal_id: str, role: Role) -> None:
        def grant(data: dict[str, dict[str, Any]]) -> None:
            data.setdefault("roles", {})[_scope_keys(scope, principal_id, role)[-1]] = True

        await self._edit(grant)

    async def provider_registered(self, subscription: str, namespace: str) -> bool:
        return True

    async def register_provider(self, subscription: str, namespace: str) -> None:
        return None


def _scope_keys(scope: str, principal_id: str, role: Role) -> list[str]:
    """The keys of the role at the scope and at every scope above it (ARM ids nest by path)."""
    parts = [p for p in scope.lower().split("/") if p]
    return [
        f"scope:/{'/'.join(parts[:n])}|{principal_id.lower()}|{role}"
        for n in range(2, len(parts) + 1, 2)
    ]


def _role_key(account: AccountInfo, principal_id: str, role: DataRole) -> str:
    return f"{account.subscription}/{account.resource_group}/{account.name}/{principal_id}/{role}"
