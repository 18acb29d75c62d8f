"""The library calls behind the commands (issue 9): what the CLI does, a dashboard can call."""

from __future__ import annotations

from pathlib import Path

from imagedist import Imagedist, JobState, JobStatus, OsType, load_config

from helpers import call, make_disk, write_config


def test_run_reports_progress_and_wait_returns_the_end(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    disk = make_disk(tmp_path / "disk.vhd")
    seen: list[JobStatus] = []

    async def body(app: Imagedist) -> tuple[JobStatus, JobStatus]:
        job = await app.submit(disk, "golden", OsType.LINUX)
        await app.upload(job.id)
        ended = await app.run(job.id, seen.append, interval=0.05)
        return ended, await app.wait(job.id)

    ended, waited = call(config, body)
    assert ended.state is JobState.COMPLETED and waited.state is JobState.COMPLETED
    assert seen and seen[-1] == ended


def test_run_reports_progress_on_the_engines_events_not_a_timer(tmp_path: Path) -> None:
    # The interval is far longer than the job: every report but the first and last comes from
    # an event (copies verified, images created) as it happens (issue 9, item 3).
    config = write_config(tmp_path)
    disk = make_disk(tmp_path / "disk.vhd")
    seen: list[JobStatus] = []

    async def body(app: Imagedist) -> JobStatus:
        job = await app.submit(disk, "golden", OsType.LINUX)
        await app.upload(job.id)
        return await app.run(job.id, seen.append, interval=3600)

    ended = call(config, body)
    assert ended.state is JobState.COMPLETED
    done_counts = [sum(t.state.value == "done" for t in s.targets) for s in seen]
    assert len(seen) > 3 and len(set(done_counts)) > 2, done_counts


def test_teardown_makes_exactly_the_changes_of_its_dry_run(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    made = call(config, lambda app: app.setup())
    assert made and call(config, lambda app: app.setup(dry_run=True)) == []
    planned = call(config, lambda app: app.teardown(dry_run=True))
    assert planned and call(config, lambda app: app.teardown(dry_run=True)) == planned
    done: list[object] = []
    assert call(config, lambda app: app.teardown(changes=planned, on_change=done.append)) == planned
    # Made concurrently, so in any order: every planned change once, nothing else.
    assert sorted(map(repr, done)) == sorted(map(repr, planned))
    assert call(config, lambda app: app.teardown(dry_run=True)) == []


def test_plan_needs_no_backend(tmp_path: Path) -> None:
    app = Imagedist(load_config(write_config(tmp_path)))
    plan = app.plan(disk_bytes=1024**3, occupied_bytes=512 * 1024**2)
    assert plan.targets > 0 and plan.makespan_seconds > 0


def test_generate_targets_needs_no_config(tmp_path: Path) -> None:
    subs = tmp_path / "subs.txt"
    subs.write_text("sub-a\nsub-b  # the second\n", encoding="utf-8")
    text = Imagedist.generate_targets(subs, ["westeurope", "eastus"], "imgd")
    assert text.count("[[targets]]") == 4 and '"sub-b"' in text
