"""Writing the fleet: one ``[[targets]]`` entry per subscription × region, with stable names."""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Sequence
from pathlib import Path

from ._config import generated_account_name, parse_config
from ._domain.regions import REGIONS, unknown_region
from ._exceptions import InvalidInput
from ._files import read_regular_file

__all__ = ["append_targets", "generate_targets"]

PREFIX = re.compile(r"[a-z0-9]{1,11}")


def generate_targets(subscriptions_file: Path, regions: Sequence[str], prefix: str) -> str:
    """TOML ``[[targets]]`` entries for every subscription in the file times every region.

    :raises InvalidInput: if a region is unknown or given twice, the prefix is not 1-11
        lowercase letters and digits, or the file cannot be read, lists no subscription or
        one twice.
    """
    _check_regions(regions)
    if not PREFIX.fullmatch(prefix):
        raise InvalidInput(f"Prefix {prefix!r} must be 1-11 lowercase letters and digits.")
    return _render(_read_subscriptions(subscriptions_file), regions, prefix)


def append_targets(config_path: Path, text: str) -> int:
    """Append ``text`` (from :func:`generate_targets`) to the config, if the result is valid.

    :return: how many targets were appended.
    :raises InvalidInput: if the result is not valid TOML (nothing written).
    :raises ConfigError: if the result is not a valid config (nothing written).
    """
    current = config_path.read_text(encoding="utf-8") if config_path.exists() else ""
    merged = current.rstrip("\n") + "\n\n" + text
    try:
        parse_config(tomllib.loads(merged), base_dir=config_path.parent)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInput(f"Config {str(config_path)!r} is not valid TOML: {exc}.") from None
    config_path.write_text(merged, encoding="utf-8")
    return text.count("[[targets]]")


def _check_regions(regions: Sequence[str]) -> None:
    for region in regions:
        if region not in REGIONS:
            raise InvalidInput(f"In --regions, {unknown_region(region)}.")

    if len(set(regions)) != len(regions):
        raise InvalidInput(f"Regions {','.join(regions)!r} list a region twice; give each once.")


def _read_subscriptions(path: Path) -> list[str]:
    try:
        # A FIFO or a device is refused, not read: the read would block or never end.
        lines = read_regular_file(path).decode("utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        raise InvalidInput(
            f"Subscriptions file {str(path)!r} cannot be read; give a file with one"
            " subscription id per line."
        ) from None
    subs = [s for s in (line.split("#")[0].strip() for line in lines) if s]
    if not subs:
        raise InvalidInput(f"Subscriptions file {str(path)!r} lists no subscription.")
    if len(set(subs)) != len(subs):
        raise InvalidInput(f"Subscriptions file {str(path)!r} lists a subscription twice.")
    return subs


def _render(subscriptions: list[str], regions: Sequence[str], prefix: str) -> str:
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
