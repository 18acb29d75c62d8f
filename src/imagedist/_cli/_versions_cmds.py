"""`imagedist versions`: an image's Compute Gallery versions, retired and rolled back (issue 11)."""

from __future__ import annotations

import datetime
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from .._domain.gallery import ImageVersion
from ._common import State, echo_json, friendly_errors, json_option, pass_state, run_with_app

__all__ = ["versions"]


@click.group()
def versions() -> None:
    """An image's versions in the Compute Gallery: list, retire, roll back."""


@versions.command("list")
@click.argument("image")
@json_option
@pass_state
@friendly_errors
def list_(state: State, image: str, as_json: bool) -> None:
    """IMAGE's versions, newest first: regions, replicas, end of life, in "latest" or not."""
    found = run_with_app(state, lambda app: app.versions(image))
    if as_json:
        echo_json([version_to_dict(v) for v in found])
        return
    table = Table("version", "state", "regions", "replicas", "end of life", "latest", "created")
    for v in found:
        table.add_row(
            v.name,
            v.provisioning_state,
            _regions(v),
            str(sum(r.replicas for r in v.target_regions)),
            v.end_of_life or "-",
            "excluded" if v.exclude_from_latest else "yes",
            _when(v.published_at) or "-",
        )
    Console().print(table)


@versions.command("retire")
@click.argument("image")
@click.option("--keep", type=click.IntRange(min=1), required=True, help="Versions to keep.")
@json_option
@pass_state
@friendly_errors
def retire(state: State, image: str, keep: int, as_json: bool) -> None:
    """Retire IMAGE's versions but the KEEP newest: end of life today and out of "latest";
    versions retired for [gallery.versions] retire_grace_days are deleted, never the only
    version complete in a region."""
    result = run_with_app(state, lambda app: app.retire_versions(image, keep))
    if as_json:
        echo_json(
            {
                "kept": result.kept,
                "retired": result.retired,
                "deleted": result.deleted,
                "spared": result.spared,
            }
        )
        return
    click.echo(f"kept {', '.join(result.kept) or 'none'}")
    click.echo(f"retired {', '.join(result.retired) or 'none'}")
    click.echo(f"deleted {', '.join(result.deleted) or 'none'}")
    for name, why in result.spared.items():
        click.echo(f"kept {name}: {why}")


@versions.command("rollback")
@click.argument("image")
@json_option
@pass_state
@friendly_errors
def rollback(state: State, image: str, as_json: bool) -> None:
    """Take IMAGE's newest version out of "latest": VMs made from "latest" get the previous."""
    newest, previous = run_with_app(state, lambda app: app.roll_back(image))
    if as_json:
        echo_json({"excluded": newest.name, "latest": previous.name})
        return
    click.echo(f"version {newest.name} excluded from latest; latest is now {previous.name}")


def version_to_dict(v: ImageVersion) -> dict[str, Any]:
    return {
        "version": v.name,
        "state": v.provisioning_state,
        "regions": {
            r.region: {"state": r.state.value, "progress": r.progress, "details": r.details}
            for r in v.replication
        },
        "target_regions": [
            {"name": r.name, "replicas": r.replicas, "storage_account_type": r.storage_account_type}
            for r in v.target_regions
        ],
        "end_of_life": v.end_of_life or None,
        "exclude_from_latest": v.exclude_from_latest,
        "created": _when(v.published_at),
    }


def _regions(v: ImageVersion) -> str:
    return ", ".join(f"{r.region} {r.state.value.lower()}" for r in v.replication) or "-"


def _when(ts: float) -> str | None:
    if not ts:
        return None
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).isoformat(timespec="seconds")
