"""What every engine step needs: the ports, the settings, who we are, a way to log and a way to
report what happened."""

from __future__ import annotations

import math
import secrets
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from .._domain import LogRecord
from .._domain.events import EngineEvent, EventKind, LogLevel, Step
from .._redact import redact

if TYPE_CHECKING:
    from .._config import Config
    from .._domain import Job
    from ..abc import Backend, DiskSource, DiskSources
    from ._ranged import RequestRate

__all__ = ["EngineContext", "EngineSettings", "EventSink"]

T = TypeVar("T")
EventSink = Callable[[EngineEvent], None]


@dataclass(frozen=True)
class EngineSettings:
    """The policy figures the engine runs with, taken from the config once (issue 9: the engine
    is given settings, not the config's sections, so it never reads an adapter's own)."""

    poll_interval: float  # seconds between two looks at a copy or an image
    lease_seconds: float
    copies: int | None  # copies (tier 1 and targets) one worker starts at most at once
    images: int | None  # image creations one worker follows at most at once (None: no cap)
    upload_concurrency: int
    content_md5: bool
    fanout_strategy: str
    max_reads_per_source: int
    staging_region: str
    storage_sku: str  # of the accounts `setup` creates
    # How a target's copy moves: "auto", "async" or "ranged" ([fanout] copy_method, issue 13),
    # and how many ranged copies "auto" runs at once in one worker.
    copy_method: str = "auto"
    ranged_copies: int = 16
    # How long an image may stay Updating, Deleting (or in a state we cannot read) before the
    # target fails: those are someone else's operations, which we wait for but never hurry.
    image_settle_seconds: float = 1800.0

    @classmethod
    def from_config(cls, config: Config) -> EngineSettings:
        return cls(
            poll_interval=config.concurrency.poll_interval_seconds,
            lease_seconds=config.concurrency.lease_seconds,
            copies=config.concurrency.copies,
            images=config.concurrency.images,
            upload_concurrency=config.upload.concurrency,
            content_md5=config.upload.content_md5,
            fanout_strategy=config.fanout.strategy,
            max_reads_per_source=config.fanout.max_reads_per_source,
            copy_method=config.fanout.copy_method,
            ranged_copies=config.fanout.ranged_copies,
            staging_region=config.staging.region,
            storage_sku=config.azure.storage_sku,
        )


@dataclass
class EngineContext:
    """The ports and the policy one worker (or one CLI command) runs with.

    :param on_event: called with every :class:`EngineEvent` the engine emits (``plan``, progress
        displays); it must not block.
    :param disk_sources: gives each job's :class:`~imagedist.abc.DiskSource` (a test passes a
        fake); by default the job's file or managed disk (:func:`imagedist._disks.disk_sources`).
    """

    backend: Backend
    config: Config  # the fleet and the naming of jobs; policy comes from ``settings``
    worker_id: str = field(default_factory=lambda: f"w-{uuid.uuid4().hex[:12]}")
    # A job id's random suffix; the simulator passes a seeded one so its runs repeat exactly.
    random_suffix: Callable[[], str] = field(default=lambda: secrets.token_hex(2))
    on_event: EventSink | None = None
    # Where a job's tier 0 comes from; None: its file on this machine, or its managed disk.
    disk_sources: DiskSources | None = None
    settings: EngineSettings = field(init=False)
    # When this worker first saw an image in a state it waits out (subscription, resource group,
    # image name, state, all lower-case) -> clock time: bounds that wait. In memory: a restarted
    # worker waits the whole bound again, which only delays a failure.
    image_waits: dict[tuple[str, str, str, str], float] = field(init=False, default_factory=dict)

    # Ranged copies (issue 13): each destination account's request budget, shared by every copy
    # into it; and whether the blob store turned out not to copy ranges ("auto" then stops).
    range_rates: dict[str, RequestRate] = field(init=False, default_factory=dict)
    ranged_unsupported: bool = field(init=False, default=False)
    ranged_running: int = field(init=False, default=0)  # ranged copies this worker runs now

    def ranged_slot_free(self) -> bool:
        """Whether one more copy may move by ranges in this worker now."""
        if self.settings.copy_method == "ranged":
            return True
        return self.ranged_running < self.settings.ranged_copies

    def __post_init__(self) -> None:
        self.settings = EngineSettings.from_config(self.config)

    def range_rate(self, account: str) -> RequestRate:
        """The request budget of ``account`` for range copies, shared by this worker's copies."""
        rate = self.range_rates.get(account)
        if rate is None:
            from ._ranged import RangedLimits, RequestRate

            limits = RangedLimits()
            rate = RequestRate(self.backend.clock, limits.account_requests_per_second)
            self.range_rates[account] = rate
        return rate

    def disk_source(self, job: Job) -> DiskSource:
        """The job's tier-0 source, from :attr:`disk_sources`."""
        if self.disk_sources is None:
            from .._disks import disk_sources  # the default, made when first needed

            self.disk_sources = disk_sources(self.backend.images, self.config.work_dir())
        return self.disk_sources(job)

    async def log(
        self, job_id: str, level: LogLevel, step: Step, message: str, target: str = ""
    ) -> None:
        """Append a line to the job's log, redacted: a message may quote an error from outside."""
        now = self.backend.clock.now()
        # str(): a plain string from a caller not yet on the enums reads the same.
        record = LogRecord(job_id, now, str(level), str(step), redact(message), target=target)
        await self.backend.state.append_log(record)

    def emit(
        self, job_id: str, kind: EventKind, *, target: str = "", source: str = "", detail: str = ""
    ) -> None:
        """Report an event to the sink, if any (the log line beside it stays for people)."""
        if self.on_event is not None:
            event = EngineEvent(job_id, self.backend.clock.now(), kind, target, source, detail)
            self.on_event(event)

    def lease_until(self) -> float:
        return self.backend.clock.now() + self.settings.lease_seconds

    def lease_is_free(self, owner: str | None, until: float) -> bool:
        """A lease can be taken when nobody holds it, it ran out, or it is ours."""
        return owner is None or owner == self.worker_id or until < self.backend.clock.now()

    async def pause(self) -> None:
        """Wait one poll interval."""
        await self.backend.clock.sleep(self.settings.poll_interval)

    async def poll_while(
        self,
        item: T,
        running: Callable[[T], bool],
        look: Callable[[T], Awaitable[T]],
        ended: Callable[[T], Awaitable[bool]] | None = None,
    ) -> T:
        """The one polling loop (issue 9): while ``item`` is still running, look at it again,
        pausing between looks; returns it once it settled.

        ``ended(item)`` may wait for the item's end where the backend can tell it (returning
        True; False: it cannot, and the loop pauses as usual). The next look is then the first
        one the plain loop would have made after that wait: looks stay on the grid of poll
        intervals from the first, so a simulated run times everything as a polling one does,
        without the looks in between.
        """
        clock, period = self.backend.clock, self.settings.poll_interval
        first, looks = clock.now(), 0
        while running(item):
            item = await look(item)
            looks += 1
            if not running(item):
                break
            if ended is None or not await ended(item):
                await self.pause()
                continue
            # The first grid point not before now (a hair of float rounding forgiven).
            looks = max(looks, math.ceil((clock.now() - first) / period - 1e-6))
            due = first + looks * period - clock.now()
            if due > 0:
                await clock.sleep(due)
        return item
