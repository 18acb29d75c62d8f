"""The commands that only read jobs: jobs, status, logs; and the status report that `run`,
`submit --wait`, `retry --wait` and `demo` end with. Apart from the commands that change jobs
(`_jobs_cmds`), so that a reading command builds neither those commands nor their values
(issue 13)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from .._domain import JobState, LogFilter, LogRecord
from ._common import (
    EXIT_FAILED,
    State,
    echo_json,
    friendly_errors,
    json_option,
    pass_state,
    run_with_reader,
)
from ._render import log_to_dict, print_jobs, print_logs, print_status, status_to_dict

if TYPE_CHECKING:
    from .._api import Imagedist, JobReader, JobStatus

__all__ = ["exit_for", "jobs", "logs", "report", "status", "status_and_errors"]


def exit_for(status: JobStatus) -> None:
    """Exit 1 if the job failed."""
    if status.state is JobState.FAILED:
        sys.exit(EXIT_FAILED)


async def status_and_errors(
    app: Imagedist | JobReader, job_id: str
) -> tuple[JobStatus, list[LogRecord]]:
    """The job's status and its error lines."""
    return await app.status(job_id), await app.logs(job_id, LogFilter(level="error"))


def report(status: JobStatus, errors: list[LogRecord], as_json: bool) -> None:
    """Print the status as JSON or text, then exit 1 if the job failed."""
    if as_json:
        echo_json(status_to_dict(status, errors))
    else:
        print_status(status, errors)
    exit_for(status)


@click.command()
@json_option
@pass_state
@friendly_errors
def jobs(state: State, as_json: bool) -> None:
    """List the jobs, newest first, with their phase percentages."""
    statuses = run_with_reader(state, lambda reader: reader.jobs())
    if as_json:
        echo_json(
            [{k: v for k, v in status_to_dict(s).items() if k != "targets"} for s in statuses]
        )
        return
    print_jobs(statuses)


@click.command()
@click.argument("job_id")
@json_option
@pass_state
@friendly_errors
def status(state: State, job_id: str, as_json: bool) -> None:
    """Show a job: the four phase percentages, errors, and the target grid.

    Exits 1 if the job failed.
    """
    report(*run_with_reader(state, lambda reader: status_and_errors(reader, job_id)), as_json)


@click.command()
@click.argument("job_id")
@click.option(
    "--step",
    type=click.Choice(["submit", "upload", "tier1", "copy", "image", "cleanup", "job"]),
    help="Only this step.",
)
@click.option(
    "--level", type=click.Choice(["info", "warning", "error"]), help="Only this level and above."
)
@click.option("--target", help="Only this target (e.g. 'sub-a/westeurope').")
@json_option
@pass_state
@friendly_errors
def logs(
    state: State,
    job_id: str,
    step: str | None,
    level: str | None,
    target: str | None,
    as_json: bool,
) -> None:
    """Show a job's log."""
    where = LogFilter(step=step, level=level, target=target)
    records = run_with_reader(state, lambda reader: reader.logs(job_id, where))
    if as_json:
        echo_json([log_to_dict(r) for r in records])
    else:
        print_logs(records)
