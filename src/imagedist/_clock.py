"""Real time, behind the Clock port so the engine can also run in virtual time."""

from __future__ import annotations

import asyncio
import time

from .abc import Clock

__all__ = ["SystemClock"]


class SystemClock(Clock):
    """Wall-clock time and :func:`asyncio.sleep`."""

    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
