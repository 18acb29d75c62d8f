"""`imagedist targets`: generate the fleet, list it, switch targets on and off."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from .._config import generated_account_name, parse_config
from .._domain.regions import REGIONS, unknown_region
from .._exceptions import InvalidInput
from .._files import read_regular_file
from ._common import State, echo_json, friendly_errors, json_option, run_with_app

__all__ = ["targets"]

pass_state = click.make_pass_decorator(State)
REGION_LIST = re.compile(r"^[a-z][a-z0-9]{1,39}(,[a-z][a-z0-9]{1,39})*$")


@click.group()
def targets() -> None:
    """The fleet: every (subscription, region) target."""


def _read_subscriptions(path: Path) -> list[str]:
    try:
        # A FIFO or a device is refused, not read: the read would block or never end.
        lines = read_regular_file(path).decode("utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        raise InvalidInput(
            f"Subscriptions file {str(path)!r} cannot be read; give a file with one"
            " subscription id per line."
        ) from None
    subs = [line.split("#")[0].strip() for line in lines]
    subs = [s for s in subs if s]
    if not subs:
        raise InvalidInput(f"Subscriptions file {str(path)!r} lists no subscription.")
    if len(set(subs)) != len(subs):
        raise InvalidInput(f"Subscriptions file {str(path)!r} lists a subscription twice.")
    return subs


def _render_fleet(subscriptions: list[str], regions: list[str], prefix: str) -> str:
    blocks = []
    for sub in subscriptions:
        for region in regions:
            account = generated_account_name(prefix, sub, region)
            # json.dumps gives a valid TOML basic string for any id, quotes and backslashes included.
            blocks.append(
                f"[[targets]]\nsubscription = {json.dumps(sub)}\nregion = {json.dumps(region)}\n"
                f"account = {json.dumps(account)}\n"
            )
    return "\n".join(blocks)


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
    region_list = regions.split(",")
    for region in region_list:
        if region not in REGIONS:
            raise InvalidInput(f"In --regions, {unknown_region(region)}.")
    if len(set(region_list)) != len(region_list):
        raise InvalidInput(f"Regions {regions!r} list a region twice; give each once.")
    if not re.fullmatch(r"[a-z0-9]{1,11}", prefix):
        raise InvalidInput(f"Prefix {prefix!r} must be 1-11 lowercase letters and digits.")
    text = _render_fleet(_read_subscriptions(subs_file), region_list, prefix)
    if not append:
        click.echo(text, nl=False)
        return
    path = state.config_path
    current = path.read_text(encoding="utf-8") if path.exists() else ""
    merged = current.rstrip("\n") + "\n\n" + text
    try:
        parse_config(tomllib.loads(merged), base_dir=path.parent)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInput(f"Config {str(path)!r} is not valid TOML: {exc}.") from None
    path.write_text(merged, encoding="utf-8")
    click.echo(f"appended {text.count('[[targets]]')} targets to {str(path)!r}")


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
