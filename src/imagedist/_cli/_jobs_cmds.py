"""The commands that change jobs: submit, worker, run, retry, cleanup (the reading ones are in
`_read_cmds`)."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .._api import Imagedist, JobStatus
from .._domain import (
    FailedPhase,
    HyperVGeneration,
    LogRecord,
    OsType,
    SourceRow,
    SourceState,
)
from ._common import (
    EXIT_FAILED,
    State,
    echo_json,
    friendly_errors,
    json_option,
    pass_state,
    run_with_app,
)
from ._read_cmds import exit_for, report, status_and_errors
from ._render import live_progress, print_status

__all__ = ["cleanup", "retry", "run", "submit", "worker"]

if TYPE_CHECKING:
    from rich.console import Console


@functools.cache
def _console() -> Console:
    """The terminal's console for the live progress display; rich loads only for it (issue 13)."""
    from rich.console import Console

    return Console()


def _exit_if_failed(tier0: SourceRow) -> None:
    """An upload that failed its checks fails the command (the job is registered, failed)."""
    if tier0.state is SourceState.FAILED:
        click.echo(f"Error: the upload failed: {tier0.error.rstrip('.')}.", err=True)
        sys.exit(EXIT_FAILED)


@dataclass(frozen=True)
class SubmitArgs:
    """What `submit` and `run` are given."""

    file: Path | None
    image_name: str
    os_type: str
    description: str
    convert: bool
    disk: str | None = None
    hyper_v_generation: str | None = None
    publish: tuple[str, ...] = ()
    version: str | None = None


def _submit_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """FILE or --from-disk, --image-name, --os-type, --description, --no-convert: ``args``."""

    @functools.wraps(fn)
    def gather(
        *a: Any,
        file: Path | None,
        image_name: str,
        os_type: str,
        description: str,
        no_convert: bool,
        from_disk: str | None,
        hyper_v_generation: str | None,
        publish: tuple[str, ...],
        version: str | None,
        **kw: Any,
    ) -> Any:
        if (file is None) == (from_disk is None):
            raise click.UsageError("Give either FILE or --from-disk, not both and not neither.")
        args = SubmitArgs(
            file,
            image_name,
            os_type,
            description,
            not no_convert,
            from_disk,
            hyper_v_generation,
            publish,
            version,
        )
        return fn(*a, args=args, **kw)

    gather = click.option(
        "--version",
        metavar="MAJOR.MINOR.PATCH",
        help="The gallery version to publish (default: the next patch after the highest).",
    )(gather)
    gather = click.option(
        "--target",
        "publish",
        multiple=True,
        type=click.Choice(["images", "gallery"]),
        help="Where the image goes: managed images, a Compute Gallery version, or both"
        " (repeat the option). Default: [publish] to.",
    )(gather)
    gather = click.option(
        "--hyper-v-generation",
        type=click.Choice([g.value for g in HyperVGeneration]),
        help="The VM generation the images boot as (V2: UEFI). Default: [azure]"
        " hyper_v_generation, else V2 for a disk that boots only with UEFI, else V1.",
    )(gather)
    gather = click.option(
        "--from-disk",
        metavar="DISK_ID",
        help="Take the image from this Azure managed disk (its resource id) instead of FILE.",
    )(gather)
    gather = click.option(
        "--no-convert",
        is_flag=True,
        help="Refuse an image Azure cannot boot as it is, instead of converting it.",
    )(gather)
    gather = click.option("--description", default="", help="Free text stored with the job.")(
        gather
    )
    gather = click.option(
        "--os-type",
        type=click.Choice([o.value for o in OsType]),
        required=True,
        help="The image's operating system.",
    )(gather)
    gather = click.option(
        "--image-name",
        required=True,
        help="Base name of the images; each target's name comes from the template.",
    )(gather)
    return click.argument("file", type=click.Path(path_type=Path), required=False)(gather)


def _generation(args: SubmitArgs) -> HyperVGeneration | None:
    return HyperVGeneration(args.hyper_v_generation) if args.hyper_v_generation else None


async def _submit_and_upload(app: Imagedist, args: SubmitArgs, quiet: bool) -> str:
    if args.disk is not None:
        job = await app.submit_disk(
            args.disk,
            args.image_name,
            OsType(args.os_type),
            args.description,
            hyper_v_generation=_generation(args),
            publish=args.publish or None,
            version=args.version,
        )
        if not quiet:
            click.echo(f"job {job.id} submitted; a worker copies the disk server-side", err=True)
        return job.id
    assert args.file is not None
    job = await app.submit(
        args.file,
        args.image_name,
        OsType(args.os_type),
        args.description,
        convert=args.convert,
        hyper_v_generation=_generation(args),
        publish=args.publish or None,
        version=args.version,
    )
    if quiet:
        _exit_if_failed(await app.upload(job.id))
        return job.id
    # Rich's progress bars load only for an upload (not for `status` or `jobs`).
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    err = Console(stderr=True)
    err.print(f"job {job.id} submitted; uploading a disk of {job.size_bytes} bytes")
    columns = (
        TextColumn("upload"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err) as progress:
        bar = progress.add_task("upload", total=None)

        def advance(done: int, total: int) -> None:
            progress.update(bar, completed=done, total=total)

        uploaded = await app.upload(job.id, advance)
    _exit_if_failed(uploaded)
    return job.id


async def _run_showing_progress(app: Imagedist, job_id: str, *, quiet: bool) -> None:
    """Work on the job in this process, with a live display unless ``quiet``."""
    if quiet:
        await app.run(job_id)
        return

    with live_progress(_console()) as show:
        await app.run(job_id, show)


@click.command()
@_submit_options
@click.option("--wait", is_flag=True, help="Wait until the job ends (a worker must be running).")
@json_option
@pass_state
@friendly_errors
def submit(state: State, args: SubmitArgs, wait: bool, as_json: bool) -> None:
    """Validate FILE, register a job and upload it to the staging account.

    A raw disk, a dynamic VHD, qcow2, VMDK or VHDX is converted to a fixed VHD on
    the way (unless --no-convert). Only non-zero pages are sent, several at a
    time, with the disk's MD5; an interrupted upload resumes. A running
    `imagedist worker` then distributes it. Prints the job id.
    """

    async def body(app: Imagedist) -> None:
        job_id = await _submit_and_upload(app, args, as_json)
        if not wait:
            echo_json({"job": job_id}) if as_json else click.echo(job_id)
            return
        await app.wait(job_id)
        report(*await status_and_errors(app, job_id), as_json)

    run_with_app(state, body)


@click.command()
@click.option("--forever", is_flag=True, help="Keep polling for new jobs instead of exiting.")
@click.option("--job", "job_ids", multiple=True, help="Work only on this job (repeatable).")
@pass_state
@friendly_errors
def worker(state: State, forever: bool, job_ids: tuple[str, ...]) -> None:
    """Work on every active job until no work is left (or forever).

    Safe to run several at once and to kill at any moment: a restarted worker
    resumes where the last one stopped.
    """
    run_with_app(state, lambda app: app.work(job_ids, forever=forever))


@click.command()
@_submit_options
@json_option
@pass_state
@friendly_errors
def run(state: State, args: SubmitArgs, as_json: bool) -> None:
    """Submit FILE (as `submit` does), distribute it with a worker in this process, and show
    live progress."""

    async def body(app: Imagedist) -> None:
        job_id = await _submit_and_upload(app, args, as_json)
        await _run_showing_progress(app, job_id, quiet=as_json)
        report(*await status_and_errors(app, job_id), as_json)

    run_with_app(state, body)


@click.command()
@click.argument("job_id")
@click.option("--failed-only", is_flag=True, help="Only failed targets, not skipped ones.")
@click.option("--target", "targets", multiple=True, help="Only this target (repeatable).")
@click.option(
    "--phase",
    type=click.Choice([p.value for p in FailedPhase]),
    help="Restart failed targets at this phase.",
)
@click.option("--wait", is_flag=True, help="Work on the job in this process until it ends.")
@json_option
@pass_state
@friendly_errors
def retry(
    state: State,
    job_id: str,
    failed_only: bool,
    targets: tuple[str, ...],
    phase: str | None,
    wait: bool,
    as_json: bool,
) -> None:
    """Put a job's unfinished targets back to work; finished ones are never touched.

    Failed targets resume in the phase they failed in; skipped targets that are
    now enabled start. A worker (or --wait) then does the work.
    """

    async def body(app: Imagedist) -> tuple[list[str], tuple[JobStatus, list[LogRecord]] | None]:
        reset = await app.retry(
            job_id,
            failed_only=failed_only,
            targets=targets,
            phase=FailedPhase(phase) if phase else None,
        )
        if not wait:
            return reset, None

        if reset:
            await app.work([job_id])
        return reset, await status_and_errors(app, job_id)

    reset, final = run_with_app(state, body)
    if as_json:
        echo_json({"job": job_id, "retried": reset})
    else:
        click.echo(
            f"{len(reset)} targets put back to work" + (": " + ", ".join(reset) if reset else "")
        )
    if final is not None:
        if not as_json:
            print_status(*final)
        exit_for(final[0])


@click.command()
@click.argument("job_id")
@click.option(
    "--force",
    is_flag=True,
    help="Delete even while enabled targets are not done; they fail, and `retry` copies"
    " (and if need be uploads) them again.",
)
@json_option
@pass_state
@friendly_errors
def cleanup(state: State, job_id: str, force: bool, as_json: bool) -> None:
    """Delete a job's intermediate blobs now (images are kept).

    Refuses while an enabled target still needs a blob, unless --force.
    """
    count = run_with_app(state, lambda app: app.cleanup(job_id, force=force))
    if as_json:
        echo_json({"job": job_id, "deleted_blobs": count})
    else:
        click.echo(f"deleted {count} blobs")
