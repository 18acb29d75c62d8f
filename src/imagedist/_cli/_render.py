"""Turning library results into tables, grids, JSON and a live progress display."""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from .._api import JobStatus
from .._domain import LogRecord, TargetState
from .._domain.gallery import PublicationRow

# Rich loads with the first table or line printed: `--json` prints neither (issue 13).
if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

__all__ = [
    "live_progress",
    "log_to_dict",
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


def gallery_grid(status: JobStatus) -> Table:
    """Gallery versions down (the central one, then one per subscription in per-subscription
    mode), target regions across, each cell the region's replication state and percent."""
    from rich.table import Table

    regions = sorted({name for p in status.publications for name in p.regions})
    grid = Table(title="gallery versions", show_lines=False)
    grid.add_column("gallery")
    for region in regions:
        grid.add_column(region, justify="center")
    for row in status.publications:
        cells = []
        for region in regions:
            seen = row.regions.get(region)
            cells.append("" if seen is None else _replication_cell(seen.state, seen.progress))
        grid.add_row(f"{row.key}: {row.gallery.name} {row.version_name}", *cells)
    return grid


def _replication_cell(state: str, progress: int) -> str:
    style = {"completed": "green", "failed": "bold red", "replicating": "cyan"}.get(state, "dim")
    shown = f"{state} {progress}%" if state == "replicating" else state
    return f"[{style}]{shown}[/]"


def log_to_dict(record: LogRecord) -> dict[str, Any]:
    return {
        "ts": _when(record.ts),
        "level": record.level,
        "step": record.step,
        "target": record.target,
        "message": record.message,
    }


def status_grid(status: JobStatus) -> Table:
    """Subscriptions down, regions across, each cell the target's state."""
    from rich.table import Table

    regions = sorted({t.region for t in status.targets})
    subscriptions = sorted({t.subscription for t in status.targets})
    cells = {(t.subscription, t.region): t.state for t in status.targets}
    grid = Table(title="targets", show_lines=False)
    grid.add_column("subscription")
    for region in regions:
        grid.add_column(region, justify="center")
    for subscription in subscriptions:
        row = []
        for region in regions:
            state = cells.get((subscription, region))
            row.append("" if state is None else f"[{STATE_STYLE[state]}]{state.value}[/]")
        grid.add_row(subscription, *row)
    return grid


def _summary(status: JobStatus) -> Table:
    from rich.table import Table

    table = Table.grid(padding=(0, 2))
    job = status.job
    table.add_row(
        "job", f"{job.id}  ({job.image_name}, {job.os_type.value}, {job.hyper_v_generation.value})"
    )
    for label, attr in PHASES:
        if label != "upload" and "images" not in job.publish:
            continue  # a gallery-only job has no target: those phases say nothing
        table.add_row(label, f"{getattr(status, attr)} %")
    if status.gallery_pct is not None:
        table.add_row("gallery replication", f"{status.gallery_pct} %")
    table.add_row("errors", str(status.error_count))
    completed = "[green]yes[/]" if status.completed else f"no ({status.state.value})"
    table.add_row("completed", completed)
    return table


def print_status(console: Console, status: JobStatus, errors: list[LogRecord]) -> None:
    console.print(_summary(status))
    if status.targets:
        console.print(status_grid(status))
    if status.publications:
        console.print(gallery_grid(status))
    if errors:
        console.print("[bold]error log[/]")
        print_logs(console, errors)


def print_logs(console: Console, records: list[LogRecord]) -> None:
    from rich.text import Text

    style = {"warning": "yellow", "error": "red"}
    for r in records:
        line = Text(f"{_when(r.ts)} ")
        line.append(f"{r.level:<7}", style=style.get(r.level, ""))
        line.append(f" {r.step:<7}" + (f" [{r.target}]" if r.target else "") + f" {r.message}")
        console.print(line, highlight=False, soft_wrap=True)


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
