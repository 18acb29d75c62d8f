"""`setup`, `teardown` and `check`: provisioning and pre-flight."""

from __future__ import annotations

import sys
from collections.abc import Callable

import click

from .._api import Change, Imagedist
from .._domain.changes import ChangeAction
from .._redact import redact
from ._common import (
    EXIT_FAILED,
    State,
    echo_json,
    friendly_errors,
    json_option,
    pass_state,
    run_with_app,
)

__all__ = ["check", "setup", "teardown"]


def _reporter(as_json: bool) -> Callable[[Change], None]:
    def report(change: Change) -> None:
        if not as_json:
            click.echo(f"done: {change.describe()}")

    return report


def _progress(as_json: bool) -> Callable[[int, int, Change], None] | None:
    """A progress line on stderr per change (changes finish in any order: they run at once);
    none with --json, whose stdout is the one JSON document."""
    if as_json:
        return None

    def show(done: int, total: int, change: Change) -> None:
        click.echo(f"[{done}/{total}] {change.describe()}", err=True)

    return show


def _as_dict(change: Change) -> dict[str, str]:
    return {**change.__dict__, "description": change.describe()}


@click.command()
@click.option("--dry-run", is_flag=True, help="Print the plan; change nothing.")
@json_option
@pass_state
@friendly_errors
def setup(state: State, dry_run: bool, as_json: bool) -> None:
    """Provision everything the config declares; idempotent.

    Resource groups, storage accounts (name availability checked), containers,
    the state tables. A second run changes nothing and says so. To onboard a new
    subscription or region, edit the config and run setup again.
    """

    changes = run_with_app(
        state,
        lambda app: app.setup(
            dry_run=dry_run, on_change=_reporter(as_json), on_progress=_progress(as_json)
        ),
    )
    if as_json:
        echo_json({"dry_run": dry_run, "changes": [_as_dict(c) for c in changes]})
    elif not changes:
        click.echo("Everything the config declares exists; nothing to change.")
    elif dry_run:
        click.echo(f"setup would make {len(changes)} changes:")
        for change in changes:
            click.echo(f"  {change.describe()}")
    else:
        click.echo(f"setup made {len(changes)} changes.")


@click.command()
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--dry-run", is_flag=True, help="Print what would be removed; change nothing.")
@click.option(
    "--keep-images", is_flag=True, help="Keep the images resource groups and their images."
)
@json_option
@pass_state
@friendly_errors
def teardown(state: State, yes: bool, dry_run: bool, keep_images: bool, as_json: bool) -> None:
    """Remove what setup made: the storage accounts and resource groups it tagged
    (imagedist-managed=true), images included unless --keep-images. Anything else is left, and
    listed with the reason."""

    planned = run_with_app(state, lambda app: app.teardown(dry_run=True, keep_images=keep_images))
    deletes = [c for c in planned if c.action is ChangeAction.DELETE]
    if not deletes:
        if as_json:
            echo_json({"dry_run": dry_run, "changes": [_as_dict(c) for c in planned]})
        else:
            _show_kept(planned)
            click.echo("Nothing that setup made is left to delete.")
        return
    if dry_run or not (yes or _confirm(planned)):
        if as_json:
            echo_json({"dry_run": True, "changes": [_as_dict(c) for c in planned]})
        else:
            click.echo("\n".join(f"  would {c.describe()}" for c in deletes))
            _show_kept(planned)
        return

    run_with_app(
        state,
        lambda app: app.teardown(
            changes=planned, on_change=_reporter(as_json), on_progress=_progress(as_json)
        ),
    )
    if as_json:
        echo_json({"dry_run": False, "changes": [_as_dict(c) for c in planned]})
    else:
        _show_kept(planned)


def _show_kept(changes: list[Change]) -> None:
    for change in changes:
        if change.action is ChangeAction.KEEP:
            click.echo(f"  {change.describe()}")


def _confirm(changes: list[Change]) -> bool:
    click.echo("teardown will:")
    for change in changes:
        click.echo(f"  {change.describe()}")  # what it keeps too, with why
    if not sys.stdin.isatty():
        click.echo("Not a terminal: pass --yes to confirm.", err=True)
        sys.exit(EXIT_FAILED)
    return click.confirm("Proceed?", default=False)


@click.command()
@json_option
@pass_state
@friendly_errors
def check(state: State, as_json: bool) -> None:
    """Pre-flight before any bytes move: credentials, resource providers, regions, resource
    groups, accounts, containers, data access (a probe blob in every account; the missing role
    named) and the state store; one line per problem. Exits 1 if any."""
    problems = run_with_app(state, Imagedist.check)
    # A problem may quote the platform's error: redacted here too, as the terminal is an edge.
    found = [{**p.__dict__, "message": redact(p.message)} for p in problems]
    if as_json:
        echo_json({"ok": not problems, "problems": found})
    elif not problems:
        click.echo("All checks passed.")
    else:
        for problem in found:
            click.echo(f"{problem['subject']}: {problem['message']}")
    if problems:
        sys.exit(EXIT_FAILED)
