"""`setup`, `teardown` and `check`: make the cloud match the config, and check it before any bytes
move. Plans are computed first and printed or applied, so a dry run shows exactly what would change.

Setup registers the resource providers a subscription lacks, creates the resource groups, storage
accounts and containers the config declares, and grants the identity that moves the data the roles
it needs on them. It applies its changes concurrently, in four waves (providers, groups, accounts,
then what lives in or on an account), within Resource Manager's write budget per subscription.
Teardown deletes only what carries setup's tag and says what it leaves, and why.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from .._config import Config
from .._domain import BlobRef
from .._domain.changes import ChangeAction, ChangeKind, DataRole, ResourceProvider
from .._exceptions import AuthFailed, ImagedistError, InvalidInput
from ..abc import AccountInfo, Clock, CopyStatus, GroupInfo, Provisioner
from ._changes import Change, Problem
from ._context import EngineContext
from ._gallery_setup import apply_gallery_change, check_galleries, plan_galleries

__all__ = [
    "Change",
    "Problem",
    "WriteBudget",
    "apply_changes",
    "plan_setup",
    "plan_teardown",
    "run_checks",
]

#: Resource Manager lets a subscription make about this many writes at once, then refills
#: ``ARM_WRITES_PER_SECOND`` (its token bucket: 200 writes, 10 a second, per subscription).
ARM_WRITE_BURST = 200
ARM_WRITES_PER_SECOND = 10.0
#: Changes in flight at once: enough to overlap ARM's long-running operations.
SETUP_CONCURRENCY = 32
#: Reads in flight at once while planning or checking.
READ_CONCURRENCY = 16
T = TypeVar("T")

#: Where `check` writes its probe blobs (deleted again at once).
PROBE_PREFIX = "imagedist-check/"
#: Looks at the probe's copy before giving up on it (one poll interval apart).
PROBE_COPY_POLLS = 20


@dataclass(frozen=True)
class _Account:
    subscription: str
    resource_group: str
    name: str
    region: str
    container: str

    def info(self) -> AccountInfo:
        return AccountInfo(self.subscription, self.resource_group, self.name, self.region, True)

    @property
    def scope(self) -> str:
        """Its Resource Manager id, as a role assignment names its scope."""
        return (
            f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.Storage/storageAccounts/{self.name}"
        )


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


def _state_account(config: Config) -> str:
    return config.azure.state_account or config.staging.account


def _groups(config: Config) -> dict[tuple[str, str], str]:
    """Every resource group the config needs, with the region it is first needed in."""
    groups: dict[tuple[str, str], str] = {}
    for account in _accounts(config):
        groups.setdefault((account.subscription, account.resource_group), account.region)
    for target in config.fleet_targets():
        groups.setdefault((target.subscription, target.resource_group), target.region)
    return groups


def _images_groups(config: Config) -> set[tuple[str, str]]:
    return {(t.subscription, t.resource_group) for t in config.fleet_targets()}


async def _gather_limited(calls: Iterable[Callable[[], Awaitable[T]]], limit: int) -> list[T]:
    """Run the calls concurrently, at most ``limit`` at once; results in the calls' order."""
    gate = asyncio.Semaphore(limit)

    async def one(call: Callable[[], Awaitable[T]]) -> T:
        async with gate:
            return await call()

    return list(await asyncio.gather(*(one(c) for c in calls)))


# setup


async def plan_setup(ctx: EngineContext) -> list[Change]:
    """What setup would change; empty when everything exists.

    :raises InvalidInput: if a storage account name is taken by someone else (nothing changed).
    """
    prov, config = ctx.backend.provisioner, ctx.config
    subscriptions = sorted({sub for sub, _ in _groups(config)})
    unregistered = await _unregistered_providers(prov, subscriptions)
    changes = [
        Change(ChangeAction.REGISTER, ChangeKind.PROVIDER, sub, namespace)
        for sub, namespace in unregistered
    ]
    missing_groups = await _missing_groups(prov, config)
    changes += [
        Change(ChangeAction.CREATE, ChangeKind.RESOURCE_GROUP, sub, name, region=region)
        for (sub, name), region in missing_groups.items()
    ]
    storage_unregistered = {sub for sub, ns in unregistered if ns == ResourceProvider.STORAGE}
    principal = await prov.principal_id()

    def plan(account: _Account) -> Callable[[], Awaitable[list[Change]]]:
        # Without Microsoft.Storage, nothing of it can be read (not even a name's availability);
        # without its group, the account cannot exist.
        readable = account.subscription not in storage_unregistered
        group = (account.subscription, account.resource_group) not in missing_groups
        return lambda: _plan_account(
            ctx, prov, account, principal, readable=readable, exists_maybe=readable and group
        )

    for planned in await _gather_limited(map(plan, _accounts(config)), READ_CONCURRENCY):
        changes += planned
    if not await ctx.backend.state.is_ready():
        changes.append(Change(ChangeAction.CREATE, ChangeKind.STATE_TABLES, "", "imagedist state"))
    changes += await plan_galleries(ctx)
    return changes


async def _unregistered_providers(
    prov: Provisioner, subscriptions: Sequence[str]
) -> list[tuple[str, str]]:
    pairs = [(sub, str(ns)) for sub in subscriptions for ns in ResourceProvider]

    def look(pair: tuple[str, str]) -> Callable[[], Awaitable[bool]]:
        return lambda: prov.provider_registered(*pair)

    registered = await _gather_limited(map(look, pairs), READ_CONCURRENCY)
    return [pair for pair, ok in zip(pairs, registered, strict=True) if not ok]


async def _missing_groups(prov: Provisioner, config: Config) -> dict[tuple[str, str], str]:
    groups = list(_groups(config).items())

    def look(key: tuple[str, str]) -> Callable[[], Awaitable[GroupInfo | None]]:
        return lambda: prov.get_resource_group(*key)

    found = await _gather_limited((look(key) for key, _ in groups), READ_CONCURRENCY)
    return {key: region for (key, region), info in zip(groups, found, strict=True) if info is None}


async def _plan_account(
    ctx: EngineContext,
    prov: Provisioner,
    account: _Account,
    principal: str | None,
    *,
    readable: bool,
    exists_maybe: bool,
) -> list[Change]:
    found = None
    if exists_maybe:
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
    roles = _roles_for(ctx.config, account)
    if found is None:
        if readable:  # names are global: someone else's account may hold it
            available, reason = await prov.account_name_available(
                account.subscription, account.name
            )
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
        grants = [_grant(account, principal, role) for role in roles] if principal else []
        return [create, container, *grants]
    if found.region != account.region:
        raise InvalidInput(
            f"Storage account {account.name!r} exists in {found.region!r}, not"
            f" {account.region!r}; an image needs its blob in its own region, so fix the config."
        )
    changes = []
    if principal:
        for role in roles:
            if not await prov.has_role(found, principal, role):
                changes.append(_grant(account, principal, role))
    if not await ctx.backend.blobs.container_exists(account.name, account.container):
        changes.insert(0, container)
    return changes


def _roles_for(config: Config, account: _Account) -> list[DataRole]:
    roles = [DataRole.BLOB_DATA_CONTRIBUTOR]
    if account.name == _state_account(config):
        roles.append(DataRole.TABLE_DATA_CONTRIBUTOR)
    return roles


def _grant(account: _Account, principal: str, role: DataRole) -> Change:
    return Change(
        ChangeAction.GRANT,
        ChangeKind.ROLE_ASSIGNMENT,
        account.subscription,
        str(role),
        account.resource_group,
        account.region,
        account=account.name,
        principal=principal,
    )


# applying changes


class WriteBudget:
    """Resource Manager's write budget, one token bucket per subscription: ``burst`` writes at
    once, then ``per_second``. A write waits (on the clock) until its subscription has a token."""

    def __init__(
        self,
        clock: Clock,
        *,
        burst: int = ARM_WRITE_BURST,
        per_second: float = ARM_WRITES_PER_SECOND,
    ) -> None:
        self._clock, self._burst, self._rate = clock, burst, per_second
        self._buckets: dict[str, tuple[float, float]] = {}  # subscription -> (tokens, at)
        self._lock = asyncio.Lock()

    async def take(self, subscription: str) -> None:
        while True:
            async with self._lock:  # one bucket update at a time: no token is handed out twice
                now = self._clock.now()
                tokens, at = self._buckets.get(subscription, (float(self._burst), now))
                tokens = min(float(self._burst), tokens + (now - at) * self._rate)
                if tokens >= 1.0:
                    self._buckets[subscription] = (tokens - 1.0, now)
                    return
                self._buckets[subscription] = (tokens, now)
                wait = (1.0 - tokens) / self._rate
            await self._clock.sleep(wait)


#: The waves changes are applied in: each needs what the ones before it made.
_WAVES: list[set[tuple[ChangeAction, ChangeKind]]] = [
    {(ChangeAction.REGISTER, ChangeKind.PROVIDER)},
    {(ChangeAction.CREATE, ChangeKind.RESOURCE_GROUP)},
    {
        (ChangeAction.CREATE, ChangeKind.STORAGE_ACCOUNT),
        (ChangeAction.DELETE, ChangeKind.STORAGE_ACCOUNT),
        (ChangeAction.CREATE, ChangeKind.GALLERY),  # with its resource group
    },
    {
        (ChangeAction.CREATE, ChangeKind.CONTAINER),
        (ChangeAction.GRANT, ChangeKind.ROLE_ASSIGNMENT),
        (ChangeAction.CREATE, ChangeKind.STATE_TABLES),
        (ChangeAction.DELETE, ChangeKind.RESOURCE_GROUP),
        (ChangeAction.CREATE, ChangeKind.IMAGE_DEFINITION),
        (ChangeAction.SHARE, ChangeKind.GALLERY),
        (ChangeAction.GRANT, ChangeKind.GALLERY),  # Reader for [gallery] readers
    },
]

Progress = Callable[[int, int, Change], None]


async def apply_changes(
    ctx: EngineContext,
    changes: Sequence[Change],
    on_change: Callable[[Change], None],
    *,
    on_progress: Progress | None = None,
    budget: WriteBudget | None = None,
) -> None:
    """Carry the changes out: concurrently within a wave, wave after wave (providers, groups,
    accounts, then containers, roles and tables; teardown's accounts before their groups), each
    Resource Manager write within its subscription's budget. Changes that ``KEEP`` are skipped.

    :param on_change: called after each change is made.
    :param on_progress: called after each change with (done, total, change).
    """
    budget = budget or WriteBudget(ctx.backend.clock)
    todo = [c for c in changes if c.action is not ChangeAction.KEEP]
    done = 0

    async def one(change: Change) -> None:
        nonlocal done
        if change.writes:
            await budget.take(change.subscription)
        await _apply(ctx, change)
        done += 1
        on_change(change)
        if on_progress is not None:
            on_progress(done, len(todo), change)

    for wave in _WAVES:
        batch = [c for c in todo if (c.action, c.kind) in wave]
        await _gather_limited([_bind(one, c) for c in batch], SETUP_CONCURRENCY)


def _bind(
    step: Callable[[Change], Awaitable[None]], change: Change
) -> Callable[[], Awaitable[None]]:
    return lambda: step(change)


async def _apply(ctx: EngineContext, change: Change) -> None:
    prov, sku = ctx.backend.provisioner, ctx.settings.storage_sku
    action, kind = change.action, change.kind
    if (action, kind) == (ChangeAction.REGISTER, ChangeKind.PROVIDER):
        await prov.register_provider(change.subscription, change.name)
    elif (action, kind) == (ChangeAction.CREATE, ChangeKind.RESOURCE_GROUP):
        await prov.create_resource_group(change.subscription, change.name, change.region)
    elif (action, kind) == (ChangeAction.CREATE, ChangeKind.STORAGE_ACCOUNT):
        await prov.create_storage_account(
            change.subscription, change.resource_group, change.name, change.region, sku
        )
    elif (action, kind) == (ChangeAction.CREATE, ChangeKind.CONTAINER):
        await ctx.backend.blobs.ensure_container(change.account, change.name)
    elif (action, kind) == (ChangeAction.GRANT, ChangeKind.ROLE_ASSIGNMENT):
        account = AccountInfo(
            change.subscription, change.resource_group, change.account, change.region, True
        )
        await prov.grant_role(account, change.principal, DataRole(change.name))
    elif (action, kind) == (ChangeAction.CREATE, ChangeKind.STATE_TABLES):
        await ctx.backend.state.ensure_ready()
    elif (action, kind) == (ChangeAction.DELETE, ChangeKind.STORAGE_ACCOUNT):
        await prov.delete_storage_account(change.subscription, change.resource_group, change.name)
    elif (action, kind) == (ChangeAction.DELETE, ChangeKind.RESOURCE_GROUP):
        await prov.delete_resource_group(change.subscription, change.name)
    else:
        await apply_gallery_change(
            ctx, action, kind, change.subscription, change.name, principal=change.principal
        )


# teardown

NOT_OURS = "not made by setup (no imagedist-managed tag), so not imagedist's to delete"
KEPT_IMAGES = "holds the images, kept by --keep-images"


async def plan_teardown(ctx: EngineContext, *, keep_images: bool = False) -> list[Change]:
    """What teardown deletes, and what it leaves and why: it deletes only the resource groups and
    accounts setup made (tagged ``imagedist-managed=true``), and with ``keep_images`` not the
    images resource groups. Accounts come first, then groups.
    """
    prov, config = ctx.backend.provisioner, ctx.config
    groups = await _teardown_groups(prov, config, keep_images)
    accounts = await _teardown_accounts(prov, config)
    for account in accounts:
        if account.action is ChangeAction.KEEP:
            # Deleting a group takes every account in it: keeping the account keeps its group.
            groups = [_kept_for_account(group, account) for group in groups]
    return accounts + groups


async def _teardown_groups(prov: Provisioner, config: Config, keep_images: bool) -> list[Change]:
    keys = list(_groups(config))

    def look(key: tuple[str, str]) -> Callable[[], Awaitable[GroupInfo | None]]:
        return lambda: prov.get_resource_group(*key)

    found = await _gather_limited(map(look, keys), READ_CONCURRENCY)
    changes = []
    for (sub, name), info in zip(keys, found, strict=True):
        if info is None:
            continue
        keep = _keep_reason(info.managed, (sub, name), config, keep_images)
        action = ChangeAction.KEEP if keep else ChangeAction.DELETE
        changes.append(Change(action, ChangeKind.RESOURCE_GROUP, sub, name, reason=keep))
    return changes


async def _teardown_accounts(prov: Provisioner, config: Config) -> list[Change]:
    accounts = _accounts(config)

    def look(account: _Account) -> Callable[[], Awaitable[AccountInfo | None]]:
        return lambda: prov.get_storage_account(
            account.subscription, account.resource_group, account.name
        )

    found = await _gather_limited(map(look, accounts), READ_CONCURRENCY)
    changes = []
    for account, info in zip(accounts, found, strict=True):
        if info is None:
            continue
        action = ChangeAction.DELETE if info.managed else ChangeAction.KEEP
        changes.append(
            Change(
                action,
                ChangeKind.STORAGE_ACCOUNT,
                account.subscription,
                account.name,
                account.resource_group,
                account.region,
                reason="" if info.managed else NOT_OURS,
            )
        )
    return changes


def _kept_for_account(group: Change, account: Change) -> Change:
    holds = (group.subscription, group.name) == (account.subscription, account.resource_group)
    if not holds or group.action is not ChangeAction.DELETE:
        return group
    reason = f"it holds storage account {account.name}, which setup did not make"
    return Change(ChangeAction.KEEP, group.kind, group.subscription, group.name, reason=reason)


def _keep_reason(managed: bool, group: tuple[str, str], config: Config, keep_images: bool) -> str:
    if not managed:
        return NOT_OURS
    if keep_images and group in _images_groups(config):
        return KEPT_IMAGES
    return ""


# check


async def run_checks(ctx: EngineContext) -> list[Problem]:
    """Pre-flight: credentials, resource providers, regions, resource groups, accounts,
    containers, data access (roles) and the state store; one problem per line, nothing changed
    but the probe blobs, which are deleted again."""
    prov, problems = ctx.backend.provisioner, []
    subscriptions = sorted({a.subscription for a in _accounts(ctx.config)})
    usable: set[str] = set()
    for sub in subscriptions:
        try:
            regions = set(await prov.list_regions(sub))
            unregistered = [
                ns for ns in ResourceProvider if not await prov.provider_registered(sub, str(ns))
            ]
        except ImagedistError as exc:
            problems.append(Problem(f"subscription {sub}", _reason(exc, "cannot list its regions")))
            continue
        for namespace in unregistered:
            problems.append(
                Problem(
                    f"subscription {sub}",
                    f"resource provider {namespace} is not registered; run `imagedist setup`"
                    f" (or `az provider register --namespace {namespace} --subscription {sub}`)",
                )
            )
        if unregistered:
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
    principal = await prov.principal_id() if usable else None

    def check(account: _Account) -> Callable[[], Awaitable[list[Problem]]]:
        return lambda: _check_account(ctx, prov, account, principal)

    checked = [a for a in _accounts(ctx.config) if a.subscription in usable]
    for found in await _gather_limited(map(check, checked), READ_CONCURRENCY):
        problems += found
    problems += await _check_state(ctx, principal)
    problems += [Problem(subject, message) for subject, message in await check_galleries(ctx)]
    return problems


async def _check_account(
    ctx: EngineContext, prov: Provisioner, account: _Account, principal: str | None
) -> list[Problem]:
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
    except AuthFailed as exc:
        return [_denied(subject, account, principal, DataRole.BLOB_DATA_CONTRIBUTOR, exc)]
    except ImagedistError as exc:
        return [Problem(subject, _reason(exc, "is not reachable"))]
    return await _probe_blobs(ctx, account, principal)


async def _probe_blobs(
    ctx: EngineContext, account: _Account, principal: str | None
) -> list[Problem]:
    """Write, read, copy (the copy's source access is a user delegation SAS under Entra ID) and
    delete a tiny blob: what a job does to the account, in miniature."""
    blobs, subject = ctx.backend.blobs, f"account {account.name}"
    probe = uuid.uuid4().hex[:12]
    first = BlobRef(account.name, account.container, f"{PROBE_PREFIX}{probe}.vhd")
    second = BlobRef(account.name, account.container, f"{PROBE_PREFIX}{probe}-copy.vhd")
    made: list[BlobRef] = []
    try:
        await blobs.create_page_blob(first, 512)
        made.append(first)
        await blobs.write_pages(first, 0, b"\x01" * 512)
        await blobs.read(first, 0, 512)
        made.append(second)
        copy_id = await blobs.start_copy(first, second)
        await _settle_probe_copy(ctx, second, copy_id)
    except AuthFailed as exc:
        return [_denied(subject, account, principal, DataRole.BLOB_DATA_CONTRIBUTOR, exc)]
    except ImagedistError as exc:
        return [Problem(subject, _reason(exc, "cannot write, read and copy a test blob"))]
    finally:
        for ref in made:
            # A probe left behind is harmless; what went wrong is reported above.
            with contextlib.suppress(ImagedistError):
                await blobs.delete_blob(ref)
    return []


async def _settle_probe_copy(ctx: EngineContext, copy: BlobRef, copy_id: str) -> None:
    """Wait a little for the probe's copy (one page: Azure finishes it at once) and abort it if
    it is still pending, so that deleting the blob never races a copy in flight."""
    blobs = ctx.backend.blobs
    for _ in range(PROBE_COPY_POLLS):
        if (await blobs.get_properties(copy)).copy_status is not CopyStatus.PENDING:
            return
        await ctx.pause()
    await blobs.abort_copy(copy, copy_id)


def _denied(
    subject: str, account: _Account, principal: str | None, role: DataRole, exc: Exception
) -> Problem:
    if principal is None:  # account keys or no roles at all: not a role to grant
        return Problem(subject, _reason(AuthFailed(str(exc)), "refused access"))
    return Problem(
        subject,
        f"principal {principal} lacks role {role} on scope {account.scope}; run `imagedist"
        f" setup` or assign it (az role assignment create --assignee {principal} --role"
        f' "{role}" --scope {account.scope})',
    )


async def _check_state(ctx: EngineContext, principal: str | None) -> list[Problem]:
    try:
        await ctx.backend.state.list_jobs()
        await ctx.backend.state.probe_write()  # reading is not writing: the role says both
    except AuthFailed as exc:
        state = _state_account(ctx.config)
        account = next((a for a in _accounts(ctx.config) if a.name == state), None)
        if account is not None:
            role = DataRole.TABLE_DATA_CONTRIBUTOR
            return [_denied("state store", account, principal, role, exc)]
        return [Problem("state store", _reason(exc, "is not reachable"))]
    except ImagedistError as exc:
        return [Problem("state store", _reason(exc, "is not reachable; run `imagedist setup`"))]
    return []


def _reason(exc: ImagedistError, what: str) -> str:
    if isinstance(exc, AuthFailed):
        return f"credentials refused ({exc}); sign in with `az login` or check the role assignments"
    return f"{what}: {exc}"
