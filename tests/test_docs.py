"""The README never drifts from the CLI (as sqlite-utils' ``tests/test_docs.py`` keeps its docs).

Every command the README names exists and has help, every option its command table shows is one
the command takes, every command the CLI has is in the README, its TOML examples pass
``imagedist config check``, and its ``plan`` example runs and prints the lines it shows.
"""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from imagedist._cli import cli

README = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")

#: The command table: one ``| `imagedist ...` | what it does |`` row per command.
TABLE_ROWS = re.findall(r"^\| (`imagedist .+?`) \| .+ \|$", README, flags=re.MULTILINE)


def _command_paths(cell: str) -> list[tuple[str, ...]]:
    """The command names in a table cell: ``imagedist vhd inspect FILE`` → ``("vhd", "inspect")``.

    A cell may join several commands of one group: `` `imagedist targets list` / `enable` ``.
    """
    words = cell.replace("`", " ").split()
    paths: list[tuple[str, ...]] = []
    group: tuple[str, ...] = ()
    for i, word in enumerate(words):
        if word != "imagedist" and not (word.isalpha() and word.islower()):
            continue
        if word == "imagedist":
            group, path = (), words[i + 1 : i + 3]
            found = _resolve(tuple(w for w in path if w.isalpha() and w.islower()))
            if found:
                paths.append(found)
                group = found[:-1]
        elif group and words[i - 1] == "/":
            found = _resolve((*group, word))
            if found:
                paths.append(found)
    return paths


def _resolve(words: tuple[str, ...]) -> tuple[str, ...]:
    """The longest prefix of ``words`` that names a command of the CLI (``()`` if none)."""
    command: click.Command = cli
    path: list[str] = []
    for word in words:
        if not isinstance(command, click.Group) or word not in command.commands:
            break
        command = command.commands[word]
        path.append(word)
    return tuple(path)


def _command(path: tuple[str, ...]) -> click.Command:
    command: click.Command = cli
    for name in path:
        assert isinstance(command, click.Group)
        command = command.commands[name]
    return command


def _every_command(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found: list[tuple[str, ...]] = []
    for name, command in sorted(group.commands.items()):
        found.append((*prefix, name))
        if isinstance(command, click.Group):
            found += _every_command(command, (*prefix, name))
    return found


TABLE = {path: row for row in TABLE_ROWS for path in _command_paths(row)}


def test_the_command_table_was_read() -> None:
    assert len(TABLE_ROWS) >= 10
    assert ("run",) in TABLE and ("vhd", "convert") in TABLE and ("targets", "disable") in TABLE


@pytest.mark.parametrize("path", sorted(TABLE), ids=" ".join)
def test_each_command_in_the_table_has_help(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(cli, [*path, "--help"])

    assert result.exit_code == 0, result.output
    assert _command(path).get_short_help_str().strip(), f"`imagedist {' '.join(path)}` has no help"


@pytest.mark.parametrize("row", TABLE_ROWS, ids=lambda row: " ".join(_command_paths(row)[0]))
def test_each_option_in_the_table_is_taken_by_its_command(row: str) -> None:
    """A row may name several commands of one group with their options after them: each option
    must be taken by one of them."""
    paths = _command_paths(row)
    helps = "".join(CliRunner().invoke(cli, [*path, "--help"]).output for path in paths)

    assert paths, f"no command of the CLI in {row!r}"
    for option in re.findall(r"--[a-z][a-z-]*", row):
        assert option in helps, f"{option} in {row!r} is not an option of its command"


@pytest.mark.parametrize("path", _every_command(cli), ids=" ".join)
def test_every_command_has_help_and_is_in_the_readme(path: tuple[str, ...]) -> None:
    assert _command(path).get_short_help_str().strip(), f"`imagedist {' '.join(path)}` has no help"
    if isinstance(_command(path), click.Group):
        return  # a group is documented through its commands
    spelled = "imagedist " + " ".join(path)
    in_table = path in TABLE
    assert in_table or spelled in README, f"the README does not mention `{spelled}`"


TOML_BLOCKS = re.findall(r"^ *```toml\n(.*?)^ *```", README, flags=re.MULTILINE | re.DOTALL)


@pytest.mark.parametrize("index", range(len(TOML_BLOCKS)), ids=lambda i: f"toml-{i}")
def test_each_toml_example_passes_config_check(tmp_path: Path, index: int) -> None:
    lines = TOML_BLOCKS[index].splitlines()
    indent = min(len(line) - len(line.lstrip()) for line in lines if line.strip())
    config = tmp_path / "imagedist.toml"
    config.write_text("\n".join(line[indent:] for line in lines) + "\n", encoding="utf-8")

    result = CliRunner().invoke(cli, ["-c", str(config), "config", "check"])

    assert result.exit_code == 0, result.output


def test_the_plan_example_runs_and_prints_what_the_readme_shows(tmp_path: Path) -> None:
    block = re.search(r"^```\n\$ (imagedist plan .*?)\n(.*?)^```", README, re.MULTILINE | re.DOTALL)
    assert block, "the README has no `$ imagedist plan` example"
    command, shown = block.group(1), block.group(2)
    config = tmp_path / "imagedist.toml"
    config.write_text(TOML_BLOCKS[0], encoding="utf-8")

    result = CliRunner().invoke(cli, ["-c", str(config), *command.split()[1:]])

    assert result.exit_code == 0, result.output
    for line in shown.splitlines():
        label = re.split(r"\s{2,}", line.strip())[0]
        if label != "...":
            assert label in result.output, f"plan no longer prints {label!r}"
