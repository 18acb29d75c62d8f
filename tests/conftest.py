"""Shared fixtures: a fast local-backend config, a small sparse disk, and a CLI runner."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from hypothesis import settings

# One Azurite and one ARM test server for the whole session, whichever tests ask first.
from armserver.plugin import arm, arm_server  # noqa: F401
from azurite import azurite_server  # noqa: F401
from imagedist._cli import cli as imagedist_cli

from helpers import config_text

MiB = 1024 * 1024

# No per-example deadline: on a loaded 2-core machine one example can take ten times its usual
# time, and a test must fail on what it checks, not on the machine's load.
settings.register_profile("imagedist", deadline=None)
settings.load_profile("imagedist")


@pytest.fixture(autouse=True)
def cache_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test's own cache folder (where the configs `status` validated are remembered), so
    that no test reads or writes the user's, nor one test another's; subprocesses inherit it."""
    folder = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("XDG_CACHE_HOME", str(folder))
    return folder


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[..., Path]:
    """``write_config(**sections)`` writes ``imagedist.toml`` (see :func:`helpers.config_text`)."""

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
