"""`plan` says what bound the makespan (issue 13): the critical path from the upload to the last
image, leg by leg, adds up to the makespan, and the sentence names the limit that took longest."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from imagedist import Imagedist, load_config
from imagedist._backends.sim import SimModel
from imagedist._cli import cli
from imagedist._domain.events import COPIED_BY_COPY_BLOB, COPIED_BY_RANGES
from imagedist._plan import _elsewhere, _simulate_in_folder
from imagedist._plan_path import FOLLOW

from helpers import config_text

GIB = 1024**3


def _config(tmp_path: Path, copy_method: str = "auto", **concurrency: int) -> Path:
    path = tmp_path / "imagedist.toml"
    # The default poll interval: the tests' usual 0.05 s makes 40 times the passes to simulate.
    concurrency_table = {"poll_interval_seconds": 2.0, **concurrency}
    text = config_text(concurrency=concurrency_table, fanout={"copy_method": copy_method})
    path.write_text(text, encoding="utf-8")
    return path


def test_the_critical_path_adds_up_to_the_last_image(tmp_path: Path) -> None:
    plan = Imagedist(load_config(_config(tmp_path, copy_method="async"))).plan(
        disk_bytes=30 * GIB, occupied_bytes=15 * GIB
    )
    legs = plan.critical_path
    assert legs[0].kind == "upload"
    assert legs[-1].kind == "image creation"
    assert sum(leg.seconds for leg in legs) == pytest.approx(plan.phases["images"], abs=1e-3)
    # Uncapped, whole-blob copies of 16 GB at the model's rates are what takes the time.
    assert plan.bound_by.startswith("bound by copy:")


def test_ranged_copies_leave_the_upload_as_the_bound(tmp_path: Path) -> None:
    # Copies by ranges (the default across accounts) move ~190 MB/s: the upload takes longest.
    plan = Imagedist(load_config(_config(tmp_path))).plan(
        disk_bytes=30 * GIB, occupied_bytes=15 * GIB
    )
    assert plan.bound_by.startswith("bound by upload:")


@pytest.mark.parametrize(
    ("copy_method", "moved_by"),
    [("async", COPIED_BY_COPY_BLOB), ("ranged", COPIED_BY_RANGES)],
)
def test_each_copy_on_the_critical_path_names_the_method_that_moved_it(
    tmp_path: Path, copy_method: str, moved_by: str
) -> None:
    plan = Imagedist(load_config(_config(tmp_path, copy_method=copy_method))).plan(
        disk_bytes=30 * GIB, occupied_bytes=15 * GIB
    )
    copies = [leg for leg in plan.critical_path if leg.kind in ("copy", FOLLOW)]
    assert copies
    assert {leg.method for leg in copies} == {moved_by}
    if plan.bound_by.startswith("bound by copy:"):
        assert f"({moved_by})" in plan.bound_by


def test_a_copy_cap_that_binds_is_named(tmp_path: Path) -> None:
    plan = Imagedist(load_config(_config(tmp_path, copies=1))).plan(
        disk_bytes=30 * GIB, occupied_bytes=15 * GIB
    )
    assert "[concurrency] copies = 1" in plan.bound_by
    uncapped = Imagedist(load_config(_config(tmp_path))).plan(
        disk_bytes=30 * GIB, occupied_bytes=15 * GIB
    )
    assert plan.makespan_seconds > uncapped.makespan_seconds


def test_plan_prints_and_returns_what_bound_it(tmp_path: Path) -> None:
    path = _config(tmp_path)
    runner = CliRunner()
    shown = runner.invoke(cli, ["-c", str(path), "plan", "--disk-size", "8GiB"])
    assert shown.exit_code == 0, shown.output
    assert "bound by" in shown.output
    data = runner.invoke(cli, ["-c", str(path), "plan", "--disk-size", "8GiB", "--json"])
    assert data.exit_code == 0, data.output
    result = json.loads(data.output)
    assert result["bound_by"].startswith("bound by ")
    assert {leg["kind"] for leg in result["critical_path"]} >= {"upload", "copy"}


def test_the_defaults_cap_nothing_that_costs_the_worker_nothing(tmp_path: Path) -> None:
    # Server-side copies and image creations wait on the service, not on the worker: by
    # default no cap of the worker's holds them back, so the default plan is the uncapped one.
    default = Imagedist(load_config(_config(tmp_path)))
    assert default.config.concurrency.copies is None
    assert default.config.concurrency.images is None
    huge = Imagedist(load_config(_config(tmp_path, copies=100_000, images=100_000)))
    planned = [
        api.plan(disk_bytes=30 * GIB, occupied_bytes=15 * GIB).makespan_seconds
        for api in (default, huge)
    ]
    assert planned[0] == planned[1]


def test_plan_shows_both_copy_methods(tmp_path: Path) -> None:
    path = _config(tmp_path)
    runner = CliRunner()
    args = ["-c", str(path), "plan", "--disk-size", "30GiB", "--occupied", "15GiB"]
    shown = runner.invoke(cli, args)
    assert shown.exit_code == 0, shown.output
    assert "copy_method auto (configured)" in shown.output and "copy_method async" in shown.output
    data = runner.invoke(cli, [*args, "--json"])
    methods = json.loads(data.output)["copy_methods"]
    assert set(methods) == {"auto", "async"}
    # Ranged copies are faster across accounts, and cost the requests (and CPU) that buys it.
    assert methods["auto"]["makespan_seconds"] < methods["async"]["makespan_seconds"]
    assert methods["auto"]["range_requests"] > 0 == methods["async"]["range_requests"]
    assert methods["auto"]["worker_cpu_seconds"] > methods["async"]["worker_cpu_seconds"]


def _options() -> dict[str, Any]:
    return {
        "disk_bytes": 30 * GIB,
        "occupied_bytes": 15 * GIB,
        "upload_rate": 60 * 1024 * 1024,
        "model": SimModel(),
        "seed": 0,
        "publish": ("images",),
    }


def test_the_other_method_simulated_in_a_process_of_its_own_plans_the_same(
    tmp_path: Path,
) -> None:
    # A big fleet's second simulation runs in another process (a core each): the same plan.
    config = load_config(_config(tmp_path, copy_method="ranged"))
    here = _simulate_in_folder(config, **_options())
    with _elsewhere(_options(), config) as elsewhere:
        there = elsewhere()
    assert there == here


def test_a_second_process_that_fails_costs_only_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = load_config(_config(tmp_path, copy_method="async"))
    monkeypatch.setattr(sys, "executable", shutil.which("false") or "false")
    with _elsewhere(_options(), config) as elsewhere:
        plan = elsewhere()
    assert plan == _simulate_in_folder(config, **_options())
