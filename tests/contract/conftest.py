"""Fixtures for the port contract suites: one harness per implementation.

A test talks to the port through the harness only, so adding an ``azure`` param (against Azurite)
means adding a harness here. Capabilities an implementation cannot offer (a copy that stays pending,
fault injection, a controllable clock) are ``None`` and the tests that need them skip.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from azurite import AzuriteServer, azurite_server  # noqa: F401  (a fixture, used by name)
from imagedist._backends._local_blobs import LocalBlobStore
from imagedist._backends._local_images import LocalImageService
from imagedist._domain import BlobRef
from imagedist.abc import BlobStore, Clock, ImageService

T = TypeVar("T")
MiB = 1024 * 1024


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run one coroutine to its end (the suites are sync tests, no pytest-asyncio)."""
    return asyncio.run(coro)


class FakeClock(Clock):
    """Virtual time: ``now`` is settable and ``sleep`` advances it instead of waiting."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.t = now

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.t += max(0.0, seconds)
        await asyncio.sleep(0)

    def advance(self, seconds: float) -> None:
        self.t += seconds


@dataclass
class BlobHarness:
    """One blob store under test and what the suite may do with it."""

    kind: str
    store: BlobStore
    clock: FakeClock
    account: str
    container: str
    #: a second account, for copies across accounts
    other_account: str
    #: copies into this account fail; None if the backend cannot inject that
    failing_account: str | None
    #: another adapter instance on the same storage, as a fresh process would build it
    reopen: Callable[[], BlobStore]
    #: an adapter on the same storage whose copies advance at this many bytes per clock second
    throttled: Callable[[float], BlobStore] | None
    #: the local file behind a blob, for local-only checks
    local_path: Callable[[BlobRef], Path] | None

    def ref(self, name: str, account: str | None = None) -> BlobRef:
        return BlobRef(account or self.account, self.container, name)


def _local_blobs(tmp_path: Path) -> BlobHarness:
    root, clock = tmp_path / "blobs", FakeClock()
    failing = "failacct"
    return BlobHarness(
        kind="local",
        store=LocalBlobStore(root, clock, fail_copies_to_accounts=frozenset({failing})),
        clock=clock,
        account="stagingacct",
        container=f"c{uuid.uuid4().hex[:8]}",
        other_account="targetacct",
        failing_account=failing,
        reopen=lambda: LocalBlobStore(root, clock),
        throttled=lambda bw: LocalBlobStore(root, clock, copy_bandwidth=bw),
        local_path=lambda ref: root / ref.account / ref.container / ref.name,
    )


def _azure_blobs(request: pytest.FixtureRequest) -> BlobHarness:
    """The Azure adapter against Azurite (session-wide; skips if Azurite is not installed).

    Azurite finishes a copy inside the Copy Blob request, so no copy is ever seen pending: the
    capabilities that need one (``throttled``), and fault injection (``failing_account``), are None.
    """
    from azure.storage.blob import BlobServiceClient

    from imagedist._backends._azure_blobs import AccountAccess, AzureBlobStore

    server: AzuriteServer = request.getfixturevalue("azurite_server")
    access = {
        name: AccountAccess.from_connection_string(server.connection_string(name))
        for name in server.accounts
    }
    container = f"c{uuid.uuid4().hex[:8]}"

    def drop_containers() -> None:  # Azurite keeps every byte in memory until it is deleted
        for name in server.accounts:
            with BlobServiceClient.from_connection_string(server.connection_string(name)) as svc:
                if svc.get_container_client(container).exists():
                    svc.delete_container(container)

    request.addfinalizer(drop_containers)
    return BlobHarness(
        kind="azure",
        store=AzureBlobStore(access, retry_total=2, initial_backoff=1),
        clock=FakeClock(),
        account="stagingacct",
        container=container,
        other_account="targetacct",
        failing_account=None,
        reopen=lambda: AzureBlobStore(access, retry_total=2, initial_backoff=1),
        throttled=None,
        local_path=None,
    )


@pytest.fixture(
    params=[pytest.param(_local_blobs, id="local"), pytest.param(_azure_blobs, id="azure")]
)
def blobs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BlobHarness]:
    # The azure harness needs the session's Azurite, so it takes the request.
    factory = request.param
    harness: BlobHarness = _azure_blobs(request) if factory is _azure_blobs else factory(tmp_path)
    accounts = {harness.account, harness.other_account, harness.failing_account}
    for account in sorted(a for a in accounts if a):
        run(harness.store.ensure_container(account, harness.container))
    yield harness
    run(harness.store.aclose())


@dataclass
class ImageHarness:
    """One image service under test, the blob store its source blobs live in, and the world."""

    kind: str
    service: ImageService
    blobs: BlobStore
    clock: FakeClock
    subscription: str
    region: str
    resource_group: str
    #: an account in (subscription, region)
    account: str
    #: an account in the same subscription but another region
    foreign_region_account: str
    #: an account in another subscription but the same region
    foreign_subscription_account: str
    container: str
    #: seconds after which a creation settles
    create_seconds: float
    #: (subscription, region, an account there) where creations fail; None if not injectable
    failing: tuple[str, str, str] | None
    #: exactly-once probe: creations started for (subscription, resource group, name)
    creation_count: Callable[[str, str, str], int] | None


def _local_images(tmp_path: Path) -> ImageHarness:
    clock = FakeClock()
    blob_store = LocalBlobStore(tmp_path / "blobs", clock)
    locations = {
        "weuacct": ("sub-a", "westeurope"),
        "neuacct": ("sub-a", "northeurope"),
        "subbacct": ("sub-b", "westeurope"),
        "failacct": ("sub-f", "eastus"),
    }
    service = LocalImageService(
        tmp_path / "images.db",
        clock,
        blob_store,
        account_locations=locations,
        create_seconds=30.0,
        fail_in=frozenset({("sub-f", "eastus")}),
    )
    return ImageHarness(
        kind="local",
        service=service,
        blobs=blob_store,
        clock=clock,
        subscription="sub-a",
        region="westeurope",
        resource_group="rg-images",
        account="weuacct",
        foreign_region_account="neuacct",
        foreign_subscription_account="subbacct",
        container="vhds",
        create_seconds=30.0,
        failing=("sub-f", "eastus", "failacct"),
        creation_count=service.creation_count,
    )


@pytest.fixture(params=[pytest.param(_local_images, id="local")])
def images(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ImageHarness]:
    harness: ImageHarness = request.param(tmp_path)
    run(
        harness.service.ensure_resource_group(
            harness.subscription, harness.resource_group, harness.region
        )
    )
    accounts = [
        harness.account,
        harness.foreign_region_account,
        harness.foreign_subscription_account,
    ]
    if harness.failing:
        subscription, region, account = harness.failing
        run(harness.service.ensure_resource_group(subscription, harness.resource_group, region))
        accounts.append(account)
    for account in accounts:
        run(harness.blobs.ensure_container(account, harness.container))
    yield harness
    run(harness.service.aclose())
    run(harness.blobs.aclose())
