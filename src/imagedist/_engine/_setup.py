"""`setup`, `teardown` and `check`: make the cloud match the config, and check it before any bytes
move. Plans are computed first and printed or applied, so a dry run shows exactly what would change.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .._config import Config
from .._domain.changes import ChangeAction, ChangeKind
from .._exceptions import AuthFailed, ImagedistError, InvalidInput
from ..abc import Provisioner
from ._context import EngineContext

__all__ = ["Change", "Problem", "apply_changes", "plan_setup", "plan_teardown", "run_checks"]


@dataclass(frozen=True)
class Change:
    """One thing setup or teardown does."""

    action: ChangeAction
    kind: ChangeKind
    subscription: str
    name: str
    resource_group: str = ""
    region: str = ""
    account: str = ""

    def describe(self) -> str:
        where = f" in {self.subscription}/{self.resource_group}" if self.resource_group else ""
        where = where or (f" in {self.subscription}" if self.subscription else "")
        region = f" ({self.region})" if self.region else ""
        of = f" of account {self.account}" if self.account else ""
        return f"{self.action} {self.kind} {self.name}{of}{where}{region}"


@dataclass(frozen=True)
class Problem:
    """One thing `check` found wrong, with what to do about it."""

    subject: str
    message: str


@dataclass(frozen=True)
class _Account:
    subscription: str
    resource_group: str
    name: str
    region: str
    container: str


def _accounts(config: Config) -> list[_Account]:
    staging = config.staging
    accounts = [
        _Account(
            staging.subscription,
            staging.resource_group,
            staging.account,
            staging.region,
            staging.container,
        )
    ]
    accounts += [
        _Account(t.subscription, t.storage_resource_group, t.account, t.region, t.container)
        for t in config.fleet_targets()
    ]
    return accounts


def _groups(config: Config) -> dict[tuple[str, str], str]:
    """Every resource group the config needs, with the region it is first needed in."""
    groups: dict[tuple[str, str], str] = {}
    for account in _accounts(config):
        groups.setdefault((account.subscription, account.resource_group), account.region)
    for target in config.fleet_targets():
        groups.setdefault((target.subscription, target.resource_group), target.region)
    return groups


async def plan_setup(ctx: EngineContext) -> list[Change]:
    """What setup would change; empty when everything exists.

    :raises InvalidInput: if a storage account name is taken by someone else (nothing changed).
    """
    prov = ctx.backend.provisioner
    changes = [
        Change(ChangeAction.CREATE, ChangeKind.RESOURCE_GROUP, sub, name, region=region)
        for (sub, name), region in _groups(ctx.config).items()
        if await prov.get_resource_group(sub, name) is None
    ]
    for account in _accounts(ctx.config):
        changes += await _plan_account(ctx, prov, account)
    if not await ctx.backend.state.is_ready():
        changes.append(Change(ChangeAction.CREATE, ChangeKind.STATE_TABLES, "", "imagedist state"))
    return changes


async def _plan_account(ctx: EngineContext, prov: Provisioner, account: _Account) -> list[Change]:
    found = await prov.get_storage_account(
        account.subscription, account.resource_group, account.name
    )
    container = Change(
        ChangeAction.CREATE,
        ChangeKind.CONTAINER,
        account.subscription,
        account.container,
        account=account.name,
    )
    if found is None:
        available, reason = await prov.account_name_available(account.subscription, account.name)
        if not available:
            raise InvalidInput(
                f"Storage account name {account.name!r} is not available ({reason}); choose"
                " another name or fleet.account_prefix in the config."
            )
        create = Change(
            ChangeAction.CREATE,
            ChangeKind.STORAGE_ACCOUNT,
            account.subscription,
            account.name,
            account.resource_group,
            account.region,
        )
        return [create, container]
    if found.region != account.region:
        raise InvalidInput(
            f"Storage account {account.name!r} exists in {found.region!r}, not"
            f" {account.region!r}; an image needs its blob in its own region, so fix the config."
        )
    if await ctx.backend.blobs.container_exists(account.name, account.container):
        return []
    return [container]


async def apply_changes(
    ctx: EngineContext, changes: list[Change], on_change: Callable[[Change], None]
) -> None:
    """Carry the changes out in order (groups before accounts before containers)."""
    prov, sku = ctx.backend.provisioner, ctx.settings.storage_sku
    for change in changes:
        if change.action is ChangeAction.CREATE and change.kind is ChangeKind.RESOURCE_GROUP:
            await prov.create_resource_group(change.subscription, change.name, change.region)
        elif change.action is ChangeAction.CREATE and change.kind is ChangeKind.STORAGE_ACCOUNT:
            await prov.create_storage_account(
                change.subscription, change.resource_group, change.name, change.region, sku
            )
        elif change.action is ChangeAction.CREATE and change.kind is ChangeKind.CONTAINER:
            await ctx.backend.blobs.ensure_container(change.account, change.name)
        elif change.action is ChangeAction.CREATE and change.kind is ChangeKind.STATE_TABLES:
            await ctx.backend.state.ensure_ready()
        elif change.action is ChangeAction.DELETE and change.kind is ChangeKind.STORAGE_ACCOUNT:
            await prov.delete_storage_account(
                change.subscription, change.resource_group, change.name
            )
        elif change.action is ChangeAction.DELETE and change.kind is ChangeKind.RESOURCE_GROUP:
            await prov.delete_resource_group(change.subscription, change.name)
        on_change(change)


async def plan_teardown(ctx: EngineContext) -> list[Change]:
    """Every account and resource group setup made (tagged as managed) that still exists."""
    prov = ctx.backend.provisioner
    changes = []
    for account in _accounts(ctx.config):
        found = await prov.get_storage_account(
            account.subscription, account.resource_group, account.name
        )
        if found is not None and found.managed:
            changes.append(
                Change(
                    ChangeAction.DELETE,
                    ChangeKind.STORAGE_ACCOUNT,
                    account.subscription,
                    account.name,
                    account.resource_group,
                    account.region,
                )
            )
    for (sub, name), _ in _groups(ctx.config).items():
        if await prov.get_resource_group(sub, name) is not None:
            changes.append(Change(ChangeAction.DELETE, ChangeKind.RESOURCE_GROUP, sub, name))
    return changes


async def run_checks(ctx: EngineContext) -> list[Problem]:
    """Pre-flight: credentials, regions, resource groups, accounts and containers; one problem
    per line, nothing changed."""
    prov, problems = ctx.backend.provisioner, []
    subscriptions = sorted({a.subscription for a in _accounts(ctx.config)})
    usable: set[str] = set()
    for sub in subscriptions:
        try:
            regions = set(await prov.list_regions(sub))
        except ImagedistError as exc:
            problems.append(Problem(f"subscription {sub}", _reason(exc, "cannot list its regions")))
            continue
        usable.add(sub)
        for region in sorted({a.region for a in _accounts(ctx.config) if a.subscription == sub}):
            if region not in regions:
                problems.append(
                    Problem(
                        f"{sub}/{region}",
                        f"region {region!r} is not available in this subscription; fix the config",
                    )
                )
    for (sub, name), _ in _groups(ctx.config).items():
        if sub in usable and await prov.get_resource_group(sub, name) is None:
            problems.append(
                Problem(f"{sub}/{name}", "resource group is missing; run `imagedist setup`")
            )
    for account in _accounts(ctx.config):
        if account.subscription in usable:
            problems += await _check_account(ctx, prov, account)
    problems += await _check_state(ctx)
    return problems


async def _check_account(ctx: EngineContext, prov: Provisioner, account: _Account) -> list[Problem]:
    subject = f"account {account.name}"
    found = await prov.get_storage_account(
        account.subscription, account.resource_group, account.name
    )
    if found is None:
        return [
            Problem(
                subject,
                f"storage account is missing from {account.subscription}/"
                f"{account.resource_group}; run `imagedist setup`",
            )
        ]
    if found.region != account.region:
        return [Problem(subject, f"is in {found.region!r}, the config says {account.region!r}")]
    try:
        if not await ctx.backend.blobs.container_exists(account.name, account.container):
            return [
                Problem(
                    subject, f"container {account.container!r} is missing; run `imagedist setup`"
                )
            ]
    except ImagedistError as exc:
        return [Problem(subject, _reason(exc, "is not reachable"))]
    return []


async def _check_state(ctx: EngineContext) -> list[Problem]:
    try:
        await ctx.backend.state.list_jobs()
    except ImagedistError as exc:
        return [Problem("state store", _reason(exc, "is not reachable; run `imagedist setup`"))]
    return []


def _reason(exc: ImagedistError, what: str) -> str:
    if isinstance(exc, AuthFailed):
        return f"credentials refused ({exc}); sign in with `az login` or check the role assignments"
    return f"{what}: {exc}"
