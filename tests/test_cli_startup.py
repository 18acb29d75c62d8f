"""The command line starts light (issue 13): `imagedist --help` and `imagedist status` import only
what they use. Asserted on the modules a fresh interpreter has loaded, never on wall time; and
`status`, `jobs` and `logs`, which skip validating a config validated before, answer a good
config and a bad one exactly as the full validation does."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from imagedist._cli import COMMANDS, cli

# Run the CLI in a new interpreter as a user's `imagedist ARGS` does (after importing every
# command if asked), then write the names of every module loaded to the file named first
# (stdout is the command's own).
PROBE = """
import json, sys
out, load_all, args = sys.argv[1], sys.argv[2] == "all", sys.argv[3:]
from imagedist._cli import cli
if load_all:
    list(cli.commands.values())
try:
    cli.main(args=args, prog_name="imagedist")
except SystemExit as exc:
    code = exc.code
else:
    code = 0
with open(out, "w") as f:
    json.dump({"exit": code, "modules": sorted(sys.modules)}, f)
"""

# Heavy libraries no command loads before it needs them, and what only some commands need.
NEVER_FOR_HELP = (
    "pydantic",
    "pydantic_core",
    "rich",
    "asyncio",
    "sqlite3",
    "azure",
    "starlette",
    "jinja2",
    "uvicorn",
    "hypothesis",
    "imagedist._api",
    "imagedist._config",
    "imagedist._engine",
    "imagedist._backends",
    "imagedist._plan",
    "imagedist._vhd",
    "imagedist._web",
    "imagedist._redact",
)
NEVER_FOR_STATUS = (
    # Reading jobs runs in this thread, without an event loop or a worker thread.
    "asyncio",
    "concurrent.futures",
    "azure",
    "starlette",
    "jinja2",
    "uvicorn",
    "hypothesis",
    "imagedist._backends.sim",
    "imagedist._backends.azure",
    "imagedist._plan",
    "imagedist._web",
    "imagedist._demo",
    "imagedist._disks",
    "imagedist._fleet",
    "imagedist._engine._setup",
    "imagedist._engine._versions",
    # A job's gallery rows (`_domain.publications`) without the gallery's other values.
    "imagedist._domain.gallery",
    # The state store port alone (`_state_store`), not the other ports' values in abc.
    "imagedist.abc",
    # Nor the domain's values a status does not hold: the fleet's targets, setup's changes.
    "imagedist._domain.targets",
    "imagedist._domain.changes",
    # A config validated before is not validated again: where its state store is, is remembered.
    "pydantic",
    "pydantic_core",
    "imagedist._config",
    "imagedist._config_gallery",
    # Reading jobs opens the state store alone, not the other ports of the local backend.
    "imagedist._backends.local.blobs",
    "imagedist._backends.local.images",
    "imagedist._backends.local.gallery",
    "imagedist._backends.local.provisioner",
    "imagedist._engine._context",
    # Reading a status needs the engine's context and status only, not what changes a job.
    "imagedist._engine._jobs",
    "imagedist._engine._worker",
    "imagedist._engine._publish",
    "imagedist._engine._cleanup",
    "imagedist._engine._gallery",
    "imagedist._engine._tier0",
    "imagedist._engine._tier1",
    "imagedist._engine._upload",
    "imagedist._vhd._convert",
    "imagedist._vhd._qemu",
    "imagedist._vhd._inspect",
    "imagedist._vhd._prepare",
)


def _run(tmp_path: Path, *args: str, load_all: bool = False) -> tuple[int, set[str], str, str]:
    """Run ``imagedist ARGS`` in a new interpreter: its exit status, modules, stdout and
    stderr."""
    out = tmp_path / "modules.json"
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(out), "all" if load_all else "lazy", *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert out.exists(), done.stderr
    report = json.loads(out.read_text(encoding="utf-8"))
    return int(report["exit"] or 0), set(report["modules"]), done.stdout, done.stderr


def _loaded(tmp_path: Path, *args: str, load_all: bool = False) -> tuple[int, set[str], str]:
    """Run ``imagedist ARGS`` in a new interpreter: its exit status, modules and stdout."""
    code, modules, stdout, _ = _run(tmp_path, *args, load_all=load_all)
    return code, modules, stdout


def _offending(modules: set[str], heavy: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in heavy))


def _command_modules(modules: set[str]) -> set[str]:
    return {
        m for m in modules if m.startswith("imagedist._cli._") and m != "imagedist._cli._common"
    }


def test_help_lists_every_command_and_imports_none_of_them(tmp_path: Path) -> None:
    code, modules, stdout = _loaded(tmp_path, "--help")

    assert code == 0
    assert _offending(modules, NEVER_FOR_HELP) == []
    assert _command_modules(modules) == set()
    _, every_module, listed_by_commands = _loaded(tmp_path, "--help", load_all=True)
    assert _command_modules(every_module) >= {f"imagedist._cli.{m}" for m, _ in COMMANDS.values()}
    assert stdout == listed_by_commands


def test_a_command_imports_its_own_module_only(tmp_path: Path) -> None:
    code, modules, stdout = _loaded(tmp_path, "vhd", "--help")

    assert code == 0
    assert "convert" in stdout
    assert _command_modules(modules) == {"imagedist._cli._vhd_cmds"}


@pytest.fixture
def finished_job(
    config_path: Path, sample_disk: Path, cli: Callable[..., Result]
) -> tuple[Path, str]:
    """A local-backend config and the id of a job distributed to the end."""
    result = cli(config_path, "run", str(sample_disk), "--image-name", "img", "--os-type", "linux")
    assert result.exit_code == 0, result.output
    listed = cli(config_path, "jobs", "--json")
    return config_path, str(json.loads(listed.stdout)[0]["job"])


@pytest.mark.parametrize(
    "command",
    [["status", "JOB"], ["status", "JOB", "--json"], ["jobs"], ["logs", "JOB"]],
    ids=" ".join,
)
def test_status_imports_only_what_status_needs(
    tmp_path: Path, finished_job: tuple[Path, str], command: list[str]
) -> None:
    config, job = finished_job
    args = ["-c", str(config), *(job if a == "JOB" else a for a in command)]

    code, modules, stdout = _loaded(tmp_path, *args)

    assert code == 0
    assert job in stdout
    assert _offending(modules, NEVER_FOR_STATUS) == []
    assert _offending(modules, ("rich",)) == []  # plain aligned text: rich is for live progress
    assert _command_modules(modules) == {
        "imagedist._cli._read_cmds",
        "imagedist._cli._render",
        "imagedist._cli._text",
    }


READING = [["status", "JOB"], ["status", "JOB", "--json"], ["jobs"], ["jobs", "--json"]]
READING += [["logs", "JOB"], ["logs", "JOB", "--json", "--step", "upload"]]


def _remembered(cache_home: Path) -> list[Path]:
    return sorted(cache_home.rglob("*.json"))


@pytest.mark.parametrize("command", READING, ids=" ".join)
def test_reading_a_remembered_config_answers_as_validating_it(
    tmp_path: Path, cache_home: Path, finished_job: tuple[Path, str], command: list[str]
) -> None:
    config, job = finished_job
    args = ["-c", str(config), *(job if a == "JOB" else a for a in command)]
    for record in _remembered(cache_home):
        record.unlink()

    validated = _run(tmp_path, *args)
    remembered = _run(tmp_path, *args)

    assert "pydantic" in validated[1]
    assert "pydantic" not in remembered[1]
    assert (remembered[0], remembered[2], remembered[3]) == (validated[0], *validated[2:])
    assert validated[0] == 0
    assert job in validated[2]


@pytest.mark.parametrize("command", [["status", "JOB"], ["logs", "JOB"]], ids=" ".join)
def test_an_unknown_job_is_the_same_error_whether_the_config_is_remembered_or_not(
    tmp_path: Path, cache_home: Path, finished_job: tuple[Path, str], command: list[str]
) -> None:
    config, _ = finished_job
    args = ["-c", str(config), *("no-such-job" if a == "JOB" else a for a in command)]
    remembered = _run(tmp_path, *args)
    for record in _remembered(cache_home):
        record.unlink()

    validated = _run(tmp_path, *args)

    assert "pydantic" not in remembered[1]
    assert remembered[0] == validated[0] == 2
    assert remembered[3] == validated[3]
    assert "no-such-job" in validated[3]
    assert validated[3].startswith("Error: ") and validated[3].count("\n") == 1


# A remembered config edited into a bad one: each line is put after the config's own lines.
BAD_EDITS = {
    "unknown key": 'colour = "blue"\n',
    "bad name": '[naming]\nimages_resource_group = "bad group!"\n',
    "bad region": '[[targets]]\nsubscription = "s"\nregion = "atlantis"\naccount = "imgdx"\n',
    "not TOML": "[staging\n",
    "wrong type": '[upload]\nconcurrency = "8"\n',
}


@pytest.mark.parametrize("edit", list(BAD_EDITS), ids=str)
@pytest.mark.parametrize("command", [["status", "JOB"], ["jobs", "--json"], ["logs", "JOB"]])
def test_a_remembered_config_edited_into_a_bad_one_is_refused_as_every_command_refuses_it(
    tmp_path: Path, finished_job: tuple[Path, str], edit: str, command: list[str]
) -> None:
    config, job = finished_job
    assert _run(tmp_path, "-c", str(config), "jobs")[0] == 0  # remembered
    with config.open("a", encoding="utf-8") as file:
        file.write(BAD_EDITS[edit])

    code, _, stdout, stderr = _run(
        tmp_path, "-c", str(config), *(job if a == "JOB" else a for a in command)
    )
    # `targets list` validates the whole config as every command but the readers always does.
    full = _run(tmp_path, "-c", str(config), "targets", "list")

    assert (code, stdout, stderr) == (2, "", full[3])
    assert full[0] == 2
    assert stderr.startswith("Error: Invalid config") or "TOML" in stderr


def test_a_cache_folder_that_cannot_be_made_means_validating_every_time(
    tmp_path: Path, finished_job: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config, job = finished_job
    monkeypatch.setenv("XDG_CACHE_HOME", str(config / "cache"))  # under a file

    for _ in range(2):
        code, modules, stdout, stderr = _run(tmp_path, "-c", str(config), "status", job)

        assert (code, stderr) == (0, "")
        assert job in stdout
        assert "pydantic" in modules


def test_a_missing_config_is_the_same_error_for_reading_as_for_every_command(
    tmp_path: Path,
) -> None:
    missing = str(tmp_path / "nowhere.toml")

    reading = _run(tmp_path, "-c", missing, "status", "JOB")
    full = _run(tmp_path, "-c", missing, "targets", "list")

    assert reading[0] == full[0] == 2
    assert reading[3] == full[3]
    assert "does not exist" in reading[3]


def test_the_listing_is_each_commands_own_help() -> None:
    for name, (module, help_text) in COMMANDS.items():
        command = cli.commands[name]  # imports it
        assert command.callback is not None
        assert command.callback.__module__ == f"imagedist._cli.{module}"
        first_paragraph = (command.help or "").split("\n\n")[0]
        assert help_text.split() == first_paragraph.split(), name
    assert set(COMMANDS) == set(cli.commands)


def test_an_unknown_command_is_refused_with_the_closest_name() -> None:
    result = CliRunner().invoke(cli, ["stauts"])

    assert result.exit_code == 2
    assert "No such command 'stauts'" in result.stderr
    assert "'status'" in result.stderr


def test_converting_a_disk_loads_neither_the_engine_nor_the_config(
    tmp_path: Path, sample_disk: Path
) -> None:
    """`vhd convert` needs no config: its start is not the config's and the engine's."""
    out = tmp_path / "out.vhd"

    code, modules, stdout = _loaded(tmp_path, "vhd", "convert", str(sample_disk), str(out))

    assert code == 0
    assert str(out) in stdout
    heavy = ("pydantic", "asyncio", "sqlite3", "rich", "imagedist._config", "imagedist._engine")
    assert _offending(modules, (*heavy, "imagedist._backends.local")) == []
