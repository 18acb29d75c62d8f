"""One limiter for the work a worker runs at once: copies and image creations (issue 9)."""

from __future__ import annotations

import asyncio
import collections

__all__ = ["Limiter", "Slot", "Turns"]


class Turns:
    """Waiters for room, woken in turn: one per unit of room freed, not all of them at once
    (waking every waiter at each release cost thousands of wake-ups when thousands wait)."""

    def __init__(self) -> None:
        self._waiting: collections.deque[asyncio.Future[None]] = collections.deque()

    async def wait(self) -> None:
        """Until :meth:`wake` reaches this waiter. One woken, then cancelled before it could
        use the room, hands its turn to the next."""
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(turn)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self.wake()
            raise

    def wake(self, count: int = 1) -> None:
        """Wake the next ``count`` waiters still waiting."""
        while count > 0 and self._waiting:
            turn = self._waiting.popleft()
            if not turn.done():  # else its waiter was cancelled meanwhile
                turn.set_result(None)
                count -= 1


class Limiter:
    """Counts slots held against a capacity.

    New work checks :attr:`full` (copies) or waits for a slot (:meth:`acquire`, images); work
    resumed from the store takes a slot with :meth:`take` even over the capacity, because it is
    already running on the platform and must be followed to its end.
    """

    def __init__(self, capacity: int | None) -> None:
        self.capacity = capacity  # None: no cap
        self.held = 0
        self._turns = Turns()

    @property
    def full(self) -> bool:
        return self.capacity is not None and self.held >= self.capacity

    def take(self) -> Slot:
        """A slot now, whatever is held."""
        self.held += 1
        return Slot(self)

    async def acquire(self) -> Slot:
        """A slot once one is free (waiters served in turn)."""
        while self.full:
            await self._turns.wait()
        return self.take()

    def _release(self) -> None:
        self.held -= 1
        self._turns.wake()


class Slot:
    """One held slot of a :class:`Limiter`; releasing it twice releases it once."""

    __slots__ = ("_limiter",)

    def __init__(self, limiter: Limiter | None) -> None:
        self._limiter = limiter

    @classmethod
    def none(cls) -> Slot:
        """A slot of no limiter, for work that counts against none."""
        return cls(None)

    @property
    def held(self) -> bool:
        return self._limiter is not None

    def release(self) -> None:
        if self._limiter is not None:
            self._limiter._release()
            self._limiter = None

    async def __aenter__(self) -> Slot:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release()
