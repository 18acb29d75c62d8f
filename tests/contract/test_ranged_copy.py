"""Contract of ranged copies (BlobStore.copy_range driven by _engine/_ranged.py, issue 13).

Run against every blob store that copies ranges: local (parallel file I/O), sim (the fluid
model, keeping data) and azure through the Put Page From URL proxy in front of Azurite.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import hashlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from azurite import AzuriteServer
from imagedist._backends.local.blobs import LocalBlobStore
from imagedist._domain import BlobRef
from imagedist._engine._ranged import RangedLimits, RangedReport, copy_ranged
from imagedist._exceptions import NotFound, TransientError
from imagedist.abc import BlobStore
from putpage_proxy import ProxySettings, PutPageProxy

from .conftest import MiB, _drop_container
from helpers import FakeClock, pattern, run

SIZE = 64 * MiB
#: The source's data: runs that start and end off the 4 MiB grid, and the footer page.
DATA = {0: MiB, 5 * MiB: 8 * MiB, 40 * MiB + 512: MiB - 512, SIZE - 512: 512}
#: The ranges a copy of it makes, cut on the 4 MiB grid.
RANGES = 6
MD5 = bytes(range(16))


@dataclass(repr=False)  # pytest shows what an assertion names: not megabytes of pages
class RangedHarness:
    """One blob store that copies ranges, and how to watch and disturb its range copies."""

    kind: str
    store: BlobStore
    clock: FakeClock
    container: str
    #: range copies that landed so far
    landed: Callable[[], int]
    #: range copies answered 503 ServerBusy so far
    busy: Callable[[], int]
    #: from now on, every n-th range copy answers 503 ServerBusy (0: none)
    busy_every: Callable[[int], None]
    #: wait until no range copy is still running on the server (one the client gave up on)
    settle: Callable[[], None]

    def ref(self, account: str, name: str) -> BlobRef:
        return BlobRef(account, self.container, name)


class _CountingLocal(LocalBlobStore):
    """The local store, counting range copies and answering some 503 (no server to be busy).

    Each range is copied by a thread of the store's own pool, counted there: a cancelled call's
    thread still finishes its write once it has begun, as a cancelled request may still land on
    a server, and one cancelled before its thread began never writes. ``settle`` waits for every
    call to be one or the other (counting calls in flight from the coroutine instead hung when a
    call was cancelled before its thread began).
    """

    every = 0
    calls = 0
    landed = 0
    busy = 0
    lock = threading.Lock()

    def __init__(self, root: Path, clock: FakeClock) -> None:
        super().__init__(root, clock)
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=8)
        self.work: list[concurrent.futures.Future[None]] = []

    async def copy_range(self, source: BlobRef, dest: BlobRef, offset: int, length: int) -> None:
        self.calls += 1
        if self.every and self.calls % self.every == 0:
            self.busy += 1
            raise TransientError("503 ServerBusy (injected)")
        work = self.pool.submit(self._copy_range, source, dest, offset, length)
        self.work.append(work)
        await asyncio.wrap_future(work)

    def _copy_range(self, source: BlobRef, dest: BlobRef, offset: int, length: int) -> None:
        super()._copy_range(source, dest, offset, length)
        with self.lock:
            self.landed += 1

    def settle(self) -> None:
        wait_until(lambda: all(work.done() for work in self.work))


def wait_until(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    """Wait for a condition another thread makes true (polled; fails after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "still not settled"
        time.sleep(0.01)


def _local(request: pytest.FixtureRequest, tmp_path: Path) -> RangedHarness:
    clock = FakeClock()
    store = _CountingLocal(tmp_path / "blobs", clock)
    request.addfinalizer(store.pool.shutdown)

    def busy_every(n: int) -> None:
        store.every = n

    return RangedHarness(
        "local",
        store,
        clock,
        f"c{uuid.uuid4().hex[:8]}",
        lambda: store.landed,
        lambda: store.busy,
        busy_every,
        store.settle,
    )


def _sim(request: pytest.FixtureRequest, tmp_path: Path) -> RangedHarness:
    from imagedist._backends.sim import SimBlobStore, SimFaults, SimModel, SimStats, SimStorage

    clock = FakeClock()
    locations = {"stagingacct": ("sub-a", "westeurope"), "targetacct": ("sub-a", "eastus")}
    stats = SimStats()
    storage = SimStorage(
        clock, locations, model=SimModel(), faults=SimFaults(), seed=3, stats=stats, keep_data=True
    )
    store = SimBlobStore(storage, range_bytes=4 * MiB)

    def busy_every(n: int) -> None:
        storage.faults = dataclasses.replace(storage.faults, copy_range_busy=1 / n if n else 0)

    return RangedHarness(
        "sim",
        store,
        clock,
        f"c{uuid.uuid4().hex[:8]}",
        lambda: stats.ranges_landed,
        lambda: stats.range_busy_errors,
        busy_every,
        lambda: None,  # a cancelled simulated call never lands
    )


def _azure(request: pytest.FixtureRequest, tmp_path: Path) -> RangedHarness:
    from imagedist._backends.azure.blobs import AccountAccess, AzureBlobStore

    server: AzuriteServer = request.getfixturevalue("azurite_server")
    proxy = PutPageProxy(server).__enter__()
    request.addfinalizer(lambda: proxy.__exit__(None, None, None))
    container = f"c{uuid.uuid4().hex[:8]}"
    request.addfinalizer(lambda: _drop_container(server, container))
    access = {
        name: AccountAccess.from_connection_string(proxy.connection_string(name))
        for name in server.accounts
    }

    def busy_every(n: int) -> None:
        proxy.settings = ProxySettings(busy_every=n)

    return RangedHarness(
        "azure",
        AzureBlobStore(access, retry_total=1, initial_backoff=0),
        FakeClock(),
        container,
        lambda: len(proxy.range_calls(201)),
        lambda: len(proxy.range_calls(503)),
        busy_every,
        proxy.wait_idle,
    )


@pytest.fixture(
    params=[
        pytest.param(_local, id="local"),
        pytest.param(_sim, id="sim"),
        pytest.param(_azure, id="azure"),
    ]
)
def ranged(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RangedHarness]:
    harness: RangedHarness = request.param(request, tmp_path)
    for account in ("stagingacct", "targetacct"):
        run(harness.store.ensure_container(account, harness.container))
    yield harness
    run(harness.store.aclose())


async def _make_source(h: RangedHarness) -> BlobRef:
    source = h.ref("stagingacct", "source.vhd")
    await h.store.create_page_blob(source, SIZE)
    for offset, length in DATA.items():
        for at in range(offset, offset + length, 4 * MiB):
            chunk = pattern(min(4 * MiB, offset + length - at), seed=at)
            await h.store.write_pages(source, at, chunk)
    await h.store.set_content_md5(source, MD5)
    await h.store.set_metadata(source, {"imagedist": "disk"})
    return source


def _digest(h: RangedHarness, ref: BlobRef) -> str:
    """The blob's SHA-256, read 4 MiB at a time (asyncio's debug mode renders a future's result
    in its slow-callback warnings, and 64 MiB of bytes takes seconds to render)."""

    async def body() -> str:
        digest = hashlib.sha256()
        for at in range(0, SIZE, 4 * MiB):
            digest.update(await h.store.read(ref, at, 4 * MiB))
        return digest.hexdigest()

    return run(body())


def _copy(h: RangedHarness, limits: RangedLimits | None = None) -> tuple[BlobRef, RangedReport]:
    async def body() -> tuple[BlobRef, RangedReport]:
        source = await _make_source(h)
        dest = h.ref("targetacct", "dest.vhd")
        report = await copy_ranged(h.store, source, dest, clock=h.clock, limits=limits)
        return dest, report

    return run(body())


def _assert_same(h: RangedHarness, dest: BlobRef) -> None:
    source = h.ref("stagingacct", "source.vhd")
    # Digests: pytest would otherwise render 64 MiB of bytes for the assertion.
    assert _digest(h, dest) == _digest(h, source)
    props = run(h.store.get_properties(dest))
    assert (props.size, props.content_md5, props.metadata) == (SIZE, MD5, {"imagedist": "disk"})


def test_a_ranged_copy_of_a_sparse_blob_is_byte_exact(ranged: RangedHarness) -> None:
    dest, report = _copy(ranged)

    _assert_same(ranged, dest)
    assert (report.ranges, report.copied, report.already) == (RANGES, RANGES, 0)


def test_a_ranged_copy_skips_the_empty_ranges(ranged: RangedHarness) -> None:
    dest, report = _copy(ranged)

    # One call per range of data, none for the 50 MiB of empty pages between them.
    assert ranged.landed() == report.calls == RANGES
    written = sum(end - start for start, end in run(ranged.store.page_ranges(dest)))
    assert written <= sum(DATA.values()) + RANGES * 4096  # a filesystem block at most per range
    assert run(ranged.store.read(dest, 20 * MiB, MiB)) == bytes(MiB)


def test_a_ranged_copy_backs_off_on_server_busy_and_still_lands(ranged: RangedHarness) -> None:
    ranged.busy_every(3)
    limits = RangedLimits(start_concurrency=4, busy_delay=0.01)

    dest, report = _copy(ranged, limits)

    assert ranged.busy() > 0 and report.busy == ranged.busy()
    assert report.lowest_concurrency < limits.start_concurrency  # the pacer slowed down
    assert ranged.landed() == RANGES
    _assert_same(ranged, dest)


class _Stop(Exception):
    """Stops a copy part-way, as a killed worker would."""


def test_a_ranged_copy_stopped_part_way_resumes_with_only_the_missing_ranges(
    ranged: RangedHarness,
) -> None:
    dest = ranged.ref("targetacct", "dest.vhd")

    async def first_run() -> None:
        source = await _make_source(ranged)

        async def stop_after_two() -> None:
            if ranged.landed() >= 2:
                raise _Stop

        limits = RangedLimits(start_concurrency=2, max_concurrency=2)
        with pytest.raises(_Stop):
            await copy_ranged(
                ranged.store,
                source,
                dest,
                clock=ranged.clock,
                limits=limits,
                keep_alive=stop_after_two,
            )

    run(first_run())
    ranged.settle()  # a request the client cancelled may still land on the server
    landed_before = ranged.landed()
    assert 2 <= landed_before < RANGES
    props = run(ranged.store.get_properties(dest))
    assert props.content_md5 is None  # not complete: the MD5 goes on last

    source = ranged.ref("stagingacct", "source.vhd")
    report = run(copy_ranged(ranged.store, source, dest, clock=ranged.clock))

    assert report.already == landed_before
    assert report.copied == report.calls == RANGES - landed_before
    assert ranged.landed() == RANGES
    _assert_same(ranged, dest)


def test_a_copy_of_a_copy_being_made_takes_each_range_once_its_parent_holds_it(
    ranged: RangedHarness,
) -> None:
    """Pipelining: the child copies from its parent while the parent is still being copied,
    range by range as they land there, and still ends byte-exact with one call per range."""

    async def body() -> tuple[RangedReport, RangedReport]:
        origin = await _make_source(ranged)
        parent = ranged.ref("targetacct", "parent.vhd")
        child = ranged.ref("stagingacct", "child.vhd")
        await ranged.store.create_page_blob(parent, SIZE)  # the parent's copy has begun
        slow = RangedLimits(start_concurrency=1, max_concurrency=1)
        return await asyncio.gather(
            copy_ranged(ranged.store, origin, parent, clock=ranged.clock, limits=slow),
            copy_ranged(
                ranged.store, parent, child, clock=ranged.clock, origin=origin,
                follow_seconds=0.01,
            ),
        )  # fmt: skip

    parent_report, child_report = run(body())

    _assert_same(ranged, ranged.ref("stagingacct", "child.vhd"))
    assert parent_report.calls == RANGES
    assert child_report.ranges == child_report.copied == child_report.calls == RANGES


def test_copy_range_refuses_what_azure_refuses(ranged: RangedHarness) -> None:
    source = run(_make_source(ranged))
    dest = ranged.ref("targetacct", "dest.vhd")
    run(ranged.store.create_page_blob(dest, SIZE))
    store = ranged.store

    with pytest.raises(ValueError):  # not 512-aligned
        run(store.copy_range(source, dest, 100, 4096))
    with pytest.raises(ValueError):  # longer than one call may move
        run(store.copy_range(source, dest, 0, store.copy_range_bytes + 512))
    with pytest.raises(NotFound):  # no such source
        run(store.copy_range(ranged.ref("stagingacct", "gone.vhd"), dest, 0, 4096))
    with pytest.raises(NotFound):  # no such destination
        run(store.copy_range(source, ranged.ref("targetacct", "gone.vhd"), 0, 4096))
    assert run(store.page_ranges(dest)) == []  # nothing landed
