"""The setup engine: providers registered and data roles granted (and shown in the plan), changes
made concurrently within Resource Manager's write budget per subscription, and `check` naming a
missing data role with its scope."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from pathlib import Path

import pytest

from imagedist._backends import open_backend
from imagedist._config import Config, load_config
from imagedist._domain import BlobRef
from imagedist._domain.changes import ChangeAction, ChangeKind, DataRole
from imagedist._engine._context import EngineContext
from imagedist._engine._setup import WriteBudget, apply_changes, plan_setup, run_checks
from imagedist._exceptions import AuthFailed
from imagedist.abc import AccountInfo, BlobStore, Clock

from helpers import FakeClock, run, write_config

PRINCIPAL = "3d2c1b0a-9f8e-4d7c-8b6a-5f4e3d2c1b0a"


class SlowProvisioner:
    """A provisioner of the local backend whose writes take ``latency`` seconds and are watched:
    how many run at once, and when (on ``clock``) each subscription's started."""

    def __init__(self, inner: object, clock: Clock, latency: float) -> None:
        self._inner, self._clock, self._latency = inner, clock, latency
        self.in_flight = 0
        self.most_in_flight = 0
        self.writes: dict[str, list[float]] = defaultdict(list)  # subscription -> start times
        self.unregistered: set[tuple[str, str]] = set()

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    async def _write(self, subscription: str) -> None:
        self.writes[subscription].append(self._clock.now())
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self._latency)
        finally:
            self.in_flight -= 1

    async def principal_id(self) -> str | None:
        return PRINCIPAL

    async def create_resource_group(self, subscription: str, name: str, region: str) -> None:
        await self._write(subscription)
        await self._inner.create_resource_group(subscription, name, region)  # type: ignore[attr-defined]

    async def create_storage_account(
        self, subscription: str, resource_group: str, name: str, region: str, sku: str
    ) -> None:
        await self._write(subscription)
        await self._inner.create_storage_account(  # type: ignore[attr-defined]
            subscription, resource_group, name, region, sku
        )

    async def grant_role(self, account: AccountInfo, principal_id: str, role: DataRole) -> None:
        await self._write(account.subscription)
        await self._inner.grant_role(account, principal_id, role)  # type: ignore[attr-defined]

    async def provider_registered(self, subscription: str, namespace: str) -> bool:
        return (subscription, namespace) not in self.unregistered

    async def register_provider(self, subscription: str, namespace: str) -> None:
        await self._write(subscription)
        self.unregistered.discard((subscription, namespace))


def _context(config: Config, *, clock: Clock | None = None, latency: float = 0.0) -> EngineContext:
    backend = open_backend(config)
    if clock is not None:
        backend.clock = clock
    backend.provisioner = SlowProvisioner(backend.provisioner, backend.clock, latency)  # type: ignore[assignment]
    return EngineContext(backend, config)


def _slow(ctx: EngineContext) -> SlowProvisioner:
    prov = ctx.backend.provisioner
    assert isinstance(prov, SlowProvisioner)
    return prov


def test_setup_registers_providers_and_grants_the_data_roles_and_plans_nothing_after(
    tmp_path: Path,
) -> None:
    config = load_config(write_config(tmp_path))
    ctx = _context(config)
    _slow(ctx).unregistered.add(("sub-b", "Microsoft.Storage"))

    changes = run(plan_setup(ctx))
    run(apply_changes(ctx, changes, lambda change: None))

    kinds = [(c.action, c.kind) for c in changes]
    assert kinds[0] == (ChangeAction.REGISTER, ChangeKind.PROVIDER)
    assert (changes[0].subscription, changes[0].name) == ("sub-b", "Microsoft.Storage")
    grants = [c for c in changes if c.action is ChangeAction.GRANT]
    # Blob Data Contributor on each of the 10 accounts; Table Data Contributor on the state's
    assert len(grants) == 11 and {c.principal for c in grants} == {PRINCIPAL}
    table = [c for c in grants if c.name == DataRole.TABLE_DATA_CONTRIBUTOR]
    assert [c.account for c in table] == [config.staging.account]
    assert "grant role Storage Blob Data Contributor on storage account" in grants[0].describe()
    assert run(plan_setup(ctx)) == []  # registered, granted: a second run changes nothing


def test_setup_makes_its_changes_concurrently(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path))
    latency = 0.3
    ctx = _context(config, latency=latency)
    changes = run(plan_setup(ctx))
    writes = sum(1 for c in changes if c.writes)  # 7 groups, 10 accounts, 11 role grants

    started = time.monotonic()
    run(apply_changes(ctx, changes, lambda change: None))
    took = time.monotonic() - started

    assert writes == 28
    assert _slow(ctx).most_in_flight >= 10  # all the accounts at once, say
    # Three waves (groups, accounts, roles) of one latency each, not 28 latencies one by one.
    assert took < writes * latency / 3


def test_no_subscription_makes_more_writes_than_its_budget(tmp_path: Path) -> None:
    """With a budget of 4 writes then 2 a second, a subscription's n-th write starts no earlier
    than (n - 4) / 2 seconds after its first (virtual time)."""
    config = load_config(write_config(tmp_path))
    clock = FakeClock()
    ctx = _context(config, clock=clock)
    start = clock.now()
    changes = run(plan_setup(ctx))

    budget = WriteBudget(clock, burst=4, per_second=2.0)
    run(apply_changes(ctx, changes, lambda change: None, budget=budget))

    writes = _slow(ctx).writes
    assert set(writes) == {"sub-staging", "sub-a", "sub-b", "sub-c"}
    for times in writes.values():
        for n, at in enumerate(sorted(times), start=1):
            assert at - start >= (n - 4) / 2.0 - 1e-9
    assert len(writes["sub-a"]) > 4  # the budget did bind


def test_setup_reports_progress_as_each_change_is_made(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path))
    ctx = _context(config)
    changes = run(plan_setup(ctx))
    seen: list[tuple[int, int]] = []

    run(
        apply_changes(
            ctx,
            changes,
            lambda c: None,
            on_progress=lambda done, total, c: seen.append((done, total)),
        )
    )

    assert seen == [(n, len(changes)) for n in range(1, len(changes) + 1)]


class RefusingBlobs:
    """The blob store of the local backend, except that one account answers writes the way Azure
    Storage answers an identity without a data role (403 AuthorizationPermissionMismatch)."""

    def __init__(self, inner: BlobStore, refused_account: str) -> None:
        self._inner, self._refused = inner, refused_account

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    async def create_page_blob(self, ref: BlobRef, size: int, *, overwrite: bool = False) -> None:
        if ref.account == self._refused:
            raise AuthFailed(
                f"create page blob '{ref}' failed: This request is not authorized to perform this"
                " operation using this permission. (HTTP 403, AuthorizationPermissionMismatch)"
            )
        await self._inner.create_page_blob(ref, size, overwrite=overwrite)


def test_check_names_the_missing_data_role_and_its_scope(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path))
    ctx = _context(config)
    run(apply_changes(ctx, run(plan_setup(ctx)), lambda change: None))
    assert run(run_checks(ctx)) == []  # every account written, read, copied and cleaned
    target = config.fleet_targets()[4]
    ctx.backend.blobs = RefusingBlobs(ctx.backend.blobs, target.account)  # type: ignore[assignment]

    problems = run(run_checks(ctx))

    assert len(problems) == 1
    scope = (
        f"/subscriptions/{target.subscription}/resourceGroups/{target.storage_resource_group}"
        f"/providers/Microsoft.Storage/storageAccounts/{target.account}"
    )
    assert problems[0].subject == f"account {target.account}"
    assert f"lacks role Storage Blob Data Contributor on scope {scope}" in problems[0].message
    assert PRINCIPAL in problems[0].message


@pytest.mark.parametrize(
    "bandwidth", [pytest.param(0.0, id="copy-at-once"), pytest.param(1e-5, id="copy-held-pending")]
)
def test_check_leaves_no_probe_blob_behind(tmp_path: Path, bandwidth: float) -> None:
    """The probe's copy is waited for, or aborted if it stays pending, before it is deleted."""
    config = load_config(write_config(tmp_path, bandwidth=bandwidth))
    ctx = _context(config)
    run(apply_changes(ctx, run(plan_setup(ctx)), lambda change: None))

    assert run(run_checks(ctx)) == []

    places = [(config.staging.account, config.staging.container)]
    places += [(t.account, t.container) for t in config.fleet_targets()]
    for account, container in places:
        assert run(ctx.backend.blobs.list_blobs(account, container)) == []


def test_check_reports_an_unregistered_provider_with_the_fix(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path))
    ctx = _context(config)
    run(apply_changes(ctx, run(plan_setup(ctx)), lambda change: None))
    _slow(ctx).unregistered.add(("sub-c", "Microsoft.Compute"))

    problems = run(run_checks(ctx))

    assert [(p.subject, p.message.split(";")[0]) for p in problems] == [
        ("subscription sub-c", "resource provider Microsoft.Compute is not registered")
    ]
    assert "az provider register --namespace Microsoft.Compute" in problems[0].message
