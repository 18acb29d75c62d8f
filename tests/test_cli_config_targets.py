"""`imagedist config check` and `imagedist targets generate|list|enable|disable`."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result

from imagedist import load_config

Cli = Callable[..., Result]
WIDE = {"COLUMNS": "250"}


def assert_bad_input(result: Result, *needles: str) -> str:
    """Exit 2, one 'Error: ...' sentence on stderr, no traceback; returns the message."""
    assert result.exit_code == 2, (result.output, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    assert lines[0].endswith("."), lines[0]
    for needle in needles:
        assert needle in lines[0]
    return lines[0]


def _json(result: Result) -> Any:
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads(result.stdout)


# config check


def test_config_check_prints_the_resolved_fleet(config_path: Path, cli: Cli) -> None:
    result = cli(config_path, "config", "check", env=WIDE)
    assert result.exit_code == 0, result.output
    assert re.search(
        r"is valid: backend 'local', staging account 'imgdstaging', 6 targets", result.stdout
    )
    for target in load_config(config_path).fleet_targets():
        assert target.name in result.stdout
        assert target.account in result.stdout


def test_config_check_json_matches_the_library(config_path: Path, cli: Cli) -> None:
    data = _json(cli(config_path, "config", "check", "--json"))
    fleet = load_config(config_path).fleet_targets()
    assert data["backend"] == "local"
    assert data["staging"]["account"] == "imgdstaging"
    assert [(t["name"], t["account"], t["enabled"]) for t in data["targets"]] == [
        (t.name, t.account, t.enabled) for t in fleet
    ]
    assert data["concurrency"]["poll_interval_seconds"] == 0.05
    assert data["fanout"]["tier1_copies"] == 1


@pytest.mark.parametrize("as_json", [False, True])
def test_config_check_error_is_one_line_with_the_key_path(
    write_config: Callable[..., Path], cli: Cli, as_json: bool
) -> None:
    path = write_config(staging={"account": "Not-Valid"})
    result = cli(path, "config", "check", *(["--json"] if as_json else []))
    assert_bad_input(result, "'staging.account'", "Not-Valid")
    assert result.stdout == ""


def test_config_check_missing_file(tmp_path: Path, cli: Cli) -> None:
    assert_bad_input(cli(tmp_path / "absent.toml", "config", "check"), "absent.toml")


def test_config_check_invalid_toml(tmp_path: Path, cli: Cli) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("[staging\naccount = 1\n", encoding="utf-8")
    assert_bad_input(cli(path, "config", "check"), "not valid TOML")


# targets generate


@pytest.fixture
def subs_file(tmp_path: Path) -> Path:
    path = tmp_path / "subscriptions.txt"
    path.write_text("# the new fleet\nsub-new1\n\nsub-new2   # second one\n", encoding="utf-8")
    return path


def test_generate_prints_toml_that_validates_when_pasted(
    config_path: Path, subs_file: Path, cli: Cli
) -> None:
    result = cli(
        config_path,
        "targets",
        "generate",
        "--subscriptions",
        str(subs_file),
        "--regions",
        "westeurope,eastus",
        "--prefix",
        "p7",
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.count("[[targets]]") == 4
    pasted = config_path.with_name("pasted.toml")
    pasted.write_text(
        config_path.read_text(encoding="utf-8") + "\n" + result.stdout, encoding="utf-8"
    )
    fleet = load_config(pasted).fleet_targets()
    explicit = [t for t in fleet if t.subscription.startswith("sub-new")]
    assert {(t.subscription, t.region) for t in explicit} == {
        (s, r) for s in ("sub-new1", "sub-new2") for r in ("westeurope", "eastus")
    }
    assert all(t.account.startswith("p7") for t in explicit)
    # the same input generates the same accounts: regenerating never renames one
    again = cli(
        config_path,
        "targets",
        "generate",
        "--subscriptions",
        str(subs_file),
        "--regions",
        "westeurope,eastus",
        "--prefix",
        "p7",
    )
    assert again.stdout == result.stdout


def test_generate_append_writes_a_valid_config(
    config_path: Path, subs_file: Path, cli: Cli
) -> None:
    before = len(load_config(config_path).fleet_targets())
    result = cli(
        config_path,
        "targets",
        "generate",
        "--subscriptions",
        str(subs_file),
        "--regions",
        "northeurope",
        "--append",
    )
    assert result.exit_code == 0, result.output
    assert "appended 2 targets" in result.stdout
    fleet = load_config(config_path).fleet_targets()
    assert len(fleet) == before + 2
    assert {"sub-new1/northeurope", "sub-new2/northeurope"} <= {t.name for t in fleet}
    listed = _json(cli(config_path, "targets", "list", "--json"))
    assert len(listed) == before + 2


def test_generate_append_refuses_a_result_that_would_not_validate(
    config_path: Path, tmp_path: Path, cli: Cli
) -> None:
    # The default fleet already has sub-alpha/westeurope with the same generated account.
    subs = tmp_path / "dup.txt"
    subs.write_text("sub-alpha\n", encoding="utf-8")
    before = config_path.read_text(encoding="utf-8")
    result = cli(
        config_path,
        "targets",
        "generate",
        "--subscriptions",
        str(subs),
        "--regions",
        "westeurope",
        "--append",
    )
    assert_bad_input(result, "duplicate")
    assert config_path.read_text(encoding="utf-8") == before


@pytest.mark.parametrize(
    ("regions", "prefix", "needle"),
    [
        pytest.param("West Europe", "imgd", "Regions", id="space-in-region"),
        pytest.param("westeurope,", "imgd", "Regions", id="trailing-comma"),
        pytest.param("westeurope,,eastus", "imgd", "Regions", id="empty-region"),
        pytest.param("", "imgd", "Regions", id="no-region"),
        pytest.param("westeurope", "Bad", "Prefix", id="uppercase-prefix"),
        pytest.param("westeurope", "p" * 12, "Prefix", id="prefix-too-long"),
        pytest.param("westeurope", "", "Prefix", id="empty-prefix"),
    ],
)
def test_generate_bad_regions_or_prefix(
    config_path: Path, subs_file: Path, cli: Cli, regions: str, prefix: str, needle: str
) -> None:
    result = cli(
        config_path,
        "targets",
        "generate",
        "--subscriptions",
        str(subs_file),
        "--regions",
        regions,
        "--prefix",
        prefix,
    )
    assert_bad_input(result, needle)
    assert result.stdout == ""


@pytest.mark.parametrize(
    "content",
    [pytest.param("", id="empty"), pytest.param("# only a comment\n\n   \n", id="comments-only")],
)
def test_generate_empty_subscriptions_file(
    config_path: Path, tmp_path: Path, cli: Cli, content: str
) -> None:
    subs = tmp_path / "subs.txt"
    subs.write_text(content, encoding="utf-8")
    result = cli(
        config_path, "targets", "generate", "--subscriptions", str(subs), "--regions", "westeurope"
    )
    assert_bad_input(result, "lists no subscription")


def test_generate_missing_or_duplicate_subscriptions(
    config_path: Path, tmp_path: Path, cli: Cli
) -> None:
    missing = cli(
        config_path,
        "targets",
        "generate",
        "--subscriptions",
        str(tmp_path / "none.txt"),
        "--regions",
        "westeurope",
    )
    assert_bad_input(missing, "cannot be read")
    dup = tmp_path / "dup.txt"
    dup.write_text("s1\ns1\n", encoding="utf-8")
    twice = cli(
        config_path, "targets", "generate", "--subscriptions", str(dup), "--regions", "westeurope"
    )
    assert_bad_input(twice, "twice")


def test_generate_refuses_a_region_listed_twice(
    config_path: Path, subs_file: Path, cli: Cli
) -> None:
    # Regression: the duplicate region used to print [[targets]] that do not validate.
    result = cli(
        config_path,
        "targets",
        "generate",
        "--subscriptions",
        str(subs_file),
        "--regions",
        "westeurope,eastus,westeurope",
    )
    assert_bad_input(result, "twice")
    assert result.stdout == ""


def test_generate_output_is_valid_toml_for_any_subscription_id(
    config_path: Path, tmp_path: Path, cli: Cli
) -> None:
    # Regression: ids were pasted into TOML strings unescaped.
    subs = tmp_path / "subs.txt"
    subs.write_text('sub"quoted\nsub\\back\n', encoding="utf-8")
    result = cli(
        config_path, "targets", "generate", "--subscriptions", str(subs), "--regions", "westeurope"
    )
    assert result.exit_code == 0, result.output
    pasted = config_path.with_name("pasted.toml")
    pasted.write_text(
        config_path.read_text(encoding="utf-8") + "\n" + result.stdout, encoding="utf-8"
    )
    names = {t.subscription for t in load_config(pasted).fleet_targets()}
    assert {'sub"quoted', "sub\\back"} <= names


# targets list / enable / disable


def _enabled(cli: Cli, config_path: Path) -> dict[str, bool]:
    return {t["name"]: t["enabled"] for t in _json(cli(config_path, "targets", "list", "--json"))}


def test_targets_list_table_and_json(config_path: Path, cli: Cli) -> None:
    table = cli(config_path, "targets", "list", env=WIDE)
    assert table.exit_code == 0, table.output
    data = _json(cli(config_path, "targets", "list", "--json"))
    fleet = load_config(config_path).fleet_targets()
    assert [t["name"] for t in data] == [t.name for t in fleet]
    assert all(t["enabled"] is True for t in data)
    for target in fleet:
        assert target.name in table.stdout
        assert target.account in table.stdout


def test_targets_list_shows_targets_disabled_in_the_config(
    write_config: Callable[..., Path], cli: Cli
) -> None:
    path = write_config(
        targets=[
            {"subscription": "s1", "region": "eastus", "account": "offacct", "enabled": False},
        ]
    )
    enabled = _enabled(cli, path)
    assert enabled.pop("s1/eastus") is False
    assert all(enabled.values())


def test_disable_then_enable_a_region(config_path: Path, cli: Cli) -> None:
    result = cli(config_path, "targets", "disable", "--region", "eastus", "--json")
    assert _json(result) == {"enabled": False, "targets": ["sub-alpha/eastus", "sub-bravo/eastus"]}
    enabled = _enabled(cli, config_path)
    assert {name for name, on in enabled.items() if not on} == {
        "sub-alpha/eastus",
        "sub-bravo/eastus",
    }
    assert len(enabled) == 6

    back = cli(config_path, "targets", "enable", "--region", "eastus")
    assert back.exit_code == 0, back.output
    assert "enabled 2 targets" in back.stdout
    assert all(_enabled(cli, config_path).values())


def test_switches_combine_subscription_and_name(config_path: Path, cli: Cli) -> None:
    result = cli(
        config_path,
        "targets",
        "disable",
        "--subscription",
        "sub-bravo",
        "--name",
        "sub-alpha/westeurope",
    )
    assert result.exit_code == 0, result.output
    assert "disabled 4 targets" in result.stdout
    off = {name for name, on in _enabled(cli, config_path).items() if not on}
    assert off == {
        "sub-bravo/westeurope",
        "sub-bravo/eastus",
        "sub-bravo/southeastasia",
        "sub-alpha/westeurope",
    }


def test_runtime_switch_overrides_the_config(write_config: Callable[..., Path], cli: Cli) -> None:
    path = write_config(
        targets=[
            {"subscription": "s1", "region": "eastus", "account": "offacct", "enabled": False},
        ]
    )
    assert cli(path, "targets", "enable", "--name", "s1/eastus").exit_code == 0
    assert _enabled(cli, path)["s1/eastus"] is True


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        pytest.param(["--region", "nowhere"], "'nowhere'", id="unknown-region"),
        pytest.param(["--subscription", "sub-zulu"], "'sub-zulu'", id="unknown-subscription"),
        pytest.param(["--name", "sub-alpha/nowhere"], "'sub-alpha/nowhere'", id="unknown-name"),
        pytest.param(
            ["--region", "eastus", "--region", "nowhere"], "'nowhere'", id="one-of-two-unknown"
        ),
        pytest.param([], "--region", id="nothing-chosen"),
    ],
)
@pytest.mark.parametrize("verb", ["disable", "enable"])
def test_switch_unknown_target_changes_nothing(
    config_path: Path, cli: Cli, verb: str, args: list[str], needle: str
) -> None:
    assert_bad_input(cli(config_path, "targets", verb, *args), needle)
    assert all(_enabled(cli, config_path).values())
