"""The simulator's parameters (Azure's figures from PERF-MODEL.md), faults and counters."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

__all__ = ["MB", "MIB", "SimFaults", "SimModel", "SimStats"]

MB = 1_000_000
MIB = 1024 * 1024


@dataclass(frozen=True)
class SimModel:
    """How fast the simulated Azure is. Every figure is a parameter; rates are bytes per second."""

    #: read bandwidth of one source blob, shared fairly by the copies reading it
    blob_read_bandwidth: float = 60 * MIB
    #: egress of one storage account (standard GPv2: 50 Gbps), shared by the copies out of it
    account_egress: float = 50e9 / 8
    #: own rate of one cross-account copy, drawn log-uniformly in [min, max] (observed 4-45 MB/s)
    copy_rate_min: float = 4 * MB
    copy_rate_max: float = 45 * MB
    #: a cross-region copy's own rate is multiplied by this
    cross_region_rate_factor: float = 1.0
    #: seconds before a cross-account copy moves its first byte, drawn uniformly in [min, max]
    copy_start_latency_min: float = 1.0
    copy_start_latency_max: float = 10.0
    #: a same-account copy is a metadata clone: seconds, drawn uniformly, whatever the size
    clone_seconds_min: float = 1.0
    clone_seconds_max: float = 6.0
    #: a managed image is created in image_create_seconds × (1 ± jitter), uniformly
    image_create_seconds: float = 60.0
    image_create_jitter: float = 0.25
    #: one region's Compute Gallery replication of a version, drawn log-uniformly in [min, max]:
    #: "a few hours" per Azure's docs, observed from 15 min to over a day (PERF-MODEL.md); the
    #: median of this range is about 2.7 h
    gallery_replication_seconds_min: float = 15 * 60.0
    gallery_replication_seconds_max: float = 30 * 3600.0
    #: a ranged copy (Put Page From URL, issue 13): bytes per second into one destination blob,
    #: whatever the concurrency (AzCopy observes 170-210 MB/s per blob), and each call's latency
    ranged_copy_rate: float = 190 * MB
    ranged_call_seconds: float = 0.02
    #: the simulator's resolution of a ranged copy: one simulated call stands for this many
    #: bytes of 4 MiB requests. A copy following one still being made is credited with the
    #: requests it sent as its parent's landed (SimStorage.copy_range), so it ends a look
    #: after its parent whatever this is (the same makespans at 256 MiB, 1 GiB, 2 GiB and
    #: 4 GiB, docs/benchmarks.md); coarser is cheaper to simulate, and 4 GiB keeps a
    #: 10,000-target `plan` within half a minute
    ranged_call_bytes: int = 4096 * MIB
    #: ARM token buckets per subscription: capacity and refill per second
    arm_write_bucket: float = 200.0
    arm_write_refill: float = 10.0
    arm_read_bucket: float = 250.0
    arm_read_refill: float = 25.0

    def draw_copy_rate(self, rng: random.Random, cross_region: bool) -> float:
        low, high = math.log(self.copy_rate_min), math.log(self.copy_rate_max)
        rate = math.exp(rng.uniform(low, high))
        return rate * (self.cross_region_rate_factor if cross_region else 1.0)

    def draw_start_latency(self, rng: random.Random) -> float:
        return rng.uniform(self.copy_start_latency_min, self.copy_start_latency_max)

    def draw_clone_seconds(self, rng: random.Random) -> float:
        return rng.uniform(self.clone_seconds_min, self.clone_seconds_max)

    def draw_gallery_replication_seconds(self, rng: random.Random) -> float:
        low = math.log(self.gallery_replication_seconds_min)
        high = math.log(self.gallery_replication_seconds_max)
        return math.exp(rng.uniform(low, high))

    def draw_image_seconds(self, rng: random.Random) -> float:
        jitter = self.image_create_jitter
        return self.image_create_seconds * rng.uniform(1.0 - jitter, 1.0 + jitter)

    @property
    def image_create_max_seconds(self) -> float:
        return self.image_create_seconds * (1.0 + self.image_create_jitter)


@dataclass(frozen=True)
class SimFaults:
    """Faults, drawn from the simulator's seed: probabilities per event, and fixed places."""

    #: a cross-account copy fails part way (its status becomes ``failed``)
    copy_failure: float = 0.0
    #: a blob call raises TransientError (503 ServerBusy)
    blob_busy: float = 0.0
    #: a range copy (Put Page From URL) is answered 503 ServerBusy, so the pacer backs off
    copy_range_busy: float = 0.0
    #: an ARM call raises TransientError (429) even though the token bucket has tokens
    arm_throttle: float = 0.0
    #: an image creation ends ``Failed``
    image_failure: float = 0.0
    #: every copy into these accounts fails
    fail_copies_to_accounts: frozenset[str] = frozenset()
    #: every image creation in these (subscription, region) pairs fails
    fail_images_in: frozenset[tuple[str, str]] = frozenset()
    #: a region's replication of a gallery image version fails
    gallery_replication_failure: float = 0.0
    #: every gallery replication to these regions fails
    fail_gallery_regions: frozenset[str] = frozenset()


@dataclass
class SimStats:
    """What the simulated platform saw, for reports."""

    copies_started: int = 0
    copies_succeeded: int = 0
    copies_failed: int = 0
    copies_aborted: int = 0
    clones: int = 0
    cross_region_copies: int = 0
    bytes_copied: int = 0
    cross_region_bytes: int = 0
    blob_calls: int = 0
    blob_busy_errors: int = 0
    range_requests: int = 0  # Put Page From URL requests a ranged copy made (modelled, 4 MiB)
    range_busy_errors: int = 0
    ranges_landed: int = 0  # range copy calls that wrote their range
    arm_writes: int = 0
    arm_reads: int = 0
    throttled: int = 0
    images_started: int = 0
    images_succeeded: int = 0
    images_failed: int = 0
    by_call: dict[str, int] = field(default_factory=dict)

    def count(self, call: str, calls: int = 1) -> None:
        self.by_call[call] = self.by_call.get(call, 0) + calls
