"""`imagedist config check`: validate the config and show the resolved fleet."""

from __future__ import annotations

import click
from rich.console import Console
from rich.table import Table

from ._common import State, echo_json, friendly_errors, json_option, pass_state

__all__ = ["config"]


@click.group()
def config() -> None:
    """Inspect the config file."""


@config.command("check")
@json_option
@pass_state
@friendly_errors
def check(state: State, as_json: bool) -> None:
    """Validate the config and print the resolved fleet, or the error with its key path."""
    cfg = state.config
    fleet = cfg.fleet_targets()
    if as_json:
        echo_json(
            {
                "backend": cfg.backend,
                "staging": cfg.staging.model_dump(),
                "targets": [t.__dict__ for t in fleet],
                "naming": cfg.naming.model_dump(),
                "fanout": cfg.fanout.model_dump(),
                "concurrency": cfg.concurrency.model_dump(),
            }
        )
        return
    console = Console()
    console.print(
        f"config {str(state.config_path)!r} is valid: backend {cfg.backend!r}, "
        f"staging account {cfg.staging.account!r}, {len(fleet)} targets"
    )
    table = Table(
        "target",
        "subscription",
        "region",
        "account",
        "container",
        "images resource group",
        "enabled",
    )
    for t in fleet:
        table.add_row(
            t.name,
            t.subscription,
            t.region,
            t.account,
            t.container,
            t.resource_group,
            "yes" if t.enabled else "no",
        )
    console.print(table)
