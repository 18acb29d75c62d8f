"""`status`, `jobs` and `logs` print plain aligned text (issue 13: without rich, which costs a
sixth of their start): the same columns and content as before, each cell under its header,
no terminal codes when piped, colours on a terminal."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import click
from click.testing import Result

from imagedist._cli._text import Cell, table

from helpers import make_disk, write_config


def _columns(header: str, names: list[str]) -> list[tuple[int, int]]:
    """Where each header name starts and ends on the header line."""
    spans: list[tuple[int, int]] = []
    for name in names:
        start = header.index(name, spans[-1][1] if spans else 0)
        spans.append((start, start + len(name)))
    return spans


def _lines_after(output: str, title: str) -> list[str]:
    lines = output.splitlines()
    return lines[lines.index(title) + 1 :]


def _run_failing_job(tmp_path: Path, cli: Callable[..., Result]) -> tuple[Path, str]:
    """A job on 3 x 3 targets whose images fail in sub-b/eastus: its id."""
    config = write_config(tmp_path, image_seconds=0.0, fail_images=["sub-b/eastus"])
    disk = make_disk(tmp_path / "disk.raw")
    result = cli(config, "run", str(disk), "--image-name", "img", "--os-type", "linux")
    assert result.exit_code == 1, result.output
    return config, str(json.loads(cli(config, "jobs", "--json").stdout)[0]["job"])


def test_status_prints_the_summary_the_target_grid_and_the_error_log(
    tmp_path: Path, cli: Callable[..., Result]
) -> None:
    config, job = _run_failing_job(tmp_path, cli)

    result = cli(config, "status", job)

    assert result.exit_code == 1  # the job failed
    out = result.stdout
    assert "\x1b[" not in out  # piped: no terminal codes
    summary = out.splitlines()[:7]
    assert summary[0] == f"job            {job}  (img, linux, V1)"
    assert summary[1:] == [
        "upload         100 %",
        "tier-1 copies  100 %",
        "target copies  100 %",
        "images         88 %",
        "errors         1",
        "completed      no (failed)",
    ]
    header, rule, *rows = _lines_after(out, "targets")[:5]
    regions = ["eastus", "japaneast", "westeurope"]
    spans = _columns(header, ["subscription", *regions])
    assert rule.split() == ["-" * (end - start) for start, end in spans]
    grid = {}
    for row in rows:
        subscription = row[: spans[0][1]].strip()
        for region, (start, end) in zip(regions, spans[1:], strict=True):
            grid[subscription, region] = row[start:end].strip()
    assert grid[("sub-b", "eastus")] == "failed"
    assert sorted(grid.values()).count("done") == 8
    assert "sub-b/eastus" in "\n".join(_lines_after(out, "error log"))


def test_jobs_prints_each_job_under_the_headers(tmp_path: Path, cli: Callable[..., Result]) -> None:
    config, job = _run_failing_job(tmp_path, cli)
    columns = ["job", "image", "os", "state", "upload", "tier-1", "copies", "images", "errors"]

    header, rule, row = cli(config, "jobs").stdout.splitlines()

    spans = _columns(header, columns)
    cells = [
        row[start : spans[i + 1][0] if i + 1 < len(spans) else None].strip()
        for i, (start, _) in enumerate(spans)
    ]
    assert cells == [job, "img", "linux", "failed", "100%", "100%", "100%", "88%", "1"]
    assert len(rule.split()) == len(columns)


def test_a_table_aligns_on_the_text_and_colours_only_the_text() -> None:
    lines = table(["state", "n"], [[Cell("done", "green"), "1"], [Cell("failed", "bold red"), "2"]])

    plain = [click.unstyle(line) for line in lines]
    assert plain == ["state   n", "------  -", "done    1", "failed  2"]
    assert lines[2] == click.style("done", fg="green") + "    1"  # the padding is not coloured
    assert lines[3] == click.style("failed", fg="red", bold=True) + "  2"
