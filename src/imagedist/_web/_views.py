"""What the dashboard shows, as JSON-ready dicts: the one shape the API returns, the pages render
and the live updates push. Every string goes through the redaction on its way out."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

from .._api import JobStatus, PhaseSpan
from .._domain import LogRecord, Target, TargetRow, TargetState
from .._redact import redact

__all__ = [
    "STATE_LABELS",
    "job_summary",
    "job_view",
    "log_view",
    "redacted",
    "target_view",
    "timeline_view",
    "when",
]

# Each state's text and icon: colour is never the only signal of a cell's state.
STATE_LABELS: dict[str, tuple[str, str]] = {
    TargetState.PENDING.value: ("pending", "○"),
    TargetState.COPYING.value: ("copying", "⇢"),
    TargetState.COPIED.value: ("copied", "◐"),
    TargetState.IMAGING.value: ("creating image", "◑"),
    TargetState.DONE.value: ("done", "✓"),
    TargetState.FAILED.value: ("failed", "✗"),
    TargetState.SKIPPED.value: ("skipped", "–"),
}
V = TypeVar("V")
FINISHED_STATES = frozenset({TargetState.DONE.value, TargetState.SKIPPED.value})


def redacted(value: V) -> V:
    """``value`` with every string in it (keys too) redacted, however deeply nested (a tuple
    comes back as a list, as JSON has it)."""
    return cast(V, _redacted(value))


def _redacted(value: object) -> object:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {_redacted(k): _redacted(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redacted(v) for v in value]
    return value


def when(ts: float | None) -> str | None:
    """An instant as ISO 8601 in UTC, to the second."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def _phases(status: JobStatus) -> dict[str, int]:
    phases = {
        "upload": status.upload_pct,
        "tier1": status.tier1_pct,
        "copies": status.copies_pct,
        "images": status.images_pct,
    }
    if status.gallery_pct is not None:
        phases["gallery"] = status.gallery_pct
    return phases


def job_summary(status: JobStatus) -> dict[str, Any]:
    """A job as the jobs list shows it: no targets."""
    job = status.job
    return redacted(
        {
            "job": job.id,
            "image_name": job.image_name,
            "os_type": job.os_type.value,
            "source": job.source_disk or job.input_path or job.source_path,
            "description": job.description,
            "size_bytes": job.size_bytes,
            "submitted_at": when(job.created_at),
            "finished_at": when(job.finished_at),
            "publish": list(job.publish),
            "state": status.state.value,
            "completed": status.completed,
            "phases": _phases(status),
            "error_count": status.error_count,
            "counts": dict(sorted(status.counts.items())),
        }
    )


def target_view(row: TargetRow, percent: int | None = None) -> dict[str, Any]:
    label, icon = STATE_LABELS.get(row.state.value, (row.state.value, "?"))
    return {
        "target": row.target,
        "subscription": row.subscription,
        "region": row.region,
        "state": row.state.value,
        "label": label,
        "icon": icon,
        "percent": percent if row.state is TargetState.COPYING else None,
        "image": row.image_name,
        "attempts": row.attempts,
        "failed_phase": row.failed_phase.value if row.failed_phase else None,
        "error": row.error,
    }


def _grid(targets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The targets grouped by subscription, each group sorted by region, with whether every
    target of it is finished (a page collapses those)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for target in targets:
        groups.setdefault(target["subscription"], []).append(target)
    return [
        {
            "subscription": sub,
            "finished": all(t["state"] in FINISHED_STATES for t in cells),
            "counts": _count(cells),
            "targets": sorted(cells, key=lambda t: t["region"]),
        }
        for sub, cells in sorted(groups.items())
    ]


def _count(cells: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for cell in cells:
        counts[cell["state"]] = counts.get(cell["state"], 0) + 1
    return dict(sorted(counts.items()))


def _publications(status: JobStatus) -> list[dict[str, Any]]:
    return [
        {
            "key": row.key,
            "gallery": row.gallery.name,
            "subscription": row.gallery.subscription,
            "definition": row.definition,
            "version": row.version_name,
            "state": row.state.value,
            "error": row.error,
            "regions": [
                {"region": name, "state": r.state, "progress": r.progress, "error": r.error}
                for name, r in sorted(row.regions.items())
            ],
        }
        for row in status.publications
    ]


def job_view(
    status: JobStatus,
    percents: Mapping[str, int] | None = None,
    *,
    errors: Sequence[LogRecord] | None = None,
    timeline: Sequence[PhaseSpan] | None = None,
) -> dict[str, Any]:
    """A job with its targets (grouped by subscription), its gallery versions and, when
    given, its error log and timeline."""
    percents = percents or {}
    targets = [target_view(t, percents.get(t.target)) for t in status.targets]
    data = job_summary(status)
    data["regions"] = sorted({t["region"] for t in targets})
    data["subscriptions"] = _grid(targets)
    data["gallery"] = _publications(status)
    if errors is not None:
        data["error_log"] = [log_view(r) for r in errors]
    if timeline is not None:
        data["timeline"] = timeline_view(timeline, status.job.created_at)
    return redacted(data)


def timeline_view(spans: Sequence[PhaseSpan], start: float) -> list[dict[str, Any]]:
    return [
        {
            "step": span.step,
            "started_at": when(span.started_at),
            "ended_at": when(span.ended_at),
            "offset_seconds": round(span.started_at - start, 3),
            "seconds": round(span.ended_at - span.started_at, 3),
        }
        for span in spans
    ]


def log_view(record: LogRecord) -> dict[str, Any]:
    return redacted(
        {
            "ts": when(record.ts),
            "level": record.level,
            "step": record.step,
            "target": record.target,
            "message": record.message,
            "extra": dict(record.extra),
        }
    )


def fleet_view(fleet: Sequence[tuple[Target, bool]]) -> list[dict[str, Any]]:
    return redacted(
        [
            {
                "target": t.name,
                "subscription": t.subscription,
                "region": t.region,
                "account": t.account,
                "enabled": on,
            }
            for t, on in fleet
        ]
    )


def plan_view(plan: Any) -> dict[str, Any]:
    """A plan (the library's prediction) as plain data."""
    data: dict[str, Any] = dataclasses.asdict(plan)
    return redacted(data)
