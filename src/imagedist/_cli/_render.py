"""Turning library results into tables, grids, JSON and a live progress display."""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click

from .._api import JobStatus
from .._domain import LogRecord, TargetState
from .._domain.publications import PublicationRow
from ._text import Cell, Row, echo_lines, grid, table

# Rich loads only for the live progress display; `status`, `jobs` and `logs` print plain
# aligned text (issue 13).
if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

__all__ = [
    "live_progress",
    "log_to_dict",
    "print_jobs",
    "print_logs",
    "print_status",
    "status_grid",
    "status_to_dict",
]

STATE_STYLE = {
    TargetState.PENDING: "dim",
    TargetState.COPYING: "cyan",
    TargetState.COPIED: "blue",
    TargetState.IMAGING: "magenta",
    TargetState.DONE: "green",
    TargetState.FAILED: "bold red",
    TargetState.SKIPPED: "yellow",
}
PHASES = (
    ("upload", "upload_pct"),
    ("tier-1 copies", "tier1_pct"),
    ("target copies", "copies_pct"),
    ("images", "images_pct"),
)


def _when(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).isoformat(timespec="seconds")


def status_to_dict(status: JobStatus, errors: list[LogRecord] | None = None) -> dict[str, Any]:
    job = status.job
    data: dict[str, Any] = {
        "job": job.id,
        "image_name": job.image_name,
        "os_type": job.os_type.value,
        "hyper_v_generation": job.hyper_v_generation.value,
        "description": job.description,
        "size_bytes": job.size_bytes,
        "created_at": _when(job.created_at),
        "finished_at": _when(job.finished_at),
        "state": status.state.value,
        "completed": status.completed,
        "phases": {
            "upload": status.upload_pct,
            "tier1": status.tier1_pct,
            "copies": status.copies_pct,
            "images": status.images_pct,
        },
        "error_count": status.error_count,
        "counts": status.counts,
        "targets": [
            {
                "target": t.target,
                "subscription": t.subscription,
                "region": t.region,
                "state": t.state.value,
                "image": t.image_name,
                "attempts": t.attempts,
                "failed_phase": t.failed_phase.value if t.failed_phase else None,
                "error": t.error,
            }
            for t in status.targets
        ],
    }
    if status.gallery_pct is not None:
        data["publish"] = list(job.publish)
        data["phases"]["gallery"] = status.gallery_pct
        data["gallery"] = [_publication_to_dict(p) for p in status.publications]
    if errors is not None:
        data["error_log"] = [log_to_dict(r) for r in errors]
    return data


def _publication_to_dict(row: PublicationRow) -> dict[str, Any]:
    return {
        "key": row.key,
        "gallery": row.gallery.name,
        "subscription": row.gallery.subscription,
        "resource_group": row.gallery.resource_group,
        "definition": row.definition,
        "version": row.version_name,
        "state": row.state.value,
        "error": row.error,
        "regions": {
            name: {"state": r.state, "progress": r.progress, "error": r.error}
            for name, r in sorted(row.regions.items())
        },
    }


def log_to_dict(record: LogRecord) -> dict[str, Any]:
    return {
        "ts": _when(record.ts),
        "level": record.level,
        "step": record.step,
        "target": record.target,
        "message": record.message,
    }


def status_grid(status: JobStatus) -> Table:
    """Subscriptions down, regions across, each cell the target's state (the live display's)."""
    from rich.table import Table

    regions = sorted({t.region for t in status.targets})
    subscriptions = sorted({t.subscription for t in status.targets})
    cells = {(t.subscription, t.region): t.state for t in status.targets}
    shown = Table(title="targets", show_lines=False)
    shown.add_column("subscription")
    for region in regions:
        shown.add_column(region, justify="center")
    for subscription in subscriptions:
        row = []
        for region in regions:
            state = cells.get((subscription, region))
            row.append("" if state is None else f"[{STATE_STYLE[state]}]{state.value}[/]")
        shown.add_row(subscription, *row)
    return shown


def _summary(status: JobStatus) -> list[Row]:
    job = status.job
    rows: list[Row] = [
        [
            "job",
            f"{job.id}  ({job.image_name}, {job.os_type.value}, {job.hyper_v_generation.value})",
        ]
    ]
    for label, attr in PHASES:
        if label != "upload" and "images" not in job.publish:
            continue  # a gallery-only job has no target: those phases say nothing
        rows.append([label, f"{getattr(status, attr)} %"])
    if status.gallery_pct is not None:
        rows.append(["gallery replication", f"{status.gallery_pct} %"])
    rows.append(["errors", str(status.error_count)])
    completed = Cell("yes", "green") if status.completed else f"no ({status.state.value})"
    rows.append(["completed", completed])
    return rows


def _target_lines(status: JobStatus) -> list[str]:
    """Subscriptions down, regions across, each cell the target's state."""
    regions = sorted({t.region for t in status.targets})
    subscriptions = sorted({t.subscription for t in status.targets})
    cells = {(t.subscription, t.region): t.state for t in status.targets}
    rows: list[Row] = []
    for subscription in subscriptions:
        states = [cells.get((subscription, region)) for region in regions]
        shown = [Cell("") if s is None else Cell(s.value, STATE_STYLE[s]) for s in states]
        rows.append([subscription, *shown])
    centered = frozenset(range(1, len(regions) + 1))
    return table(["subscription", *regions], rows, title="targets", centered=centered)


def _gallery_lines(status: JobStatus) -> list[str]:
    """Gallery versions down, target regions across, as `gallery_grid` shows them."""
    regions = sorted({name for p in status.publications for name in p.regions})
    rows: list[Row] = []
    for row in status.publications:
        seen = [row.regions.get(region) for region in regions]
        cells = [Cell("") if r is None else _replication(r.state, r.progress) for r in seen]
        rows.append([f"{row.key}: {row.gallery.name} {row.version_name}", *cells])
    centered = frozenset(range(1, len(regions) + 1))
    return table(["gallery", *regions], rows, title="gallery versions", centered=centered)


def _replication(state: str, progress: int) -> Cell:
    style = {"completed": "green", "failed": "bold red", "replicating": "cyan"}.get(state, "dim")
    return Cell(f"{state} {progress}%" if state == "replicating" else state, style)


def print_status(status: JobStatus, errors: list[LogRecord]) -> None:
    """The summary, the target grid, the gallery grid and the error log, as plain aligned text
    (coloured on a terminal)."""
    lines = grid(_summary(status))
    if status.targets:
        lines += ["", *_target_lines(status)]
    if status.publications:
        lines += ["", *_gallery_lines(status)]
    if errors:
        lines += ["", click.style("error log", bold=True), *_log_lines(errors)]
    echo_lines(lines)


def print_jobs(statuses: list[JobStatus]) -> None:
    """One line per job: its phase percentages and its error count."""
    columns = ["job", "image", "os", "state", "upload", "tier-1", "copies", "images"]
    galleries = any(s.gallery_pct is not None for s in statuses)
    rows: list[Row] = []
    for s in statuses:
        images = "images" in s.job.publish  # a gallery-only job has no target to count
        rows.append(
            [
                s.job.id,
                s.job.image_name,
                s.job.os_type.value,
                s.state.value,
                f"{s.upload_pct}%",
                *(f"{p}%" if images else "-" for p in (s.tier1_pct, s.copies_pct, s.images_pct)),
                *([f"{s.gallery_pct}%" if s.gallery_pct is not None else "-"] if galleries else []),
                str(s.error_count),
            ]
        )
    echo_lines(table([*columns, *(["gallery"] if galleries else []), "errors"], rows))


def _log_lines(records: list[LogRecord]) -> list[str]:
    style = {"warning": "yellow", "error": "red"}
    lines = []
    for r in records:
        level = click.style(f"{r.level:<7}", fg=style.get(r.level))
        where = f" [{r.target}]" if r.target else ""
        lines.append(f"{_when(r.ts)} {level} {r.step:<7}{where} {r.message}")
    return lines


def print_logs(records: list[LogRecord]) -> None:
    echo_lines(_log_lines(records))


@contextmanager
def live_progress(console: Console) -> Iterator[Callable[[JobStatus], None]]:
    """A live display of the four phase bars and the grid; show a status by calling what it gives."""
    # Rich's live display and progress bars load only for a command that shows progress.
    from rich.console import Group
    from rich.live import Live
    from rich.progress import BarColumn, Progress, TextColumn

    progress = Progress(
        TextColumn("{task.description:<14}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f} %"),
        console=console,
    )
    bars = {attr: progress.add_task(label, total=100) for label, attr in PHASES}
    with Live(console=console, refresh_per_second=8, transient=False) as live:

        def show(status: JobStatus) -> None:
            for attr, bar in bars.items():
                progress.update(bar, completed=getattr(status, attr))
            live.update(Group(progress, status_grid(status)))

        yield show
