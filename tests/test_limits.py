"""The worker's limiter of work at once (copies, image creations): waiters are served in turn,
one per slot freed, and a slot is never lost to a waiter cancelled after it was woken."""

from __future__ import annotations

import asyncio

from imagedist._engine._limits import Limiter, Slot


def test_waiters_get_the_slots_in_turn_and_never_more_than_the_capacity() -> None:
    async def main() -> tuple[list[int], int]:
        limiter = Limiter(2)
        order: list[int] = []
        peak = 0

        async def work(number: int) -> None:
            nonlocal peak
            async with await limiter.acquire():
                peak = max(peak, limiter.held)
                order.append(number)
                await asyncio.sleep(0)

        async with asyncio.TaskGroup() as group:
            for number in range(20):
                group.create_task(work(number))
        return order, peak

    order, peak = asyncio.run(main())
    assert order == list(range(20))
    assert peak == 2


def test_a_waiter_cancelled_after_it_was_woken_hands_its_slot_on() -> None:
    async def main() -> bool:
        limiter = Limiter(1)
        held = limiter.take()
        first = asyncio.create_task(limiter.acquire())
        second = asyncio.create_task(limiter.acquire())
        await asyncio.sleep(0)  # both wait
        held.release()  # wakes the first ...
        first.cancel()  # ... which is cancelled before it runs
        slot: Slot = await asyncio.wait_for(second, timeout=5)
        return first.cancelled() and slot.held

    assert asyncio.run(main())
