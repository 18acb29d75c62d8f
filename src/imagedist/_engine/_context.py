"""What every engine step needs: the ports, the config, who we are, and a way to log."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .._domain import LogRecord
from .._redact import redact

if TYPE_CHECKING:
    from .._config import Config
    from ..abc import Backend

__all__ = ["EngineContext"]


@dataclass
class EngineContext:
    """The ports and the policy one worker (or one CLI command) runs with."""

    backend: Backend
    config: Config
    worker_id: str = field(default_factory=lambda: f"w-{uuid.uuid4().hex[:12]}")
    # A job id's random suffix; the simulator passes a seeded one so its runs repeat exactly.
    random_suffix: Callable[[], str] = field(default=lambda: secrets.token_hex(2))

    async def log(self, job_id: str, level: str, step: str, message: str, target: str = "") -> None:
        """Append a line to the job's log, redacted: a message may quote an error from outside."""
        record = LogRecord(
            job_id, self.backend.clock.now(), level, step, redact(message), target=target
        )
        await self.backend.state.append_log(record)

    def lease_until(self) -> float:
        return self.backend.clock.now() + self.config.concurrency.lease_seconds

    def lease_is_free(self, owner: str | None, until: float) -> bool:
        """A lease can be taken when nobody holds it, it ran out, or it is ours."""
        return owner is None or owner == self.worker_id or until < self.backend.clock.now()
