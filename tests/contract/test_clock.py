"""Contract of the Clock port: every implementation must pass these.

The engine reads ``now()`` for leases and deadlines and ``sleep()`` between polls, so both clocks
must agree on what they mean: seconds since the epoch, and a sleep that moves ``now()`` on by at
least what was asked (virtual time by exactly that, without waiting).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest

from imagedist._backends.sim.loop import DEFAULT_EPOCH, VirtualClock, run_virtual
from imagedist.abc import Clock, SystemClock

T = TypeVar("T")

#: a sleep long enough to measure on a loaded machine, short enough to keep the suite fast
STEP = 0.05


@dataclass
class ClockHarness:
    """One clock under test and the loop it runs on."""

    kind: str
    clock: Clock
    #: run a coroutine to its end on the loop this clock belongs to
    run: Callable[[Coroutine[Any, Any, Any]], Any]
    #: whether time moves only by sleeps (then a sleep moves ``now()`` by exactly its length)
    virtual: bool

    def call(self, body: Callable[[Clock], Awaitable[T]]) -> T:
        async def main() -> T:
            return await body(self.clock)

        result: T = self.run(main())
        return result


@pytest.fixture(
    params=[
        pytest.param("system", id="system"),
        pytest.param("virtual", id="virtual"),
    ]
)
def clock(request: pytest.FixtureRequest) -> ClockHarness:
    if request.param == "system":
        return ClockHarness("system", SystemClock(), asyncio.run, virtual=False)
    return ClockHarness("virtual", VirtualClock(), run_virtual, virtual=True)


def test_now_is_seconds_since_the_epoch(clock: ClockHarness) -> None:
    async def body(c: Clock) -> float:
        return c.now()

    now = clock.call(body)

    assert isinstance(now, float)
    expected = DEFAULT_EPOCH if clock.virtual else time.time()
    assert abs(now - expected) < 5


def test_a_sleep_moves_now_on_by_at_least_its_length(clock: ClockHarness) -> None:
    async def body(c: Clock) -> float:
        before = c.now()
        await c.sleep(STEP)
        return c.now() - before

    elapsed = clock.call(body)

    assert elapsed >= STEP - 0.005  # (the wall clock's resolution)
    if clock.virtual:
        assert elapsed == pytest.approx(STEP)


def test_a_sleep_of_zero_or_less_returns_at_once(clock: ClockHarness) -> None:
    async def body(c: Clock) -> float:
        before = c.now()
        await c.sleep(0)
        await c.sleep(-1)
        return c.now() - before

    assert 0 <= clock.call(body) < 1


def test_now_never_goes_back(clock: ClockHarness) -> None:
    async def body(c: Clock) -> list[float]:
        seen = [c.now()]
        for _ in range(5):
            await c.sleep(STEP / 5)
            seen.append(c.now())
        return seen

    seen = clock.call(body)

    assert seen == sorted(seen)


def test_concurrent_sleepers_wake_in_the_order_of_their_deadlines(clock: ClockHarness) -> None:
    async def body(c: Clock) -> list[int]:
        woke: list[int] = []

        async def sleeper(n: int) -> None:
            await c.sleep(n * STEP)
            woke.append(n)

        async with asyncio.TaskGroup() as tg:
            for n in (3, 1, 2):
                tg.create_task(sleeper(n))
        return woke

    assert clock.call(body) == [1, 2, 3]


def test_a_virtual_sleep_takes_no_real_time(clock: ClockHarness) -> None:
    if not clock.virtual:
        pytest.skip(
            f"{clock.kind} time is real: taking no real time is a virtual clock's promise only,"
            " nothing to add for this clock"
        )

    async def body(c: Clock) -> float:
        before = c.now()
        await c.sleep(3600)
        return c.now() - before

    started = time.monotonic()
    assert clock.call(body) == 3600
    assert time.monotonic() - started < 1
