"""Virtual time for asyncio: a loop whose clock jumps to the next timer instead of waiting for it.

The loop runs every ready callback as usual. When none is ready, a real event loop would block in
``select(timeout)`` until the next timer is due; this one advances its clock by ``timeout`` at once
and returns no events. So a program that only waits on timers (``asyncio.sleep``, ``wait_for``...)
runs as fast as its callbacks execute, and its timings are exact and repeatable.

Work handed to threads (``run_in_executor``, ``asyncio.to_thread``) is tolerated: while any is in
flight the loop waits for it in real time with its clock stopped, so a thread costs no virtual time.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import gc
import selectors
from collections.abc import Callable, Coroutine, Iterator, Mapping
from typing import Any, TypeVar

from ...abc import Clock

__all__ = ["DEFAULT_EPOCH", "VirtualClock", "VirtualTimeLoop", "run_virtual"]

T = TypeVar("T")
DEFAULT_EPOCH = 1_700_000_000.0  # 2023-11-14: what VirtualClock.now() reads at loop time 0


class VirtualTimeDeadlock(RuntimeError):
    """Raised when no callback is ready, no timer is scheduled and no thread is running."""


class _VirtualSelector(selectors.BaseSelector):
    """A real selector (for the loop's self-pipe) whose waits are turned into clock jumps."""

    def __init__(self, loop: VirtualTimeLoop) -> None:
        self._loop = loop
        self._real = selectors.DefaultSelector()

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._real.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.modify(fileobj, events, data)

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._real.get_map()

    def close(self) -> None:
        self._real.close()

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        events = self._real.select(0)
        if events or timeout == 0:
            return events
        if self._loop.threads_in_flight:
            # The clock stands still while a thread works; its completion wakes the self-pipe.
            return self._real.select(timeout=None)
        if timeout is None:
            raise VirtualTimeDeadlock(
                "virtual time deadlock: no callback is ready, no timer is scheduled and no thread"
                " is running, so nothing can ever happen"
            )
        self._loop.advance(timeout)
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop on a virtual clock that starts at ``start`` and moves only by jumps.

    ``time()`` is the virtual clock. It advances only when every task waits on a timer, straight
    to the earliest one.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._virtual_now = float(start)
        self.threads_in_flight = 0
        super().__init__(_VirtualSelector(self))

    def time(self) -> float:
        return self._virtual_now

    def advance(self, seconds: float) -> None:
        """Move the clock forward (the selector does this; tests may too)."""
        if seconds > 0:
            self._virtual_now += seconds

    def run_in_executor(  # type: ignore[override]
        self, executor: concurrent.futures.Executor | None, func: Callable[..., T], *args: Any
    ) -> asyncio.Future[T]:
        future = super().run_in_executor(executor, func, *args)
        self.threads_in_flight += 1
        future.add_done_callback(self._thread_done)
        return future

    def _thread_done(self, _future: asyncio.Future[Any]) -> None:
        self.threads_in_flight -= 1

    async def shutdown_default_executor(self, *args: Any) -> None:
        # The base class joins the executor in a thread of its own and waits for its callback.
        self.threads_in_flight += 1
        try:
            await super().shutdown_default_executor(*args)
        finally:
            self.threads_in_flight -= 1


def run_virtual(coro: Coroutine[Any, Any, T], *, start: float = 0.0, debug: bool = False) -> T:
    """Run ``coro`` to its end on a fresh :class:`VirtualTimeLoop` and return its result.

    Like :func:`asyncio.run`: remaining tasks are cancelled and the loop is closed afterwards.
    """
    with (
        _young_garbage_only(),
        asyncio.Runner(debug=debug, loop_factory=lambda: VirtualTimeLoop(start)) as runner,
    ):
        return runner.run(coro)


# A simulation allocates a handle, a future or a task per virtual event, by the million, and
# keeps its world (every row, blob and timer) alive throughout: the collector's default
# thresholds then walk that whole world again and again, which was 40% of a 10,000-target plan.
# Young objects are still collected (a cycle of a failed task's traceback among them), the old
# generation only once the simulation ends.
YOUNG_THRESHOLDS = (50_000, 20, 1_000_000)


@contextlib.contextmanager
def _young_garbage_only() -> Iterator[None]:
    saved = gc.get_threshold()
    gc.set_threshold(*YOUNG_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*saved)


class VirtualClock(Clock):
    """The Clock port on the running loop's clock: ``now()`` is ``epoch`` + loop time.

    On a :class:`VirtualTimeLoop` that is virtual time; ``sleep`` is :func:`asyncio.sleep`, so it
    takes no real time there.
    """

    def __init__(self, epoch: float = DEFAULT_EPOCH) -> None:
        self.epoch = epoch

    def now(self) -> float:
        return self.epoch + asyncio.get_running_loop().time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
