"""White-box tests of the local backend's adapters: what the port contract cannot see.

The contract suites (``tests/contract``) hold what every implementation must do; these check how
the local blob store keeps its files (sparse on disk, a fallback when the filesystem cannot report
holes, a copy that outlives a killed process).
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from imagedist._backends.local import blobs as _local_blobs
from imagedist._backends.local.blobs import LocalBlobStore
from imagedist._domain import BlobRef
from imagedist.abc import BlobProperties, BlobStore, CopyStatus

from helpers import MIB, FakeClock, make_blob, pattern, run


@dataclass
class LocalBlobs:
    """A local blob store on a folder, in FakeClock time, with its staging and target accounts."""

    root: Path
    clock: FakeClock
    store: LocalBlobStore
    account: str = "stagingacct"
    other_account: str = "targetacct"
    container: str = "vhds"

    def ref(self, name: str, account: str | None = None) -> BlobRef:
        return BlobRef(account or self.account, self.container, name)

    def path(self, ref: BlobRef) -> Path:
        """The file behind a blob."""
        return self.root / ref.account / ref.container / ref.name

    def reopen(self) -> LocalBlobStore:
        """Another adapter on the same folder, as a fresh process would build it."""
        return LocalBlobStore(self.root, self.clock)


@pytest.fixture
def blobs(tmp_path: Path) -> Iterator[LocalBlobs]:
    root, clock = tmp_path / "blobs", FakeClock()
    h = LocalBlobs(root, clock, LocalBlobStore(root, clock))
    for account in (h.account, h.other_account):
        run(h.store.ensure_container(account, h.container))
    yield h
    run(h.store.aclose())


async def settle(h: LocalBlobs, store: BlobStore, ref: BlobRef) -> BlobProperties:
    """Poll the destination until its copy is no longer pending."""
    for _ in range(1000):
        props = await store.get_properties(ref)
        if props.copy_status != CopyStatus.PENDING:
            return props
        await h.clock.sleep(1.0)
    raise AssertionError(f"copy into {ref} still pending")


def allocated(h: LocalBlobs, ref: BlobRef) -> int:
    return os.stat(h.path(ref)).st_blocks * 512


def test_blobs_and_their_copies_stay_sparse_on_disk(blobs: LocalBlobs) -> None:
    src, dst = blobs.ref("golden.vhd"), blobs.ref("dst.vhd", blobs.other_account)
    run(make_blob(blobs.store, src, 64 * MIB, {32 * MIB: pattern(MIB)}))
    assert allocated(blobs, src) < 2 * MIB

    run(blobs.store.start_copy(src, dst))
    assert run(settle(blobs, blobs.store, dst)).copy_status == CopyStatus.SUCCESS

    assert allocated(blobs, dst) < 2 * MIB
    assert run(blobs.store.read(dst, 32 * MIB, MIB)) == pattern(MIB)


@pytest.fixture
def no_seek_data(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretend the filesystem cannot report holes, to exercise the zero-scanning fallback."""

    def unsupported(fd: int, size: int) -> Iterator[tuple[int, int]]:
        raise OSError(errno.EINVAL, "SEEK_DATA unsupported")

    monkeypatch.setattr(_local_blobs, "_seek_extents", unsupported)


@pytest.mark.usefixtures("no_seek_data")
def test_without_seek_data_page_ranges_are_the_non_zero_pages(blobs: LocalBlobs) -> None:
    src, dst = blobs.ref("golden.vhd"), blobs.ref("dst.vhd", blobs.other_account)
    run(make_blob(blobs.store, src, 16 * MIB, {4096: pattern(1024), 8 * MIB: pattern(512)}))
    run(blobs.store.write_pages(src, 12 * MIB, bytes(MIB)))  # written zeros scan as holes

    expected = [(4096, 5120), (8 * MIB, 8 * MIB + 512)]
    assert run(blobs.store.page_ranges(src)) == expected
    run(blobs.store.start_copy(src, dst))
    props = run(settle(blobs, blobs.store, dst))
    assert (props.copy_status, props.copy_total) == (CopyStatus.SUCCESS, 1536)
    assert run(blobs.store.page_ranges(dst)) == expected
    assert run(blobs.store.read(dst, 0, 16 * MIB)) == run(blobs.store.read(src, 0, 16 * MIB))


_POLLER = textwrap.dedent(
    """
    import asyncio, json, sys, time
    from pathlib import Path
    from imagedist._backends.local.blobs import LocalBlobStore
    from imagedist._domain import BlobRef
    from imagedist.abc import Clock

    class RealClock(Clock):
        def now(self): return time.time()
        async def sleep(self, s): await asyncio.sleep(s)

    async def main(root, dest):
        store = LocalBlobStore(Path(root), RealClock(), copy_bandwidth=8 * 1024 * 1024)
        while True:
            props = await store.get_properties(BlobRef(*dest))
            print(props.copy_status.value, props.copy_progress, props.copy_total, flush=True)
            await asyncio.sleep(0.005)

    asyncio.run(main(sys.argv[1], json.loads(sys.argv[2])))
    """
)


def test_a_copy_survives_sigkill_of_the_process_advancing_it(blobs: LocalBlobs) -> None:
    src, dst = blobs.ref("golden.vhd"), blobs.ref("dst.vhd", blobs.other_account)
    run(make_blob(blobs.store, src, 64 * MIB, {0: pattern(16 * MIB), 40 * MIB: pattern(16 * MIB)}))
    # Start at real time: the child polls with a real clock at 8 MiB/s, so it needs ~4 s.
    blobs.clock.t = time.time()
    run(blobs.store.start_copy(src, dst))
    child = subprocess.Popen(
        [sys.executable, "-c", _POLLER, str(blobs.root), json.dumps(dataclasses.astuple(dst))],
        stdout=subprocess.PIPE,
        text=True,
    )
    status = ""
    try:
        assert child.stdout
        for line in child.stdout:  # wait until the child is mid-copy
            status, progress, _ = line.split()
            if status != "pending" or int(progress) > 0:
                break
        assert status == "pending", "the child finished the copy before we could kill it"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
        if child.stdout:
            child.stdout.close()

    props = run(settle(blobs, blobs.reopen(), dst))
    assert props.copy_status == CopyStatus.SUCCESS
    assert props.copy_progress == props.copy_total == 32 * MIB
    assert run(blobs.store.read(dst, 0, 64 * MIB)) == run(blobs.store.read(src, 0, 64 * MIB))
