"""Azure Resource Manager in the simulator: per-subscription token buckets and throttling."""

from __future__ import annotations

import math
import random

from ..._exceptions import TransientError
from ...abc import Clock
from .model import SimFaults, SimModel, SimStats

__all__ = ["ArmThrottle", "TokenBucket"]


class TokenBucket:
    """``capacity`` tokens, refilled at ``rate`` per second; a call takes one."""

    def __init__(self, capacity: float, rate: float, now: float) -> None:
        self.capacity, self.rate = capacity, rate
        self.tokens, self.t = capacity, now

    def take(self, now: float) -> float:
        """Take a token and return 0, or return the seconds until one is available."""
        if now > self.t:
            self.tokens = min(self.capacity, self.tokens + (now - self.t) * self.rate)
            self.t = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class ArmThrottle:
    """ARM's request limits per subscription: a write and a read token bucket, plus random 429s."""

    def __init__(
        self, clock: Clock, model: SimModel, faults: SimFaults, stats: SimStats, seed: int
    ) -> None:
        self._clock, self._model, self._faults, self._stats = clock, model, faults, stats
        self._buckets: dict[tuple[str, bool], TokenBucket] = {}
        self._rng = random.Random(f"{seed}:arm-faults")

    def count_reads(self, subscription: str, what: str, n: int) -> None:
        """Count ``n`` reads made without a call (looks a caller was spared), unthrottled."""
        self._stats.arm_reads += n
        self._stats.by_call[what] = self._stats.by_call.get(what, 0) + n

    def call(self, subscription: str, *, write: bool, what: str) -> None:
        """Count one ARM call.

        :raises TransientError: with ``retry_after`` (429 and its Retry-After header) if throttled.
        """
        stats, model = self._stats, self._model
        if write:
            stats.arm_writes += 1
        else:
            stats.arm_reads += 1
        stats.count(what)
        now = self._clock.now()
        key = (subscription.lower(), write)
        bucket = self._buckets.get(key)
        if bucket is None:
            capacity = model.arm_write_bucket if write else model.arm_read_bucket
            rate = model.arm_write_refill if write else model.arm_read_refill
            bucket = self._buckets[key] = TokenBucket(capacity, rate, now)
        wait = bucket.take(now)
        if (
            not wait
            and self._faults.arm_throttle
            and self._rng.random() < self._faults.arm_throttle
        ):
            wait = self._rng.uniform(1.0, 10.0)
        if wait:
            stats.throttled += 1
            retry_after = float(max(1, math.ceil(wait)))  # Retry-After is whole seconds
            kind = "write" if write else "read"
            raise TransientError(
                f"429 TooManyRequests: {kind} throttled in subscription '{subscription}' (simulated)",
                retry_after=retry_after,
            )
