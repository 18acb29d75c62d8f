"""Every bad input: one sentence on stderr, exit status 2, no traceback, and nothing written."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result

Cli = Callable[..., Result]
SUBMIT = ("--os-type", "linux")


def assert_bad_input(result: Result, *needles: str) -> str:
    """Exit 2, one 'Error: ...' sentence on stderr, no traceback; returns the message."""
    assert result.exit_code == 2, (result.output, result.exception)
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    assert lines[0].endswith("."), lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def assert_usage_error(result: Result, *needles: str) -> None:
    """Click's own usage error: exit 2, 'Error: ...' on stderr, no traceback."""
    assert result.exit_code == 2, (result.output, result.exception)
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    assert "Error: " in result.stderr
    for needle in needles:
        assert needle in result.stderr


def blob_files(config_path: Path) -> list[Path]:
    root = config_path.parent / "state" / "blobs"
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def assert_nothing_written(cli: Cli, config_path: Path) -> None:
    jobs = cli(config_path, "jobs", "--json")
    assert jobs.exit_code == 0, jobs.output
    assert json.loads(jobs.stdout) == []
    assert blob_files(config_path) == []


# submit


@pytest.mark.parametrize("command", ["submit", "run"])
def test_submit_missing_file(config_path: Path, tmp_path: Path, cli: Cli, command: str) -> None:
    result = cli(config_path, command, str(tmp_path / "absent.vhd"), "--image-name", "g", *SUBMIT)
    assert_bad_input(result, "absent.vhd", "does not exist")
    assert_nothing_written(cli, config_path)


@pytest.mark.parametrize(
    ("size", "needle"),
    [
        pytest.param(0, "is empty (0 bytes)", id="empty"),
        pytest.param(1, "is 1 bytes", id="one-byte"),
        pytest.param(512 * 1024 + 1, "not a whole number of 512-byte sectors", id="one-over"),
        pytest.param(511, "not a whole number of 512-byte sectors", id="one-under"),
    ],
)
def test_submit_file_size_not_a_multiple_of_512(
    config_path: Path, tmp_path: Path, cli: Cli, size: int, needle: str
) -> None:
    disk = tmp_path / "odd.vhd"
    with disk.open("wb") as file:
        file.truncate(size)
    result = cli(config_path, "submit", str(disk), "--image-name", "golden", *SUBMIT)
    assert_bad_input(result, needle)
    assert_nothing_written(cli, config_path)


def test_submit_a_directory(config_path: Path, tmp_path: Path, cli: Cli) -> None:
    result = cli(config_path, "submit", str(tmp_path), "--image-name", "golden", *SUBMIT)
    assert_bad_input(result, "is a directory")
    assert_nothing_written(cli, config_path)


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("-bad", id="leading-dash"),
        pytest.param(".bad", id="leading-dot"),
        pytest.param("bad.", id="trailing-dot"),
        pytest.param("bad-", id="trailing-dash"),
        pytest.param("a" * 81, id="81-chars"),
        pytest.param("bad name", id="space"),
        pytest.param("bad/name", id="slash"),
        pytest.param("", id="empty"),
    ],
)
def test_submit_invalid_image_name(
    config_path: Path, sample_disk: Path, cli: Cli, name: str
) -> None:
    result = cli(config_path, "submit", str(sample_disk), "--image-name", name, *SUBMIT)
    assert_bad_input(result, "Image name", repr(name))
    assert_nothing_written(cli, config_path)


@pytest.mark.parametrize("name", ["goldén", "g\u0661", "golden\n"])
def test_submit_non_ascii_or_newline_image_name(
    write_config: Callable[..., Path], sample_disk: Path, cli: Cli, name: str
) -> None:
    path = write_config(naming={"image_template": "{image}"})
    result = cli(path, "submit", str(sample_disk), "--image-name", name, *SUBMIT)
    assert_bad_input(result, "Image name")


def test_image_names_at_the_limits_are_accepted(
    write_config: Callable[..., Path], sample_disk: Path, cli: Cli
) -> None:
    # The counterpart of the refusals above: 80 characters, a one-character name, '_' last.
    path = write_config(naming={"image_template": "{image}"})
    for name in ("a" * 80, "a", "golden_"):
        result = cli(path, "submit", str(sample_disk), "--image-name", name, *SUBMIT)
        assert result.exit_code == 0, result.output
    assert len(json.loads(cli(path, "jobs", "--json").stdout)) == 3


@pytest.mark.parametrize(
    ("template", "image"),
    [
        pytest.param("{image} {region}", "golden", id="space-from-template"),
        pytest.param("{image}.{region}", "a" * 75, id="too-long-after-template"),
        pytest.param("{image}.{subscription}.", "golden", id="trailing-dot-from-template"),
        pytest.param("{image}/{target}", "golden", id="slash-from-target-name"),
    ],
)
def test_submit_image_name_made_invalid_by_the_template(
    write_config: Callable[..., Path], sample_disk: Path, cli: Cli, template: str, image: str
) -> None:
    path = write_config(naming={"image_template": template})
    result = cli(path, "submit", str(sample_disk), "--image-name", image, *SUBMIT)
    assert_bad_input(result, "Image name")
    assert_nothing_written(cli, path)


def test_submit_unknown_os_type_is_a_usage_error(
    config_path: Path, sample_disk: Path, cli: Cli
) -> None:
    result = cli(config_path, "submit", str(sample_disk), "--image-name", "g", "--os-type", "bsd")
    assert_usage_error(result, "--os-type")
    assert_nothing_written(cli, config_path)


# unknown job ids


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["status"], id="status"),
        pytest.param(["status", "--json"], id="status-json"),
        pytest.param(["logs"], id="logs"),
        pytest.param(["logs", "--level", "error"], id="logs-level"),
        pytest.param(["retry"], id="retry"),
        pytest.param(["retry", "--wait"], id="retry-wait"),
        pytest.param(["cleanup"], id="cleanup"),
    ],
)
def test_unknown_job_id(config_path: Path, cli: Cli, args: list[str]) -> None:
    command, *flags = args
    result = cli(config_path, command, "20990101-000000-dead", *flags)
    assert_bad_input(result, "'20990101-000000-dead'", "does not exist")
    assert result.stdout == ""
    assert_nothing_written(cli, config_path)


def test_worker_with_unknown_job_id(config_path: Path, cli: Cli) -> None:
    assert_bad_input(cli(config_path, "worker", "--job", "20990101-000000-dead"), "does not exist")


# malformed config

COMMANDS = [
    pytest.param(["config", "check"], id="config-check"),
    pytest.param(["targets", "list"], id="targets-list"),
    pytest.param(["targets", "disable", "--region", "eastus"], id="targets-disable"),
    pytest.param(["jobs", "--json"], id="jobs"),
    pytest.param(["status", "some-job"], id="status"),
    pytest.param(["logs", "some-job"], id="logs"),
    pytest.param(["retry", "some-job"], id="retry"),
    pytest.param(["cleanup", "some-job"], id="cleanup"),
    pytest.param(["worker"], id="worker"),
    pytest.param(["submit", "DISK", "--image-name", "golden", *SUBMIT], id="submit"),
    pytest.param(["run", "DISK", "--image-name", "golden", *SUBMIT], id="run"),
]


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        pytest.param("[staging\nregion = 'westeurope'\n", "not valid TOML", id="invalid-toml"),
        pytest.param(
            "[staging]\nsubscription = 's'\nregion = 'westeurope'\naccount = 'UPPER'\n",
            "'staging.account'",
            id="invalid-account",
        ),
        pytest.param(
            "[staging]\nsubscription = 's'\nregion = 'westeurope'\naccount = 'imgdstaging'\n"
            "[concurrency]\ncopies = 'many'\n",
            "'concurrency.copies'",
            id="invalid-type",
        ),
        pytest.param(
            "[staging]\nsubscription = 's'\nregion = 'westeurope'\naccount = 'imgdstaging'\n"
            "colour = 'red'\n",
            "'staging.colour'",
            id="unknown-key",
        ),
    ],
)
@pytest.mark.parametrize("args", COMMANDS)
def test_malformed_config(
    tmp_path: Path, sample_disk: Path, cli: Cli, args: list[str], content: str, needle: str
) -> None:
    path = tmp_path / "imagedist.toml"
    path.write_text(
        content + "[local]\nroot = 'state'\n" * ("[local]" not in content), encoding="utf-8"
    )
    argv = [str(sample_disk) if a == "DISK" else a for a in args]
    assert_bad_input(cli(path, *argv), needle)
    assert not (tmp_path / "state").exists()  # the backend was never opened
    assert not (tmp_path / ".imagedist").exists()


def test_missing_config(tmp_path: Path, cli: Cli) -> None:
    assert_bad_input(cli(tmp_path / "nope.toml", "jobs"), "nope.toml", "does not exist")


# flags on a real job


@pytest.fixture
def job_id(config_path: Path, sample_disk: Path, cli: Cli) -> str:
    """A submitted (and uploaded) job that no worker has touched."""
    result = cli(config_path, "submit", str(sample_disk), "--image-name", "golden", *SUBMIT)
    assert result.exit_code == 0, result.output
    assert blob_files(config_path)  # the upload wrote the tier-0 blob where we look for blobs
    return result.stdout.strip()


def test_logs_unknown_level_is_click_usage_error(config_path: Path, job_id: str, cli: Cli) -> None:
    result = cli(config_path, "logs", job_id, "--level", "nonsense")
    assert_usage_error(result, "--level", "nonsense")
    assert result.stdout == ""


def test_logs_unknown_step_is_click_usage_error(config_path: Path, job_id: str, cli: Cli) -> None:
    assert_usage_error(cli(config_path, "logs", job_id, "--step", "upload2"), "--step")


def test_retry_unknown_target_changes_nothing(config_path: Path, job_id: str, cli: Cli) -> None:
    before = json.loads(cli(config_path, "status", job_id, "--json").stdout)
    result = cli(
        config_path,
        "retry",
        job_id,
        "--target",
        "sub-alpha/westeurope",
        "--target",
        "sub-zulu/nowhere",
    )
    assert_bad_input(result, "'sub-zulu/nowhere'")
    after = json.loads(cli(config_path, "status", job_id, "--json").stdout)
    assert after["targets"] == before["targets"]
    logs = json.loads(cli(config_path, "logs", job_id, "--step", "job", "--json").stdout)
    assert not any("retry" in line["message"] for line in logs)


def test_retry_unknown_phase_is_click_usage_error(config_path: Path, job_id: str, cli: Cli) -> None:
    assert_usage_error(cli(config_path, "retry", job_id, "--phase", "upload"), "--phase")


def test_bad_input_leaves_the_real_job_alone(
    config_path: Path, job_id: str, sample_disk: Path, cli: Cli
) -> None:
    blobs = blob_files(config_path)
    result = cli(config_path, "submit", str(sample_disk), "--image-name", "-bad", *SUBMIT)
    assert_bad_input(result)
    assert [j["job"] for j in json.loads(cli(config_path, "jobs", "--json").stdout)] == [job_id]
    assert blob_files(config_path) == blobs
