"""The virtual-time event loop: timers fire in order, at exact virtual times, without waiting."""

from __future__ import annotations

import asyncio
import time

import pytest

from imagedist._backends.sim import DEFAULT_EPOCH, VirtualClock, VirtualTimeLoop, run_virtual
from imagedist._backends.sim.loop import VirtualTimeDeadlock


def test_ten_hours_of_sleeping_take_no_real_time() -> None:
    async def sleeper(hours: float) -> float:
        await asyncio.sleep(hours * 3600)
        return asyncio.get_running_loop().time()

    async def main() -> list[float]:
        return list(await asyncio.gather(sleeper(2), sleeper(3), sleeper(5)))

    began = time.perf_counter()
    woke = run_virtual(main())
    assert time.perf_counter() - began < 1.0
    assert woke == [2 * 3600, 3 * 3600, 5 * 3600]


def test_timers_fire_in_time_order_and_ties_in_scheduling_order() -> None:
    order: list[str] = []

    async def at(seconds: float, name: str) -> None:
        await asyncio.sleep(seconds)
        order.append(name)

    async def main() -> None:
        await asyncio.gather(at(30, "c"), at(10, "a"), at(20, "b1"), at(20, "b2"), at(0, "zero"))

    run_virtual(main())
    assert order == ["zero", "a", "b1", "b2", "c"]


def test_virtual_clock_advances_exactly() -> None:
    clock = VirtualClock()

    async def main() -> list[float]:
        seen = [clock.now()]
        for step in (0.5, 59.5, 3600.0, 1e-3):
            await clock.sleep(step)
            seen.append(clock.now())
        return seen

    seen = run_virtual(main(), start=100.0)
    assert seen == [
        DEFAULT_EPOCH + 100.0,
        DEFAULT_EPOCH + 100.5,
        DEFAULT_EPOCH + 160.0,
        DEFAULT_EPOCH + 3760.0,
        DEFAULT_EPOCH + 3760.001,
    ]


def test_time_stands_still_while_callbacks_run_and_wait_for_respects_virtual_time() -> None:
    async def main() -> tuple[float, float, bool]:
        loop = asyncio.get_running_loop()
        before = loop.time()
        sum(range(200_000))  # real work costs no virtual time
        after_work = loop.time()
        try:
            await asyncio.wait_for(asyncio.sleep(100), timeout=7)
            timed_out = False
        except TimeoutError:
            timed_out = True
        return after_work - before, loop.time(), timed_out

    spent, now, timed_out = run_virtual(main())
    assert spent == 0.0
    assert (now, timed_out) == (7.0, True)


def test_threads_cost_no_virtual_time() -> None:
    async def main() -> tuple[int, float]:
        loop = asyncio.get_running_loop()

        def work() -> int:
            time.sleep(0.05)
            return 42

        result = await asyncio.to_thread(work)
        return result, loop.time()

    assert run_virtual(main()) == (42, 0.0)


def test_a_task_waiting_forever_is_a_deadlock_not_a_hang() -> None:
    async def main() -> None:
        await asyncio.get_running_loop().create_future()

    with pytest.raises(VirtualTimeDeadlock):
        run_virtual(main())


def test_the_loop_is_an_ordinary_asyncio_loop() -> None:
    loop = VirtualTimeLoop(start=5.0)
    try:
        assert loop.time() == 5.0
        assert loop.run_until_complete(asyncio.sleep(10, result="done")) == "done"
        assert loop.time() == 15.0
    finally:
        loop.close()
