"""What shaped a planned makespan: the critical path of the simulated job, leg by leg, and the
limit that bound it, in words (issue 13: `plan` says which limit bound the makespan, and why).

The path is read backwards from the last image: its creation, the wait for it, the copy that
fed it, the wait for that copy's source, and so on up the copy tree to the upload. Every leg is
one of a few kinds, so the sentence names the kind that took the most time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ._domain import SourceRow
from ._domain.events import COPIED_BY_COPY_BLOB, EngineEvent, EventKind

__all__ = ["Leg", "bound_by", "critical_path"]

# The kinds of legs, as `plan` names them.
UPLOAD = "upload"
CLONE = "same-account clone"
COPY = "copy"
SOURCE_WAIT = "waiting for a source"
IMAGE_WAIT = "waiting to create the image"
IMAGE = "image creation"
FOLLOW = "pipelined copy, after its parent's last range"


@dataclass(frozen=True)
class Leg:
    """One stretch of the critical path: ``kind``, the item it moved, and how long it took;
    for a copy, the method that moved it (``COPIED_BY_*``)."""

    kind: str
    item: str
    seconds: float
    method: str = ""


@dataclass(frozen=True)
class Caps:
    """The engine's own limits, to tell a wait for a cap from a wait for the service."""

    copies: int | None
    images: int | None
    max_reads: int


def critical_path(
    events: Sequence[EngineEvent],
    sources: Sequence[SourceRow],
    *,
    start: float,
    upload_seconds: float,
) -> list[Leg]:
    """The legs from the job's start (``start`` on the engine's clock; the upload before it
    lasted ``upload_seconds``) to its last image, in time order (empty if none)."""
    done = [e for e in events if e.kind is EventKind.IMAGE_SUCCEEDED and _is_target(e)]
    if not done:
        return []
    last = max(done, key=lambda e: e.ts)
    at = _first_times(events)
    method = {
        e.target: e.detail for e in reversed(events) if e.kind is EventKind.COPY_VERIFIED
    }  # the first verification's, as ``at``
    at.setdefault((EventKind.UPLOAD_DONE, "tier0"), start)
    parents = {s.source_id: s.parent_id or "" for s in sources}
    legs: list[Leg] = []
    name = last.target
    started = at.get((EventKind.IMAGE_STARTED, name), last.ts)
    verified = at.get((EventKind.COPY_VERIFIED, name), started)
    legs += [Leg(IMAGE, name, last.ts - started), Leg(IMAGE_WAIT, name, started - verified)]
    node, end = f"target:{name}", verified
    while True:  # from the last copy up its tree, each leg ending where the one after begins
        if node.startswith("target:"):
            name = node.removeprefix("target:")
            source, copy_start = _copy_of(events, name)
            ready = _ready_at(at, source)
            if copy_start < ready:
                # Pipelined: it followed a copy still being made, and ended this long after it.
                legs.append(Leg(FOLLOW, name, end - ready, method.get(name, "")))
            else:
                legs += [
                    Leg(COPY, name, end - copy_start, method.get(name, "")),
                    Leg(SOURCE_WAIT, name, copy_start - ready),
                ]
            node, end = source, ready
        elif parents.get(node):
            parent = parents[node]
            ready = _ready_at(at, parent)
            legs.append(Leg(CLONE, node, end - ready))
            node, end = parent, ready
        else:  # the upload: the job's start
            legs.append(Leg(UPLOAD, node or "tier0", upload_seconds))
            break
    return [leg for leg in reversed(legs) if leg.seconds > 0 or leg.kind in (COPY, UPLOAD)]


def bound_by(
    legs: Sequence[Leg],
    events: Sequence[EngineEvent],
    caps: Caps,
    data_bytes: int,
) -> str:
    """One or two sentences: which limit shaped the makespan, and why (``data_bytes``: what
    one copy moves, to tell the copies' rates)."""
    if not legs:
        return "no image was made: nothing bounded a makespan."
    total = {kind: sum(leg.seconds for leg in legs if leg.kind == kind) for kind in _KINDS}
    copies = [leg for leg in legs if leg.kind == COPY]
    path = " → ".join(f"{leg.kind} {_minutes(leg.seconds)}" for leg in legs)
    kind = max(total, key=lambda k: total[k])
    if kind == COPY:
        slowest = max(leg.seconds for leg in copies)
        rate = f"{data_bytes / slowest / 1e6:.1f} MB/s" if slowest > 0 else "instant"
        copies_by = " and ".join(sorted({leg.method or COPIED_BY_COPY_BLOB for leg in copies}))
        why = (
            f"{len(copies)} copies ({copies_by}) in series on the critical path"
            f" ({_minutes(total[COPY])} of copying, the slowest at {rate}): the copy tree's"
            " depth times one copy's time; faster copies or fewer rounds shorten it."
        )
    elif kind == SOURCE_WAIT:
        why = _source_wait_reason(legs, events, caps)
    elif kind == IMAGE_WAIT:
        why = (
            f"image creations waited for a slot ([concurrency] images = {caps.images})."
            if caps.images is not None
            else "image creations waited for ARM's write budget (a bucket of 200 writes,"
            " then 10 a second, per subscription)."
        )
    elif kind == IMAGE:
        why = "the image creation itself, after the last copy landed."
    else:
        rest = sum(total.values()) - total[UPLOAD]
        why = f"the fan-out after it took {_minutes(rest)}; a faster upload link shortens it."
    return f"bound by {kind}: {why} Critical path: {path}."


_KINDS = (UPLOAD, CLONE, COPY, FOLLOW, SOURCE_WAIT, IMAGE_WAIT, IMAGE)


def _source_wait_reason(legs: Sequence[Leg], events: Sequence[EngineEvent], caps: Caps) -> str:
    waited = sum(leg.seconds for leg in legs if leg.kind == SOURCE_WAIT)
    if caps.copies is not None and _peak_copies(events) >= caps.copies:
        return (
            f"copies waited {_minutes(waited)} for a slot: [concurrency] copies = {caps.copies}"
            " was reached; server-side copies cost the worker nothing, so raise or remove it."
        )
    return (
        f"copies waited {_minutes(waited)} for a source with a free read"
        f" (max_reads_per_source = {caps.max_reads}): too few sources in a region for its"
        " targets."
    )


def _peak_copies(events: Sequence[EngineEvent]) -> int:
    """The most target copies that were running at once."""
    running = peak = 0
    for event in sorted(events, key=lambda e: e.ts):
        if event.kind is EventKind.COPY_STARTED:
            running += 1
            peak = max(peak, running)
        elif event.kind is EventKind.COPY_VERIFIED:
            running -= 1
    return peak


def _first_times(events: Sequence[EngineEvent]) -> dict[tuple[EventKind, str], float]:
    """When each (kind, item) first happened; a source's events are keyed by the source."""
    at: dict[tuple[EventKind, str], float] = {}
    for event in events:
        at.setdefault((event.kind, event.target or event.source), event.ts)
    return at


def _copy_of(events: Sequence[EngineEvent], target: str) -> tuple[str, float]:
    """The source and start of the copy that finally fed ``target`` (its last start)."""
    starts = [e for e in events if e.kind is EventKind.COPY_STARTED and e.target == target]
    if not starts:
        return "", 0.0
    last = max(starts, key=lambda e: e.ts)
    return last.source, last.ts


def _ready_at(at: dict[tuple[EventKind, str], float], source: str) -> float:
    if source.startswith("target:"):
        return at.get((EventKind.COPY_VERIFIED, source.removeprefix("target:")), 0.0)
    return at.get((EventKind.TIER1_READY, source), at.get((EventKind.UPLOAD_DONE, source), 0.0))


def _is_target(event: EngineEvent) -> bool:
    return bool(event.target) and not event.target.startswith("gallery/")


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"
