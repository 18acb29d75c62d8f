"""`imagedist targets`: generate the fleet, list it, switch targets on and off."""

from __future__ import annotations

import re
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from .._api import Imagedist
from .._exceptions import InvalidInput
from ._common import State, echo_json, friendly_errors, json_option, pass_state, run_with_app

__all__ = ["targets"]

REGION_LIST = re.compile(r"^[a-z][a-z0-9]{1,39}(,[a-z][a-z0-9]{1,39})*$")


@click.group()
def targets() -> None:
    """The fleet: every (subscription, region) target."""


@targets.command("generate")
@click.option(
    "--subscriptions",
    "subs_file",
    type=click.Path(path_type=Path),
    required=True,
    help="A file with one subscription id per line ('#' starts a comment).",
)
@click.option("--regions", required=True, help="Comma-separated regions, e.g. westeurope,eastus.")
@click.option(
    "--prefix",
    default="imgd",
    show_default=True,
    help="Storage account name prefix (1-11 lowercase letters and digits).",
)
@click.option(
    "--append",
    is_flag=True,
    help="Append the targets to the config file (after validating the result).",
)
@pass_state
@friendly_errors
def generate(state: State, subs_file: Path, regions: str, prefix: str, append: bool) -> None:
    """Write the fleet: one target per subscription × region, with stable account names.

    Prints TOML `[[targets]]` entries, or appends them to the config with --append.
    """
    if not REGION_LIST.match(regions):
        raise InvalidInput(
            f"Regions {regions!r} must be comma-separated Azure region names such as"
            " 'westeurope,eastus'."
        )
    text = Imagedist.generate_targets(subs_file, regions.split(","), prefix)
    if not append:
        click.echo(text, nl=False)
        return
    count = Imagedist.append_targets(state.config_path, text)
    click.echo(f"appended {count} targets to {str(state.config_path)!r}")


@targets.command("list")
@json_option
@pass_state
@friendly_errors
def list_(state: State, as_json: bool) -> None:
    """List the fleet with each target's current switch."""
    fleet = run_with_app(state, lambda app: app.targets())
    if as_json:
        echo_json([{**t.__dict__, "enabled": on} for t, on in fleet])
        return
    table = Table("target", "subscription", "region", "account", "enabled")
    for t, on in fleet:
        table.add_row(
            t.name, t.subscription, t.region, t.account, "[green]yes[/]" if on else "[yellow]no[/]"
        )
    Console().print(table)


def _switch_command(enabled: bool) -> click.Command:
    verb = "enable" if enabled else "disable"

    @click.option("--region", "regions", multiple=True, help="Every target in this region.")
    @click.option(
        "--subscription", "subscriptions", multiple=True, help="Every target in this subscription."
    )
    @click.option("--name", "names", multiple=True, help="This target.")
    @json_option
    @pass_state
    @friendly_errors
    def switch(
        state: State,
        regions: tuple[str, ...],
        subscriptions: tuple[str, ...],
        names: tuple[str, ...],
        as_json: bool,
    ) -> None:
        chosen = run_with_app(
            state,
            lambda app: app.set_enabled(
                enabled, regions=regions, subscriptions=subscriptions, names=names
            ),
        )
        if as_json:
            echo_json({"enabled": enabled, "targets": chosen})
        else:
            click.echo(f"{verb}d {len(chosen)} targets: {', '.join(chosen)}")

    switch.__doc__ = (
        f"{verb.capitalize()} targets by region, subscription or name, for running and future jobs."
    )
    return click.command(verb)(switch)


targets.add_command(_switch_command(True))
targets.add_command(_switch_command(False))
