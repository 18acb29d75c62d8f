"""The BlobStore port on the simulated storage: instant calls, copies in (virtual) time."""

from __future__ import annotations

import random

from ..._domain import BlobRef, SecretUrl
from ..._exceptions import NotFound, TransientError
from ...abc import BlobProperties, BlobStore
from .model import SimModel
from .storage import PUT_PAGE_BYTES, SimStorage

__all__ = ["SimBlobStore"]

#: One simulated range copy call moves up to this much by default (SimModel.ranged_call_bytes,
#: 256 modelled requests): a ranged copy of a 30 GiB disk is then a few dozen events, not
#: thousands, so 10,000 targets simulate quickly.
SIM_RANGE_BYTES = SimModel.ranged_call_bytes


class SimBlobStore(BlobStore):
    """An adapter on a :class:`SimStorage`; several adapters may share one, like processes.

    :param copy_rate: copies this adapter starts run at exactly this many bytes per second, with
        no start latency (a controllable copy for tests); ``None`` draws them from the model.
    """

    def __init__(
        self,
        storage: SimStorage,
        *,
        copy_rate: float | None = None,
        seed: int = 0,
        range_bytes: int | None = None,
    ) -> None:
        self.storage = storage
        self._copy_rate = copy_rate
        self._fault_rng = random.Random(f"{seed}:blob-faults")
        self.copy_range_bytes = range_bytes or storage.model.ranged_call_bytes
        self.copy_range_calls_at_once = 2
        self.ranged_copy_faster = True

    def _call(self, name: str) -> SimStorage:
        """Count the call, maybe fail it with a 503, and bring the copies up to now."""
        storage = self.storage
        storage.stats.blob_calls += 1
        storage.stats.count(name)
        busy = storage.faults.blob_busy
        if busy and self._fault_rng.random() < busy:
            storage.stats.blob_busy_errors += 1
            raise TransientError(f"503 ServerBusy on {name} (simulated)")
        storage.now()
        return storage

    async def ensure_container(self, account: str, container: str) -> None:
        self._call("ensure_container").ensure_container(account, container)

    async def container_exists(self, account: str, container: str) -> bool:
        storage = self._call("container_exists")
        storage.check_account(account)
        return (account, container) in storage.containers

    async def create_page_blob(self, ref: BlobRef, size: int, *, overwrite: bool = False) -> None:
        self._call("create_page_blob").create(ref, size, overwrite)

    async def write_pages(self, ref: BlobRef, offset: int, data: bytes) -> None:
        self._call("write_pages").write(ref, offset, data)

    async def read(self, ref: BlobRef, offset: int, length: int) -> bytes:
        return self._call("read").read(ref, offset, length)

    async def page_ranges(self, ref: BlobRef) -> list[tuple[int, int]]:
        return list(self._call("page_ranges").blob(ref).ranges)

    async def get_properties(self, ref: BlobRef) -> BlobProperties:
        return self._call("get_properties").properties(ref)

    async def set_metadata(self, ref: BlobRef, metadata: dict[str, str]) -> None:
        self._call("set_metadata").blob(ref).metadata = dict(metadata)

    async def set_content_md5(self, ref: BlobRef, md5: bytes) -> None:
        self._call("set_content_md5").blob(ref).content_md5 = bytes(md5)

    async def start_copy(self, source: BlobRef, dest: BlobRef) -> str:
        return self._call("start_copy").start_copy(source, dest, self._copy_rate)

    async def start_copy_from_url(self, source: SecretUrl, dest: BlobRef) -> str:
        storage = self._call("start_copy_from_url")
        disk_id = storage.grants.get(source.reveal())
        if disk_id is None:  # like a copy whose SAS is refused; the URL stays out of the message
            raise NotFound("the copy source URL grants no access (revoked or never granted)")
        return storage.start_copy(storage.disk(disk_id), dest, self._copy_rate)

    async def copy_range(self, source: BlobRef, dest: BlobRef, offset: int, length: int) -> None:
        if length > self.copy_range_bytes:
            raise ValueError(f"a range copy moves at most {self.copy_range_bytes} bytes")
        storage = self._call("copy_range")
        # One call here stands for the 4 MiB Put Page From URL requests it models.
        storage.stats.range_requests += -(-length // PUT_PAGE_BYTES)
        busy = storage.faults.copy_range_busy
        if busy and self._fault_rng.random() < busy:
            storage.stats.range_busy_errors += 1
            raise TransientError(f"503 ServerBusy on a range copy into blob '{dest}' (simulated)")
        await storage.copy_range(source, dest, offset, length)

    async def wait_for_copy(self, ref: BlobRef, longest: float) -> bool:
        # Not a call to the service: the simulator's own knowledge of when the copy ends.
        await self.storage.wait_for_copy(ref, longest)
        return True

    async def wait_for_ranges(self, ref: BlobRef, longest: float, every: float) -> bool:
        # The follower's page-range listings it spares are counted as the calls they would
        # have been: one every ``every`` seconds of the wait (its next listing sees the range).
        spared = await self.storage.wait_for_range(ref, longest, every) - 1
        self.storage.stats.blob_calls += spared
        self.storage.stats.count("page_ranges", spared)
        return True

    async def abort_copy(self, dest: BlobRef, copy_id: str) -> None:
        self._call("abort_copy").abort_copy(dest, copy_id)

    async def delete_blob(self, ref: BlobRef) -> bool:
        return self._call("delete_blob").delete(ref)

    async def list_blobs(self, account: str, container: str, prefix: str = "") -> list[str]:
        storage = self._call("list_blobs")
        names = storage.containers.get((account, container), {})
        return sorted(name for name in names if name.startswith(prefix))
