"""The public surface: `imagedist.__all__`, and help text on every CLI command."""

from __future__ import annotations

import importlib

import click
import pytest
from click.testing import CliRunner

import imagedist
from imagedist._cli import cli


def test_all_names_are_importable() -> None:
    module = importlib.import_module("imagedist")
    for name in imagedist.__all__:
        assert getattr(module, name, None) is not None, name
    namespace: dict[str, object] = {}
    exec("from imagedist import *", namespace)
    assert set(imagedist.__all__) <= set(namespace)


def test_all_has_no_duplicates() -> None:
    assert len(set(imagedist.__all__)) == len(imagedist.__all__)


def test_all_is_sorted() -> None:
    assert imagedist.__all__ == sorted(imagedist.__all__)


def test_exceptions_are_public_and_share_one_base() -> None:
    for name in imagedist.__all__:
        value = getattr(imagedist, name)
        if isinstance(value, type) and issubclass(value, Exception):
            assert issubclass(value, imagedist.ImagedistError), name


def _commands(group: click.Group, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    for name, command in sorted(group.commands.items()):
        found.append((*path, name))
        if isinstance(command, click.Group):
            found += _commands(command, (*path, name))
    return found


COMMANDS = [(), *_commands(cli)]


def test_the_walk_finds_the_subcommands() -> None:
    assert ("targets", "generate") in COMMANDS
    assert ("config", "check") in COMMANDS
    assert ("submit",) in COMMANDS
    assert len(COMMANDS) >= 15


def _command(path: tuple[str, ...]) -> click.Command:
    command: click.Command = cli
    for name in path:
        assert isinstance(command, click.Group)
        command = command.commands[name]
    return command


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "imagedist")
def test_every_command_has_help(path: tuple[str, ...]) -> None:
    command = _command(path)
    assert (command.help or "").strip(), f"{path} has no help text"
    assert (command.get_short_help_str() or "").strip()
    for param in command.params:
        if isinstance(param, click.Option) and not param.hidden:
            assert (param.help or "").strip(), f"{path}: option {param.opts} has no help"

    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert result.exception is None
    assert "Usage: " in result.stdout
    first_line = command.help.strip().splitlines()[0]  # type: ignore[union-attr]
    assert first_line.split()[0] in result.stdout
