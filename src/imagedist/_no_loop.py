"""Coroutines that never suspend, finished without an event loop (issue 13): reading jobs from
a state store that works in the caller's thread is such a coroutine, so `status`, `jobs` and
`logs` share the library's reading code without paying for asyncio's import."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["finish"]

T = TypeVar("T")


def finish(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` to its end in this thread and return its result (or raise its error).

    :raises RuntimeError: if it suspends: it awaited something that only an event loop
        completes, so it cannot finish here.
    """
    try:
        coroutine.send(None)
    except StopIteration as done:
        result: T = done.value
        return result
    coroutine.close()
    raise RuntimeError("the coroutine suspended; it needs an event loop")
