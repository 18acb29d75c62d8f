"""Coroutines that never suspend finish without an event loop; one that suspends is refused."""

from __future__ import annotations

import inspect
from collections.abc import Generator
from typing import Any

import pytest

from imagedist._no_loop import finish


class _Suspends:
    """An awaitable that suspends once, as an await on an event loop's future does."""

    def __await__(self) -> Generator[Any, None, int]:
        yield None
        return 1


async def _plus_one(value: int) -> int:
    async def same(v: int) -> int:
        return v

    return await same(value) + 1


async def _fails() -> int:
    raise KeyError("no such job")


async def _waits() -> int:
    return await _Suspends()


def test_a_coroutine_that_never_suspends_gives_its_result() -> None:
    assert finish(_plus_one(41)) == 42


def test_a_coroutine_that_never_suspends_raises_its_own_error() -> None:
    with pytest.raises(KeyError, match="no such job"):
        finish(_fails())


def test_a_coroutine_that_suspends_is_refused_and_closed() -> None:
    coroutine = _waits()

    with pytest.raises(RuntimeError, match="needs an event loop"):
        finish(coroutine)
    # Closed: no "never awaited" warning, nothing left half-run.
    assert inspect.getcoroutinestate(coroutine) == inspect.CORO_CLOSED
