"""`setup`, `check` and `teardown` on the local backend: idempotent, honest dry runs, one line
per problem."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from imagedist._cli import cli

from helpers import write_config


def _run(config: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["-c", str(config), *args])
    assert "Traceback" not in result.output
    return result.exit_code, result.output


def test_setup_is_idempotent_and_check_agrees(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    code, out = _run(config, "check")
    assert code == 1 and "run `imagedist setup`" in out
    problems_before = out.count("\n")
    code, out = _run(config, "setup", "--dry-run", "--json")
    planned = json.loads(out)["changes"]
    # 1 staging + 3 storage + 3 images groups, 10 accounts, 10 containers
    assert code == 0 and len(planned) == 27
    assert _run(config, "check")[1].count("\n") == problems_before  # the dry run changed nothing
    code, out = _run(config, "setup")
    assert code == 0 and "setup made 27 changes" in out
    code, out = _run(config, "setup")
    assert code == 0 and "nothing to change" in out
    assert _run(config, "check") == (0, "All checks passed.\n")


def test_setup_onboards_a_new_region_by_editing_the_config(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    assert _run(config, "setup")[0] == 0
    text = config.read_text().replace('"japaneast"]', '"japaneast", "brazilsouth"]')
    config.write_text(text)
    changes = json.loads(_run(config, "setup", "--json")[1])["changes"]
    assert sorted(c["kind"] for c in changes) == ["container"] * 3 + ["storage account"] * 3
    assert {c["region"] for c in changes if c["kind"] == "storage account"} == {"brazilsouth"}


def test_check_reports_a_region_the_subscriptions_cannot_use(tmp_path: Path) -> None:
    # A restricted region: a real name (an unknown one is refused when the config is read) that
    # a subscription lists only once it has been granted access.
    config = write_config(tmp_path)
    config.write_text(config.read_text().replace('"japaneast"]', '"germanynorth"]'))
    _run(config, "setup")
    code, out = _run(config, "check", "--json")
    problems = json.loads(out)["problems"]
    assert code == 1
    assert {p["subject"] for p in problems} == {f"sub-{s}/germanynorth" for s in "abc"}
    assert all("not available in this subscription" in p["message"] for p in problems)


def test_teardown_needs_confirmation_and_removes_what_setup_made(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    _run(config, "setup")
    code, out = _run(config, "teardown")  # no terminal: refuses without --yes
    assert code == 1 and "pass --yes" in out
    assert _run(config, "check")[0] == 0  # nothing was removed
    code, out = _run(config, "teardown", "--yes")
    assert code == 0 and out.count("done: delete") == 17  # 10 accounts, 7 groups
    assert "Nothing that setup made is left" in _run(config, "teardown")[1]


def test_setup_refuses_an_account_name_taken_elsewhere(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    _run(config, "setup")
    other = tmp_path / "other"
    other.mkdir()
    clash = write_config(other)
    text = clash.read_text().replace('subscription = "sub-staging"', 'subscription = "sub-other"')
    clash.write_text(text.replace('root = "state"', f'root = "{tmp_path / "state"}"'))
    code, out = _run(clash, "setup")
    assert code == 2 and "'stagingacct' is not available" in out


def _hand_made_group(config: Path, subscription: str, name: str) -> None:
    """A resource group someone made by hand, as the local backend records one (no tag)."""
    file = config.parent / "state" / "provisioning.json"
    data = json.loads(file.read_text(encoding="utf-8"))
    data["groups"][f"{subscription}/{name}"] = {"region": "westeurope"}
    file.write_text(json.dumps(data), encoding="utf-8")


def _groups(config: Path) -> dict[str, dict[str, object]]:
    file = config.parent / "state" / "provisioning.json"
    groups: dict[str, dict[str, object]] = json.loads(file.read_text(encoding="utf-8"))["groups"]
    return groups


def test_teardown_leaves_a_hand_made_group_and_says_why(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    _run(config, "setup")
    _hand_made_group(config, "sub-a", "imagedist-images")  # same name as setup's, not setup's

    code, out = _run(config, "teardown", "--dry-run", "--json")
    planned = json.loads(out)["changes"]
    kept = [c for c in planned if c["action"] == "keep"]
    assert code == 0
    assert [(c["subscription"], c["name"]) for c in kept] == [("sub-a", "imagedist-images")]
    assert "no imagedist-managed tag" in kept[0]["description"]

    code, out = _run(config, "teardown", "--yes")
    assert code == 0 and out.count("done: delete") == 16  # 10 accounts, 6 groups
    assert "keep resource group imagedist-images in sub-a: not made by setup" in out
    assert list(_groups(config)) == ["sub-a/imagedist-images"]


def test_teardown_keep_images_keeps_the_images_groups(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    _run(config, "setup")

    code, out = _run(config, "teardown", "--yes", "--keep-images")

    assert code == 0 and out.count("done: delete") == 14  # 10 accounts, 4 groups
    assert out.count("holds the images, kept by --keep-images") == 3
    assert sorted(_groups(config)) == [f"sub-{s}/imagedist-images" for s in "abc"]


def test_setup_shows_progress_on_stderr_and_json_stays_clean(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    result = CliRunner().invoke(cli, ["-c", str(config), "setup"])
    assert result.exit_code == 0
    assert "[27/27] " in result.stderr and "[1/27] " in result.stderr
    assert "[1/27]" not in result.stdout

    other = tmp_path / "other"
    other.mkdir()
    result = CliRunner().invoke(cli, ["-c", str(write_config(other)), "setup", "--json"])
    assert result.exit_code == 0 and result.stderr == ""
    assert len(json.loads(result.stdout)["changes"]) == 27
