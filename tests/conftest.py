"""Shared fixtures: a fast local-backend config, a small sparse disk, and a CLI runner."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

# One Azurite and one ARM test server for the whole session, whichever tests ask first.
from armserver.plugin import arm, arm_server  # noqa: F401
from azurite import azurite_server  # noqa: F401
from imagedist._cli import cli as imagedist_cli

MiB = 1024 * 1024

STAGING_ACCOUNT = "imgdstaging"
SUBSCRIPTIONS = ["sub-alpha", "sub-bravo"]
REGIONS = ["westeurope", "eastus", "southeastasia"]

DEFAULT_SECTIONS: dict[str, Any] = {
    "backend": "local",
    "staging": {"subscription": "sub-staging", "region": "westeurope", "account": STAGING_ACCOUNT},
    "fleet": {"subscriptions": SUBSCRIPTIONS, "regions": REGIONS},
    "fanout": {"tier1_copies": 1, "max_reads_per_source": 4},
    "concurrency": {"poll_interval_seconds": 0.05, "lease_seconds": 3},
    "local": {"root": "state", "image_create_seconds": 0.1, "copy_bandwidth_mib_s": 0},
}


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def _table(header: str, body: dict[str, Any]) -> str:
    return header + "\n" + "".join(f"{k} = {_toml_value(v)}\n" for k, v in body.items())


def config_text(**sections: Any) -> str:
    """TOML for the default config with ``sections`` merged in.

    A dict updates that table key by key, a list of dicts (``targets``) becomes an array of
    tables, any other value is a top-level key, and ``None`` drops the section or key.
    """
    merged: dict[str, Any] = {
        k: dict(v) if isinstance(v, dict) else v for k, v in DEFAULT_SECTIONS.items()
    }
    for key, value in sections.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key].update(value)
            merged[key] = {k: v for k, v in merged[key].items() if v is not None}
        else:
            merged[key] = value
    scalars = [
        f"{k} = {_toml_value(v)}\n"
        for k, v in merged.items()
        if not isinstance(v, dict | list) or (isinstance(v, list) and not v)
    ]
    blocks = ["".join(scalars)]
    for key, value in merged.items():
        if isinstance(value, dict):
            blocks.append(_table(f"[{key}]", value))
        elif isinstance(value, list) and value:
            blocks += [_table(f"[[{key}]]", item) for item in value]
    return "\n".join(blocks)


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[..., Path]:
    """``write_config(**sections)`` writes ``imagedist.toml`` (see :func:`config_text`)."""

    def write(name: str = "imagedist.toml", **sections: Any) -> Path:
        path = tmp_path / name
        path.write_text(config_text(**sections), encoding="utf-8")
        return path

    return write


@pytest.fixture
def config_path(write_config: Callable[..., Path]) -> Path:
    """The default config: 2 subscriptions x 3 regions on the local backend, fast settings."""
    return write_config()


@pytest.fixture
def sample_disk(tmp_path: Path) -> Path:
    """An 8 MiB sparse disk with data in three places; its size is a multiple of 512."""
    path = tmp_path / "golden.vhd"
    with path.open("wb") as file:
        file.truncate(8 * MiB)
        for at_mib in (0, 3, 7):
            file.seek(at_mib * MiB)
            file.write(os.urandom(MiB // 2))
    return path


@pytest.fixture
def cli() -> Callable[..., Result]:
    """``cli(config, *args)`` runs ``imagedist -c config args...`` in-process."""
    runner = CliRunner()

    def invoke(config: Path, *args: str, **kwargs: Any) -> Result:
        """``kwargs`` go to :meth:`CliRunner.invoke` (``input``, ``env``...)."""
        return runner.invoke(imagedist_cli, ["-c", str(config), *args], **kwargs)

    return invoke
