"""Every bad input: one sentence on stderr, exit status 2, no traceback, and nothing written."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
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
    path = write_config(
        naming={"image_template": "{image}"},
        fleet={"subscriptions": ["sub-alpha"], "regions": ["westeurope"]},
    )
    result = cli(path, "submit", str(sample_disk), "--image-name", name, *SUBMIT)
    assert_bad_input(result, "Image name")


def test_image_names_at_the_limits_are_accepted(
    write_config: Callable[..., Path], sample_disk: Path, cli: Cli
) -> None:
    # The counterpart of the refusals above: 80 characters, a one-character name, '_' last.
    path = write_config(
        naming={"image_template": "{image}"},
        fleet={"subscriptions": ["sub-alpha"], "regions": ["westeurope"]},
    )
    for name in ("a" * 80, "a", "golden_"):
        result = cli(path, "submit", str(sample_disk), "--image-name", name, *SUBMIT)
        assert result.exit_code == 0, result.output
    assert len(json.loads(cli(path, "jobs", "--json").stdout)) == 3


@pytest.mark.parametrize(
    ("template", "image"),
    [
        pytest.param("{image} {region}", "golden", id="space-from-template"),
        pytest.param("{image}.{region}", "a" * 75, id="too-long-after-template"),
        pytest.param("{image}.{region}.{subscription}.", "golden", id="trailing-dot-from-template"),
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


# Every bad input of issue 8: one sentence on stderr, exit status 2, no traceback, no hang, and
# no file or folder more in the test's folder afterwards than before.


def tree(folder: Path) -> set[str]:
    return {str(path.relative_to(folder)) for path in folder.rglob("*")}


def assert_refused(folder: Path, run: Callable[[], Result], *needles: str) -> str:
    """``run()`` is refused as bad input and leaves ``folder`` as it found it."""
    before = tree(folder)
    message = assert_bad_input(run(), *needles)
    assert tree(folder) == before, "the refused command created files"
    return message


def run_process(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """imagedist in its own process, killed after a minute: an input that blocks it (a FIFO)
    fails the test instead of hanging the suite."""
    return subprocess.run(
        [sys.executable, "-m", "imagedist", *args],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def assert_process_refused(folder: Path, *args: str, needles: tuple[str, ...] = ()) -> str:
    before = tree(folder)
    done = run_process(folder, *args)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stdout + done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("Error: ") and lines[0].endswith("."), lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert tree(folder) == before, "the refused command created files"
    return lines[0]


def submit(cli: Cli, config: Path, disk: Path, command: str = "submit") -> Callable[[], Result]:
    return lambda: cli(config, command, str(disk), "--image-name", "x", *SUBMIT)


# numbers in the config: no booleans, no strings, nothing infinite, nothing out of bounds

NUMBERS = [
    ("concurrency", "copies"),
    ("concurrency", "images"),
    ("concurrency", "poll_interval_seconds"),
    ("concurrency", "lease_seconds"),
    ("fanout", "tier1_copies"),
    ("fanout", "region_clones"),
    ("fanout", "ranged_copies"),
    ("fanout", "max_reads_per_source"),
    ("upload", "concurrency"),
    ("local", "copy_bandwidth_mib_s"),
    ("local", "image_create_seconds"),
]


@pytest.mark.parametrize(("section", "key"), NUMBERS, ids=[".".join(n) for n in NUMBERS])
@pytest.mark.parametrize("value", [True, False, "8"], ids=["true", "false", "string"])
def test_a_number_given_as_a_boolean_or_a_string_is_refused(
    write_config: Callable[..., Path],
    sample_disk: Path,
    cli: Cli,
    tmp_path: Path,
    section: str,
    key: str,
    value: object,
) -> None:
    config = write_config(**{section: {key: value}})
    shown = "true" if value is True else "false" if value is False else "'8'"
    assert_refused(tmp_path, submit(cli, config, sample_disk), f"'{section}.{key}'", shown)
    assert_refused(tmp_path, lambda: cli(config, "config", "check"), f"'{section}.{key}'")


def test_an_unknown_copy_method_is_refused_naming_the_choices(
    write_config: Callable[..., Path], cli: Cli, tmp_path: Path
) -> None:
    config = write_config(fanout={"copy_method": "fast"})
    line = assert_refused(tmp_path, lambda: cli(config, "config", "check"), "'fanout.copy_method'")
    assert '"auto", "async" or "ranged"' in line and "'fast'" in line


FLOATS = [key for key in NUMBERS if key[1].endswith(("seconds", "mib_s"))]


@pytest.mark.parametrize(("section", "key"), FLOATS, ids=[".".join(n) for n in FLOATS])
@pytest.mark.parametrize(
    "value",
    [math.inf, -math.inf, math.nan, -1.0, 1e12],
    ids=["inf", "-inf", "nan", "negative", "huge"],
)
def test_a_non_finite_negative_or_huge_number_is_refused(
    write_config: Callable[..., Path],
    sample_disk: Path,
    cli: Cli,
    tmp_path: Path,
    section: str,
    key: str,
    value: float,
) -> None:
    # inf in poll_interval_seconds or image_create_seconds made jobs wait forever.
    config = write_config(**{section: {key: value}})
    run = submit(cli, config, sample_disk)
    assert_refused(tmp_path, run, f"'{section}.{key}'", f"not {value!r}")


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("concurrency", "copies", 0),
        ("concurrency", "copies", 10**9),
        ("concurrency", "poll_interval_seconds", 0.0),
        ("concurrency", "lease_seconds", 10**7),
        ("upload", "concurrency", 0),
    ],
)
def test_a_number_out_of_bounds_is_refused(
    write_config: Callable[..., Path],
    sample_disk: Path,
    cli: Cli,
    tmp_path: Path,
    section: str,
    key: str,
    value: float,
) -> None:
    config = write_config(**{section: {key: value}})
    assert_refused(tmp_path, submit(cli, config, sample_disk), f"'{section}.{key}'", str(value))


# the fleet


@pytest.mark.parametrize("command", ["submit", "run", "config"])
def test_a_config_without_targets_is_refused(
    write_config: Callable[..., Path], sample_disk: Path, cli: Cli, tmp_path: Path, command: str
) -> None:
    # It used to upload, then "complete" a job of 0 targets.
    config = write_config(fleet=None)
    run = submit(cli, config, sample_disk, command)
    if command == "config":
        run = lambda: cli(config, "config", "check")  # noqa: E731
    assert_refused(tmp_path, run, "no targets", "[fleet]")


@pytest.mark.parametrize(
    ("sections", "key_path", "typo", "meant"),
    [
        (
            {"fleet": {"regions": ["westeurop", "eastus"]}},
            "fleet.regions",
            "westeurop",
            "westeurope",
        ),
        ({"staging": {"region": "westeurop"}}, "staging.region", "westeurop", "westeurope"),
        (
            {"targets": [{"subscription": "s", "region": "swedencentrl", "account": "acct01"}]},
            "targets.0.region",
            "swedencentrl",
            "swedencentral",
        ),
        ({"fleet": {"regions": ["West Europe"]}}, "fleet.regions", "West Europe", "westeurope"),
        ({"fleet": {"regions": ["eastus", "EastUS2"]}}, "fleet.regions", "EastUS2", "eastus2"),
    ],
)
@pytest.mark.parametrize("command", ["submit", "config"])
def test_a_misspelled_region_is_refused_naming_the_closest_one(
    write_config: Callable[..., Path],
    sample_disk: Path,
    cli: Cli,
    tmp_path: Path,
    sections: dict[str, object],
    key_path: str,
    typo: str,
    meant: str,
    command: str,
) -> None:
    config = write_config(**sections)
    run = submit(cli, config, sample_disk)
    if command == "config":
        run = lambda: cli(config, "config", "check")  # noqa: E731
    message = assert_refused(tmp_path, run, f"'{key_path}'", repr(typo))
    assert f"did you mean '{meant}'?" in message


def test_a_made_up_region_is_refused(
    write_config: Callable[..., Path], sample_disk: Path, cli: Cli, tmp_path: Path
) -> None:
    config = write_config(fleet={"regions": ["atlantis"]})
    assert_refused(tmp_path, submit(cli, config, sample_disk), "'atlantis'", "list-locations")


@pytest.mark.parametrize(
    "region",
    ["swedencentral", "italynorth", "polandcentral", "israelcentral", "mexicocentral",
     "spaincentral", "newzealandnorth", "indonesiacentral", "malaysiawest", "chilecentral",
     "austriaeast", "belgiumcentral", "taiwannorth", "germanynorth"],
)  # fmt: skip
def test_every_real_region_is_accepted_and_its_misspelling_refused(
    write_config: Callable[..., Path], cli: Cli, region: str
) -> None:
    assert cli(write_config(fleet={"regions": [region]}), "config", "check").exit_code == 0
    typo = write_config(fleet={"regions": [region[:-1]]})
    message = assert_bad_input(cli(typo, "config", "check"), repr(region[:-1]))
    assert f"did you mean {region!r}?" in message


def test_targets_generate_refuses_a_misspelled_region(
    write_config: Callable[..., Path], cli: Cli, tmp_path: Path
) -> None:
    config = write_config()
    (tmp_path / "subs.txt").write_text("sub-a\n", encoding="utf-8")
    args = ("targets", "generate", "--subscriptions", str(tmp_path / "subs.txt"))
    run = lambda: cli(config, *args, "--regions", "westeurope,eastu")  # noqa: E731
    assert "did you mean 'eastus'?" in assert_refused(tmp_path, run, "'eastu'")


# folders in the config


def test_a_local_root_that_is_a_file_is_refused(
    write_config: Callable[..., Path], sample_disk: Path, cli: Cli, tmp_path: Path
) -> None:
    config = write_config()
    (tmp_path / "state").write_text("not a folder", encoding="utf-8")
    assert_refused(tmp_path, submit(cli, config, sample_disk), "[local] root", "is a file")
    assert_refused(tmp_path, lambda: cli(config, "status", "some-job"), "[local] root")


def test_a_work_dir_under_a_file_is_refused(
    write_config: Callable[..., Path], sample_disk: Path, cli: Cli, tmp_path: Path
) -> None:
    config = write_config(upload={"work_dir": "blocker/work"})
    (tmp_path / "blocker").write_text("not a folder", encoding="utf-8")
    message = assert_refused(tmp_path, submit(cli, config, sample_disk), "[upload] work_dir")
    assert "lies under" in message and "blocker" in message


# files that are not regular files: refused without being opened (a FIFO would block)


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "pipe"
    os.mkfifo(path)
    return path


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["config", "check"], id="config-check"),
        pytest.param(["submit", "DISK", "--image-name", "x", *SUBMIT], id="submit"),
        pytest.param(["jobs"], id="jobs"),
    ],
)
def test_a_fifo_as_the_config_is_refused_without_hanging(
    fifo: Path, sample_disk: Path, tmp_path: Path, args: list[str]
) -> None:
    argv = [str(sample_disk) if a == "DISK" else a for a in args]
    assert_process_refused(tmp_path, "-c", str(fifo), *argv, needles=("FIFO",))


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["submit", "FILE", "--image-name", "x", *SUBMIT], id="submit"),
        pytest.param(["run", "FILE", "--image-name", "x", *SUBMIT], id="run"),
        pytest.param(["vhd", "inspect", "FILE"], id="vhd-inspect"),
        pytest.param(["vhd", "convert", "FILE", "out.vhd"], id="vhd-convert"),
        pytest.param(["targets", "generate", "--subscriptions", "FILE", "--regions", "eastus"],
                     id="subscriptions-file"),
    ],
)  # fmt: skip
def test_a_fifo_as_an_input_file_is_refused_without_hanging(
    config_path: Path, fifo: Path, tmp_path: Path, args: list[str]
) -> None:
    argv = [str(fifo) if a == "FILE" else a for a in args]
    assert_process_refused(tmp_path, "-c", str(config_path), *argv, needles=("pipe",))


def test_a_fifo_as_the_converted_output_is_refused(
    config_path: Path, sample_disk: Path, fifo: Path, tmp_path: Path
) -> None:
    args = ("vhd", "convert", str(sample_disk), str(fifo), "--force")
    assert_process_refused(tmp_path, *args, needles=("FIFO",))


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/null"])
def test_a_device_as_the_config_or_the_disk_is_refused(
    config_path: Path, tmp_path: Path, device: str
) -> None:
    # /dev/zero never ends: reading it whole would exhaust memory.
    assert_process_refused(tmp_path, "-c", device, "jobs", needles=("character device",))
    argv = ("-c", str(config_path), "submit", device, "--image-name", "x", *SUBMIT)
    assert_process_refused(tmp_path, *argv, needles=("character device",))


def test_a_directory_as_the_config_is_refused(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "conf.d").mkdir()
    run = lambda: cli(tmp_path / "conf.d", "config", "check")  # noqa: E731
    assert_refused(tmp_path, run, "is a directory")


# plan


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        pytest.param(["--disk-size", "99999999TiB"], "4095 GiB", id="absurd-size"),
        pytest.param(["--disk-size", "5TiB"], "4095 GiB", id="over-azure-limit"),
        pytest.param(["--disk-size", "1" + "0" * 400], "--disk-size", id="overflowing-digits"),
        pytest.param(["--disk-size", "0"], "1 MiB", id="zero-size"),
        pytest.param(["--disk-size", "1B"], "1 MiB", id="tiny-size"),
        pytest.param(["--disk-size", "-30GiB"], "--disk-size", id="negative-size"),
        pytest.param(["--disk-size", "inf"], "--disk-size", id="inf-size"),
        pytest.param(["--disk-size", "nan"], "--disk-size", id="nan-size"),
        pytest.param(["--disk-size", "30GiB", "--upload-rate", "0"], "--upload-rate", id="zero-rate"),
        pytest.param(["--disk-size", "30GiB", "--upload-rate", "-1MiB"], "--upload-rate", id="negative-rate"),
        pytest.param(["--disk-size", "30GiB", "--upload-rate", "inf"], "--upload-rate", id="inf-rate"),
        pytest.param(["--disk-size", "30GiB", "--upload-rate", "nan"], "--upload-rate", id="nan-rate"),
        pytest.param(["--disk-size", "30GiB", "--upload-rate", "0.5"], "1 KiB", id="sub-byte-rate"),
        pytest.param(["--disk-size", "30GiB", "--upload-rate", "1000TiB"], "100 GiB", id="absurd-rate"),
        pytest.param(["--disk-size", "30GiB", "--occupied", "40GiB"], "'40GiB'", id="occupied-over"),
    ],
)  # fmt: skip
def test_plan_refuses_sizes_and_rates_out_of_range(
    config_path: Path, cli: Cli, tmp_path: Path, args: list[str], needle: str
) -> None:
    assert_refused(tmp_path, lambda: cli(config_path, "plan", *args), needle)


# read-only commands in a folder that holds no state create none


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["status", "ID"], id="status"),
        pytest.param(["status", "ID", "--json"], id="status-json"),
        pytest.param(["logs", "ID"], id="logs"),
        pytest.param(["retry", "ID"], id="retry"),
        pytest.param(["retry", "ID", "--wait"], id="retry-wait"),
        pytest.param(["cleanup", "ID"], id="cleanup"),
        pytest.param(["worker", "--job", "ID"], id="worker-job"),
    ],
)
def test_an_unknown_job_id_creates_no_state(
    config_path: Path, cli: Cli, tmp_path: Path, args: list[str]
) -> None:
    argv = ["20990101-000000-dead" if a == "ID" else a for a in args]
    assert_refused(tmp_path, lambda: cli(config_path, *argv), "does not exist")


@pytest.mark.parametrize(
    "args", [["jobs"], ["jobs", "--json"], ["targets", "list"], ["worker"]], ids=" ".join
)
def test_reading_an_empty_folder_creates_nothing(
    config_path: Path, cli: Cli, tmp_path: Path, args: list[str]
) -> None:
    before = tree(tmp_path)
    result = cli(config_path, *args)
    assert result.exit_code == 0, result.output
    assert tree(tmp_path) == before


# click's own usage errors: one sentence too


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        pytest.param(["status"], "Missing argument 'JOB_ID'", id="missing-argument"),
        pytest.param(["status", "x", "--bogus"], "No such option", id="no-such-option"),
        pytest.param(["status", "x", "--jsn"], "did you mean '--json'?", id="near-option"),
        pytest.param(["nosuchcommand"], "No such command", id="no-such-command"),
        pytest.param(["submit", "DISK", *SUBMIT], "Missing option '--image-name'", id="missing-option"),
        pytest.param(["submit", "DISK", "--image-name", "x", "--os-type", "bsd"], "'bsd'", id="bad-choice"),
        pytest.param(["submit", "--image-name", "x", *SUBMIT], "FILE or --from-disk", id="no-file"),
        pytest.param(["plan", "--disk-size"], "requires an argument", id="option-without-value"),
        pytest.param(["plan", "--disk-size", "1GiB", "--seed", "x"], "--seed", id="not-an-int"),
    ],
)  # fmt: skip
def test_click_usage_errors_are_one_sentence(
    config_path: Path, sample_disk: Path, cli: Cli, tmp_path: Path, args: list[str], needle: str
) -> None:
    argv = [str(sample_disk) if a == "DISK" else a for a in args]
    message = assert_refused(tmp_path, lambda: cli(config_path, *argv), needle)
    assert "--help` shows the usage." in message


@pytest.mark.parametrize("args", [["--help"], ["status", "--help"], ["vhd", "-h"]], ids=" ".join)
def test_help_still_works(config_path: Path, cli: Cli, args: list[str]) -> None:
    result = cli(config_path, *args)
    assert result.exit_code == 0
    assert result.stdout.startswith("Usage: imagedist")


# VHDX: the README says submit converts it, as it converts qcow2 and VMDK with qemu-img


@pytest.mark.skipif(shutil.which("qemu-img") is None, reason="qemu-img is not on PATH")
def test_submit_converts_a_vhdx(config_path: Path, cli: Cli, tmp_path: Path) -> None:
    disk = tmp_path / "golden.vhdx"
    subprocess.run(["qemu-img", "create", "-f", "vhdx", str(disk), "16M"], check=True)
    result = cli(config_path, "submit", str(disk), "--image-name", "golden", *SUBMIT)
    assert result.exit_code == 0, result.output
