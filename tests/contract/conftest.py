"""Fixtures for the port contract suites: one harness per implementation.

A test talks to the port through the harness only, so adding an ``azure`` param (against Azurite)
means adding a harness here. Capabilities an implementation cannot offer (a copy that stays pending,
fault injection, a controllable clock) are ``None`` and the tests that need them skip.

The ``azure`` params of the image service and the provisioner talk to the ARM test server
(``tests/armserver``, reset for every test) through the real ``azure-mgmt-*`` ``.aio`` clients;
the image service's source blobs live in Azurite.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast
from urllib.parse import quote

import pytest

from armserver.process import ArmServerProcess
from azurite import AzuriteServer
from imagedist._backends.local.blobs import LocalBlobStore
from imagedist._backends.local.gallery import LocalGalleryService
from imagedist._backends.local.images import LocalImageService
from imagedist._backends.local.provisioner import LocalProvisioner
from imagedist._domain import BlobRef
from imagedist._domain.gallery import GalleryRef
from imagedist.abc import (
    AccountInfo,
    BlobStore,
    Clock,
    GalleryService,
    ImageService,
    Provisioner,
    ProvisioningState,
)

from held_copies import CopyWorld, HeldCopiesTransport
from helpers import FakeClock, run

T = TypeVar("T")
MiB = 1024 * 1024


class WallClock(Clock):
    """Real time, for an implementation that settles on a server's clock: ``sleep`` waits."""

    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class _OwnLoop:
    """An event loop in a thread of its own, for adapters that must live in one loop.

    The Azure image service and provisioner keep their SDK clients (aiohttp sessions) and pending
    pollers for their whole life, in the loop that first used them, as they do in the CLI (one
    ``asyncio.run`` per command). The suites call :func:`run` once per step, a new loop each time;
    :meth:`pin` wraps an adapter so every coroutine method of it runs in this one loop instead.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="contract-adapter-loop", daemon=True
        )
        self._thread.start()

    def pin(self, adapter: T) -> T:
        loop = self.loop

        class Pinned:
            def __getattr__(self, name: str) -> Any:
                attr = getattr(adapter, name)
                if not inspect.iscoroutinefunction(attr):
                    return attr

                async def call(*args: Any, **kwargs: Any) -> Any:
                    future = asyncio.run_coroutine_threadsafe(attr(*args, **kwargs), loop)
                    return await asyncio.wrap_future(future)

                return call

        return cast(T, Pinned())

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.loop.shutdown_asyncgens(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


def _arm_credential() -> Any:
    """A static bearer token (the ARM test server checks only that there is one)."""
    from armserver.credentials import AsyncStaticTokenCredential

    return AsyncStaticTokenCredential()


def _arm_client_kwargs(server: ArmServerProcess) -> dict[str, Any]:
    """What ``_azure.py`` passes as ``client_kwargs``, plus trust in the test server's CA."""
    return {"connection_verify": server.ca_file, "polling_interval": 0.02, "retry_total": 2}


def _drop_container(server: AzuriteServer, container: str) -> None:
    """Azurite keeps every byte in memory until it is deleted."""
    from azure.storage.blob import BlobServiceClient

    for name in server.accounts:
        with BlobServiceClient.from_connection_string(server.connection_string(name)) as svc:
            if svc.get_container_client(container).exists():
                svc.delete_container(container)


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
    )


def _azure_blobs(request: pytest.FixtureRequest) -> BlobHarness:
    """The Azure adapter against Azurite (session-wide; skips if Azurite is not installed).

    Azurite finishes a copy inside the Copy Blob request, so every adapter's transport goes
    through :class:`HeldCopiesTransport`: a throttled adapter's copies are held pending and
    advance in the harness's clock time, copies into ``target3acct`` fail, and Abort Copy stops a
    held copy, all answered as Azure answers them, through the real SDK.
    """
    from imagedist._backends.azure.blobs import AccountAccess, AzureBlobStore

    server: AzuriteServer = request.getfixturevalue("azurite_server")
    access = {
        name: AccountAccess.from_connection_string(server.connection_string(name))
        for name in server.accounts
    }
    container = f"c{uuid.uuid4().hex[:8]}"
    request.addfinalizer(lambda: _drop_container(server, container))
    clock, failing = FakeClock(), "target3acct"
    world = CopyWorld(clock)
    world.fail_copies_into(failing)

    def open_store(bandwidth: float | None = None) -> BlobStore:
        return AzureBlobStore(
            access,
            retry_total=2,
            initial_backoff=1,
            wrap_transport=lambda inner: HeldCopiesTransport(inner, world, bandwidth),
        )

    return BlobHarness(
        kind="azure",
        store=open_store(),
        clock=clock,
        account="stagingacct",
        container=container,
        other_account="targetacct",
        failing_account=failing,
        reopen=open_store,
        throttled=open_store,
    )


def _sim_blobs(tmp_path: Path) -> BlobHarness:
    """The sim backend's blob store, keeping page data so reads can be checked; its copies run in
    the harness's FakeClock time."""
    from imagedist._backends.sim import SimBlobStore, SimFaults, SimModel, SimStats, SimStorage

    clock, failing = FakeClock(), "failacct"
    locations = {
        "stagingacct": ("sub-a", "westeurope"),
        "targetacct": ("sub-a", "northeurope"),
        failing: ("sub-a", "eastus"),
    }
    storage = SimStorage(
        clock,
        locations,
        model=SimModel(),
        faults=SimFaults(fail_copies_to_accounts=frozenset({failing})),
        seed=7,
        stats=SimStats(),
        keep_data=True,
    )
    return BlobHarness(
        kind="sim",
        store=SimBlobStore(storage),
        clock=clock,
        account="stagingacct",
        container=f"c{uuid.uuid4().hex[:8]}",
        other_account="targetacct",
        failing_account=failing,
        reopen=lambda: SimBlobStore(storage),
        throttled=lambda bw: SimBlobStore(storage, copy_rate=bw),
    )


@pytest.fixture(
    params=[
        pytest.param(_local_blobs, id="local"),
        pytest.param(_azure_blobs, id="azure"),
        pytest.param(_sim_blobs, id="sim"),
    ]
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
    clock: Clock
    subscription: str
    region: str
    resource_group: str
    #: an account in (subscription, region)
    account: str
    #: an account in the same subscription but another region
    foreign_region_account: str
    #: an account in the same region but another subscription
    foreign_subscription_account: str
    container: str
    #: seconds after which a creation settles
    create_seconds: float
    #: how long to wait between two polls of a creating image
    poll_seconds: float
    #: (subscription, region, an account there) where creations fail; None if not injectable
    failing: tuple[str, str, str] | None
    #: exactly-once probe: creations started for (subscription, resource group, name)
    creation_count: Callable[[str, str, str], int] | None
    #: whether a missing or incomplete source blob fails the creation (it needs a platform that
    #: reads the blob store; the ARM test server does not)
    checks_source_blob: bool
    #: make the next creation in (subscription, region) fail; None if not injectable
    fail_next_creation: Callable[[], None] | None
    #: another adapter instance on the same platform, as another process would build it
    reopen: Callable[[], ImageService]
    #: put an existing image (by name, in ``resource_group``) in a provisioning state given as
    #: the platform spells it, as someone else's update, delete or cancel would; None if it can't
    set_state: Callable[[str, str], None] | None = None


def _local_images(request: pytest.FixtureRequest, tmp_path: Path) -> ImageHarness:
    clock = FakeClock()
    blob_store = LocalBlobStore(tmp_path / "blobs", clock)
    locations = {
        "weuacct": ("sub-a", "westeurope"),
        "neuacct": ("sub-a", "northeurope"),
        "subbacct": ("sub-b", "westeurope"),
        "failacct": ("sub-f", "eastus"),
    }

    def open_service() -> LocalImageService:
        return LocalImageService(
            tmp_path / "images.db",
            clock,
            blob_store,
            account_locations=locations,
            create_seconds=30.0,
            fail_in=frozenset({("sub-f", "eastus")}),
        )

    service = open_service()
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
        poll_seconds=30.0,
        failing=("sub-f", "eastus", "failacct"),
        creation_count=service.creation_count,
        checks_source_blob=True,
        fail_next_creation=None,
        reopen=open_service,
        set_state=lambda name, state: service.set_state(
            "sub-a", "rg-images", name, ProvisioningState.parse(state)
        ),
    )


#: How long the ARM test server keeps an image Creating: long enough to see it creating, short
#: enough to keep the suite fast.
ARM_IMAGE_SECONDS = 0.2


def _azure_images(request: pytest.FixtureRequest, tmp_path: Path) -> ImageHarness:
    """AzureImageService on the ARM test server, its source blobs in Azurite.

    The Azurite accounts are registered in the ARM server with a (subscription, region), which is
    how the server enforces Azure's rule that the source blob shares the image's subscription and
    region. Time is real: the server settles an image ``ARM_IMAGE_SECONDS`` after its PUT.
    """
    from imagedist._backends.azure.blobs import AccountAccess, AzureBlobStore
    from imagedist._backends.azure.images import AzureImageService

    server: AzuriteServer = request.getfixturevalue("azurite_server")
    arm_ctl: ArmServerProcess = request.getfixturevalue("arm")  # reset for this test
    locations = {
        "stagingacct": ("sub-a", "westeurope"),
        "targetacct": ("sub-a", "northeurope"),
        "target2acct": ("sub-b", "westeurope"),
        "target3acct": ("sub-f", "eastus"),
    }
    for name, (subscription, region) in locations.items():
        arm_ctl.register_account(name, subscription, region, server.blob_endpoint(name) + "/")
    arm_ctl.configure(image_delay=ARM_IMAGE_SECONDS)
    arm_ctl.check_source_blobs({name: server.key(name) for name in locations})
    arm_ctl.fail_image_creation(
        "sub-f",
        "eastus",
        code="InjectedFailure",
        message="injected image creation failure in subscription 'sub-f' region 'eastus'",
    )

    def blob_url(ref: BlobRef) -> str:  # as _azure.py builds it, on Azurite's path-style URLs
        return f"{server.blob_endpoint(ref.account)}/{ref.container}/{quote(ref.name)}"

    access = {
        name: AccountAccess.from_connection_string(server.connection_string(name))
        for name in locations
    }
    container = f"c{uuid.uuid4().hex[:8]}"
    request.addfinalizer(lambda: _drop_container(server, container))

    def fail_next_creation() -> None:
        arm_ctl.fail_image_creation("sub-a", "westeurope", code="InjectedFailure", count=1)

    def set_state(name: str, state: str) -> None:
        arm_ctl.set_image_state("sub-a", "rg-images", name, state)

    own_loop = _OwnLoop()
    request.addfinalizer(own_loop.close)  # runs after the fixture's aclose

    def open_service() -> ImageService:
        service = AzureImageService(
            _arm_credential(),
            arm_endpoint=arm_ctl.url,
            blob_url=blob_url,
            client_kwargs=_arm_client_kwargs(arm_ctl),
        )
        return own_loop.pin(service)

    return ImageHarness(
        kind="azure",
        service=open_service(),
        blobs=AzureBlobStore(access, retry_total=2, initial_backoff=1),
        clock=WallClock(),
        subscription="sub-a",
        region="westeurope",
        resource_group="rg-images",
        account="stagingacct",
        foreign_region_account="targetacct",
        foreign_subscription_account="target2acct",
        container=container,
        create_seconds=ARM_IMAGE_SECONDS,
        poll_seconds=0.02,
        failing=("sub-f", "eastus", "target3acct"),
        creation_count=arm_ctl.image_creations,
        checks_source_blob=True,  # the server reads the source VHD in Azurite, as Azure does
        fail_next_creation=fail_next_creation,
        reopen=open_service,
        set_state=set_state,
    )


def _sim_images(request: pytest.FixtureRequest, tmp_path: Path) -> ImageHarness:
    """The sim backend's image service (ARM throttling included) on its blob store, in FakeClock
    time; creations take 30 s × (1 ± 0.25)."""
    from imagedist._backends.sim import (
        ArmThrottle,
        SimBlobStore,
        SimFaults,
        SimImageService,
        SimModel,
        SimStats,
        SimStorage,
    )

    clock = FakeClock()
    locations = {
        "weuacct": ("sub-a", "westeurope"),
        "neuacct": ("sub-a", "northeurope"),
        "subbacct": ("sub-b", "westeurope"),
        "failacct": ("sub-f", "eastus"),
    }
    model = SimModel(image_create_seconds=30.0, image_create_jitter=0.25)
    faults = SimFaults(fail_images_in=frozenset({("sub-f", "eastus")}))
    stats = SimStats()
    storage = SimStorage(clock, locations, model=model, faults=faults, seed=7, stats=stats)
    service = SimImageService(storage, ArmThrottle(clock, model, faults, stats, seed=7), seed=7)
    return ImageHarness(
        kind="sim",
        service=service,
        blobs=SimBlobStore(storage),
        clock=clock,
        subscription="sub-a",
        region="westeurope",
        resource_group="rg-images",
        account="weuacct",
        foreign_region_account="neuacct",
        foreign_subscription_account="subbacct",
        container="vhds",
        create_seconds=model.image_create_max_seconds,
        poll_seconds=model.image_create_max_seconds,
        failing=("sub-f", "eastus", "failacct"),
        creation_count=service.creation_count,
        checks_source_blob=True,
        fail_next_creation=lambda: service.fail_next_creation("sub-a", "westeurope"),
        reopen=service.reopen,
        set_state=lambda name, state: service.set_state(
            "sub-a", "rg-images", name, ProvisioningState.parse(state)
        ),
    )


@pytest.fixture(
    params=[
        pytest.param(_local_images, id="local"),
        pytest.param(_azure_images, id="azure"),
        pytest.param(_sim_images, id="sim"),
    ]
)
def images(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ImageHarness]:
    harness: ImageHarness = request.param(request, tmp_path)
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
    if harness.failing:  # its resource group is the test's to make: ARM writes are slow
        accounts.append(harness.failing[2])
    for account in accounts:
        run(harness.blobs.ensure_container(account, harness.container))
    yield harness
    run(harness.service.aclose())
    run(harness.blobs.aclose())


@dataclass
class ProvisionerHarness:
    """One provisioner under test."""

    kind: str
    prov: Provisioner
    subscription: str
    #: put an account that imagedist did not make (no managed tag) into an existing resource group:
    #: (subscription, resource group, name, region); None if the implementation cannot hold one
    add_foreign_account: Callable[[str, str, str, str], None] | None
    #: make a resource group by hand (no managed tag): (subscription, name, region)
    add_foreign_group: Callable[[str, str, str], None] | None = None
    #: make the subscription one that never registered a resource provider: (subscription,
    #: namespace); None if the implementation has no providers to register
    unregister_provider: Callable[[str, str], None] | None = None
    #: what ``principal_id()`` answers: the identity data roles go to, None where none apply
    principal: str | None = None


#: The object id of the identity the contract suites' Azure and sim provisioners act as.
CONTRACT_PRINCIPAL = "6f1c2d3e-4a5b-4c6d-8e7f-901234567890"


def _local_provisioner(request: pytest.FixtureRequest, tmp_path: Path) -> ProvisionerHarness:
    root = tmp_path / "local"
    root.mkdir()

    def add_foreign_account(subscription: str, resource_group: str, name: str, region: str) -> None:
        # White-box: the local provisioner's JSON file, as a hand-made account would appear there.
        file = root / "provisioning.json"
        data = json.loads(file.read_text(encoding="utf-8"))
        data["accounts"][name] = {
            "subscription": subscription,
            "resource_group": resource_group,
            "region": region,
            "sku": "Standard_LRS",
            "managed": False,
        }
        file.write_text(json.dumps(data), encoding="utf-8")

    def add_foreign_group(subscription: str, name: str, region: str) -> None:
        file = root / "provisioning.json"
        data = json.loads(file.read_text(encoding="utf-8")) if file.exists() else {}
        data.setdefault("groups", {})[f"{subscription}/{name}"] = {"region": region}
        data.setdefault("accounts", {})
        file.write_text(json.dumps(data), encoding="utf-8")

    return ProvisionerHarness(
        "local", LocalProvisioner(root), "sub-a", add_foreign_account, add_foreign_group
    )


def _azure_provisioner(request: pytest.FixtureRequest, tmp_path: Path) -> ProvisionerHarness:
    from imagedist._backends.azure.provisioner import AzureProvisioner

    arm_ctl: ArmServerProcess = request.getfixturevalue("arm")  # reset for this test
    own_loop = _OwnLoop()
    request.addfinalizer(own_loop.close)  # runs after the fixture's aclose
    from armserver.authz import principal_token, unregister
    from armserver.credentials import AsyncStaticTokenCredential

    # A token that names its identity (oid), as Entra ID's do: the provisioner reads it from there.
    credential = AsyncStaticTokenCredential(principal_token(CONTRACT_PRINCIPAL))
    prov = AzureProvisioner(
        credential, arm_endpoint=arm_ctl.url, client_kwargs=_arm_client_kwargs(arm_ctl)
    )

    def add_foreign_account(subscription: str, resource_group: str, name: str, region: str) -> None:
        arm_ctl.register_account(name, subscription, region, resource_group=resource_group)

    def add_foreign_group(subscription: str, name: str, region: str) -> None:
        from azure.mgmt.resource.resources import ResourceManagementClient

        from armserver.credentials import StaticTokenCredential

        kwargs = arm_ctl.client_kwargs()
        with ResourceManagementClient(StaticTokenCredential(), subscription, **kwargs) as client:
            client.resource_groups.create_or_update(name, {"location": region})  # no tags

    return ProvisionerHarness(
        "azure",
        own_loop.pin(prov),
        "sub-a",
        add_foreign_account,
        add_foreign_group,
        lambda sub, namespace: unregister(arm_ctl, sub, namespace),
        CONTRACT_PRINCIPAL,
    )


def _sim_provisioner(request: pytest.FixtureRequest, tmp_path: Path) -> ProvisionerHarness:
    """The sim backend's provisioner, empty (no preloaded accounts), in memory."""
    from imagedist._backends.sim.provisioner import SimProvisioner

    prov = SimProvisioner({}, principal=CONTRACT_PRINCIPAL)

    def add_foreign_account(subscription: str, resource_group: str, name: str, region: str) -> None:
        # White-box: how the sim holds the accounts it starts with (made by no one it knows).
        info = AccountInfo(subscription, resource_group, name, region, managed=False)
        prov._accounts[name] = info

    def unregister_provider(subscription: str, namespace: str) -> None:
        prov.unregistered.add((subscription, namespace.lower()))

    return ProvisionerHarness(
        "sim",
        prov,
        "sub-a",
        add_foreign_account,
        prov.add_foreign_group,
        unregister_provider,
        CONTRACT_PRINCIPAL,
    )


@pytest.fixture(
    params=[
        pytest.param(_local_provisioner, id="local"),
        pytest.param(_azure_provisioner, id="azure"),
        pytest.param(_sim_provisioner, id="sim"),
    ]
)
def provisioner(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ProvisionerHarness]:
    harness: ProvisionerHarness = request.param(request, tmp_path)
    yield harness
    run(harness.prov.aclose())


@dataclass
class GalleryHarness:
    """One gallery service under test, the blob store its VHD sources live in, and the world.

    The gallery is in ``subscription``/``region``; ``account`` is a storage account there.
    """

    kind: str
    service: GalleryService
    blobs: BlobStore
    clock: FakeClock
    gallery: GalleryRef
    region: str
    #: a second gallery, in another subscription (for a cross-subscription copy)
    other_gallery: GalleryRef
    account: str
    #: an account in the gallery's region, of another subscription
    foreign_subscription_account: str
    #: an account of the gallery's subscription, in another region
    foreign_region_account: str
    container: str
    #: the longest a region's replication takes (clock seconds)
    replication_seconds: float
    #: a region whose replications fail until ``heal`` is called
    failing_region: str
    #: an adapter on the same platform where replications no longer fail
    heal: Callable[[], GalleryService]
    #: creations started for (gallery, definition, version)
    creation_count: Callable[[GalleryRef, str, str], int]
    #: start a copy into ``dest`` (from ``source``) that stays pending while the clock stands still
    start_pending_copy: Callable[[BlobRef, BlobRef], None]
    #: another adapter instance on the same platform, as another process would build it
    reopen: Callable[[], GalleryService]


GALLERY_SECONDS = 60.0
_GALLERY_LOCATIONS = {
    "weuacct": ("sub-a", "westeurope"),
    "neuacct": ("sub-a", "northeurope"),
    "subbacct": ("sub-b", "westeurope"),
}


def _local_gallery(request: pytest.FixtureRequest, tmp_path: Path) -> GalleryHarness:
    clock = FakeClock()
    # Copies advance one byte per clock second: a copy stays pending while the test waits.
    blob_store = LocalBlobStore(tmp_path / "blobs", clock, copy_bandwidth=1.0)

    def open_service(fail: frozenset[str] = frozenset({"eastus"})) -> LocalGalleryService:
        return LocalGalleryService(
            tmp_path / "gallery.db",
            clock,
            blob_store,
            account_locations=_GALLERY_LOCATIONS,
            replication_seconds=GALLERY_SECONDS,
            fail_regions=fail,
        )

    service = open_service()

    def start_pending_copy(source: BlobRef, dest: BlobRef) -> None:
        run(blob_store.start_copy(source, dest))

    return GalleryHarness(
        kind="local",
        service=service,
        blobs=blob_store,
        clock=clock,
        gallery=GalleryRef("sub-a", "rg-gallery", "galmain"),
        region="westeurope",
        other_gallery=GalleryRef("sub-b", "rg-gallery", "galcopy"),
        account="weuacct",
        foreign_subscription_account="subbacct",
        foreign_region_account="neuacct",
        container="vhds",
        replication_seconds=GALLERY_SECONDS,
        failing_region="eastus",
        heal=lambda: open_service(frozenset()),
        creation_count=service.creation_count,
        start_pending_copy=start_pending_copy,
        reopen=open_service,
    )


def _sim_gallery(request: pytest.FixtureRequest, tmp_path: Path) -> GalleryHarness:
    """The sim backend's gallery service (ARM throttling included) in FakeClock time; a region
    replicates in 60 s to 600 s, drawn from the model."""
    from imagedist._backends.sim import (
        ArmThrottle,
        SimBlobStore,
        SimFaults,
        SimGalleryService,
        SimModel,
        SimStats,
        SimStorage,
    )

    clock = FakeClock()
    model = SimModel(gallery_replication_seconds_min=60.0, gallery_replication_seconds_max=600.0)
    faults = SimFaults(fail_gallery_regions=frozenset({"eastus"}))
    stats = SimStats()
    storage = SimStorage(
        clock, _GALLERY_LOCATIONS, model=model, faults=faults, seed=7, stats=stats, keep_data=True
    )
    service = SimGalleryService(storage, ArmThrottle(clock, model, faults, stats, seed=7), seed=7)

    def heal() -> GalleryService:
        storage.faults = SimFaults()
        return service

    def start_pending_copy(source: BlobRef, dest: BlobRef) -> None:
        run(SimBlobStore(storage, copy_rate=1.0).start_copy(source, dest))

    return GalleryHarness(
        kind="sim",
        service=service,
        blobs=SimBlobStore(storage),
        clock=clock,
        gallery=GalleryRef("sub-a", "rg-gallery", "galmain"),
        region="westeurope",
        other_gallery=GalleryRef("sub-b", "rg-gallery", "galcopy"),
        account="weuacct",
        foreign_subscription_account="subbacct",
        foreign_region_account="neuacct",
        container="vhds",
        replication_seconds=model.gallery_replication_seconds_max,
        failing_region="eastus",
        heal=heal,
        creation_count=service.creation_count,
        start_pending_copy=start_pending_copy,
        reopen=service.reopen,
    )


class _ArmGalleryClock(FakeClock):
    """Virtual time shared with the ARM test server's gallery model: ``sleep`` moves both on."""

    def __init__(self, server: ArmServerProcess) -> None:
        super().__init__(time.time())
        self._server = server

    async def sleep(self, seconds: float) -> None:
        from armserver.gallery import advance

        await asyncio.to_thread(advance, self._server, seconds)
        await super().sleep(seconds)


_AZURE_GALLERY_LOCATIONS = {
    "stagingacct": ("sub-a", "westeurope"),
    "targetacct": ("sub-a", "northeurope"),
    "target2acct": ("sub-b", "westeurope"),
}


def _azure_gallery(request: pytest.FixtureRequest, tmp_path: Path) -> GalleryHarness:
    """AzureGalleryService on the ARM test server, its VHD sources in Azurite.

    The server's gallery model reads the source blobs from Azurite (it is given the accounts'
    connection strings) and replicates in its own clock, which the harness's clock moves on:
    a region replicates in ``GALLERY_SECONDS`` of it, and ``eastus`` fails until healed.
    """
    from armserver.gallery import configure, creations, pend_copy, read_blobs_with
    from imagedist._backends.azure.blobs import AccountAccess, AzureBlobStore
    from imagedist._backends.azure.gallery import AzureGalleryService
    from imagedist._backends.gallery_rules import version_id

    server: AzuriteServer = request.getfixturevalue("azurite_server")
    arm_ctl: ArmServerProcess = request.getfixturevalue("arm")  # reset for this test
    storage_group = "rg-storage"
    for name, (subscription, region) in _AZURE_GALLERY_LOCATIONS.items():
        endpoint = server.blob_endpoint(name) + "/"
        arm_ctl.register_account(name, subscription, region, endpoint, resource_group=storage_group)
        read_blobs_with(arm_ctl, name, server.connection_string(name))
    configure(arm_ctl, replication_seconds=GALLERY_SECONDS, fail_regions=["eastus"])

    def blob_url(ref: BlobRef) -> str:
        return f"{server.blob_endpoint(ref.account)}/{ref.container}/{quote(ref.name)}"

    def account_id(account: str) -> str:
        subscription = _AZURE_GALLERY_LOCATIONS[account][0]
        return (
            f"/subscriptions/{subscription}/resourceGroups/{storage_group}"
            f"/providers/Microsoft.Storage/storageAccounts/{account}"
        )

    access = {
        name: AccountAccess.from_connection_string(server.connection_string(name))
        for name in _AZURE_GALLERY_LOCATIONS
    }
    blob_store = AzureBlobStore(access, retry_total=2, initial_backoff=1)
    container = f"c{uuid.uuid4().hex[:8]}"
    request.addfinalizer(lambda: _drop_container(server, container))
    own_loop = _OwnLoop()
    request.addfinalizer(own_loop.close)  # runs after the fixture's aclose
    reopened: list[GalleryService] = []

    def open_service() -> GalleryService:
        service = AzureGalleryService(
            _arm_credential(),
            arm_endpoint=arm_ctl.url,
            blob_url=blob_url,
            account_id=account_id,
            client_kwargs=_arm_client_kwargs(arm_ctl),
        )
        return own_loop.pin(service)

    def reopen() -> GalleryService:
        service = open_service()
        reopened.append(service)
        return service

    def close_reopened() -> None:  # the suite leaves them open: their sessions close here
        for service in reopened:
            run(service.aclose())

    request.addfinalizer(close_reopened)  # before the loop closes
    service = open_service()

    def heal() -> GalleryService:
        configure(arm_ctl, fail_regions=[])
        return service

    def start_pending_copy(source: BlobRef, dest: BlobRef) -> None:
        run(blob_store.start_copy(source, dest))  # Azurite ends it at once: the server pends it
        pend_copy(arm_ctl, dest.account, dest.container, dest.name)

    return GalleryHarness(
        kind="azure",
        service=service,
        blobs=blob_store,
        clock=_ArmGalleryClock(arm_ctl),
        gallery=GalleryRef("sub-a", "rg-gallery", "galmain"),
        region="westeurope",
        other_gallery=GalleryRef("sub-b", "rg-gallery", "galcopy"),
        account="stagingacct",
        foreign_subscription_account="target2acct",
        foreign_region_account="targetacct",
        container=container,
        replication_seconds=GALLERY_SECONDS,
        failing_region="eastus",
        heal=heal,
        creation_count=lambda g, d, n: creations(arm_ctl, version_id(g, d, n)),
        start_pending_copy=start_pending_copy,
        reopen=reopen,
    )


@pytest.fixture(
    params=[
        pytest.param(_local_gallery, id="local"),
        pytest.param(_azure_gallery, id="azure"),
        pytest.param(_sim_gallery, id="sim"),
    ]
)
def galleries(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[GalleryHarness]:
    harness: GalleryHarness = request.param(request, tmp_path)
    for account in (
        harness.account,
        harness.foreign_subscription_account,
        harness.foreign_region_account,
    ):
        run(harness.blobs.ensure_container(account, harness.container))
    yield harness
    run(harness.service.aclose())
    run(harness.blobs.aclose())
