"""The pure status functions: honest, floored percentages and the derived job state."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from imagedist._domain import (
    BlobRef,
    FailedPhase,
    Job,
    JobState,
    OsType,
    SourceKind,
    SourceRow,
    SourceState,
    TargetRow,
    TargetState,
)
from imagedist._engine._status import derive_job_state, summarize

SIZE = 512 * 1024
ACTIVE = [TargetState.PENDING, TargetState.COPYING, TargetState.COPIED, TargetState.IMAGING]


def job(size: int = SIZE) -> Job:
    return Job("job-1", "golden", OsType.LINUX, "/tmp/golden.vhd", size, 1_700_000_000.0)


def tier0(state: SourceState = SourceState.READY, progress: int = 0) -> SourceRow:
    return SourceRow(
        "job-1",
        "tier0",
        SourceKind.TIER0,
        BlobRef("stg", "c", "tier0.vhd"),
        state=state,
        progress_bytes=progress,
    )


def tier1(index: int, state: SourceState = SourceState.READY) -> SourceRow:
    return SourceRow(
        "job-1",
        f"tier1-{index:03d}",
        SourceKind.TIER1,
        BlobRef("stg", "c", f"tier1-{index:03d}.vhd"),
        state=state,
    )


def target(index: int, state: TargetState) -> TargetRow:
    failed_phase = FailedPhase.COPY if state is TargetState.FAILED else None
    return TargetRow(
        "job-1",
        f"sub-{index:04d}/westeurope",
        f"sub-{index:04d}",
        "westeurope",
        BlobRef(f"acct{index:04d}", "c", "golden.vhd"),
        "rg",
        f"golden.{index}",
        state=state,
        failed_phase=failed_phase,
    )


def targets(*states: TargetState) -> list[TargetRow]:
    return [target(i, s) for i, s in enumerate(states)]


# percentages


def test_percentages_are_floored() -> None:
    rows = targets(*[TargetState.DONE] * 199, TargetState.IMAGING)
    status = summarize(job(), [tier0()], rows)
    assert status.images_pct == 99
    assert status.copies_pct == 100
    assert not status.completed
    assert status.state is JobState.ACTIVE


def test_one_of_three_is_33_and_two_of_three_is_66() -> None:
    one = summarize(job(), [tier0()], targets(TargetState.DONE, *[TargetState.PENDING] * 2))
    two = summarize(job(), [tier0()], targets(*[TargetState.DONE] * 2, TargetState.PENDING))
    assert (one.images_pct, two.images_pct) == (33, 66)


def test_copies_count_every_state_past_the_copy() -> None:
    rows = targets(
        TargetState.PENDING,
        TargetState.COPYING,
        TargetState.COPIED,
        TargetState.IMAGING,
        TargetState.DONE,
        TargetState.FAILED,
    )
    status = summarize(job(), [tier0()], rows)
    assert status.copies_pct == 50  # copied, imaging, done of 6
    assert status.images_pct == 16  # 1 of 6, floored


def test_upload_floors_and_reads_100_only_when_the_source_is_ready() -> None:
    almost = summarize(job(), [tier0(SourceState.UPLOADING, SIZE - 512)], [])
    assert almost.upload_pct == 99
    written = summarize(job(), [tier0(SourceState.UPLOADING, SIZE)], [])
    assert written.upload_pct == 99  # every byte written but not yet verified
    half = summarize(job(), [tier0(SourceState.UPLOADING, SIZE // 2)], [])
    assert half.upload_pct == 50
    assert summarize(job(), [tier0(SourceState.PENDING, 0)], []).upload_pct == 0
    assert summarize(job(), [tier0(SourceState.READY, 0)], []).upload_pct == 100


def test_tier1_percentage() -> None:
    sources = [tier0(), tier1(1), tier1(2, SourceState.COPYING), tier1(3, SourceState.PENDING)]
    assert summarize(job(), sources, targets(TargetState.PENDING)).tier1_pct == 33
    assert summarize(job(), [tier0()], targets(TargetState.PENDING)).tier1_pct == 100


def test_skipped_targets_are_in_no_denominator() -> None:
    rows = targets(
        TargetState.DONE, TargetState.DONE, TargetState.COPIED, *[TargetState.SKIPPED] * 5
    )
    status = summarize(job(), [tier0()], rows)
    assert status.copies_pct == 100
    assert status.images_pct == 66
    assert status.counts == {"done": 2, "copied": 1, "skipped": 5}
    assert len(status.targets) == 8


def test_skipped_targets_do_not_hold_the_job_back() -> None:
    rows = targets(TargetState.DONE, TargetState.SKIPPED, TargetState.SKIPPED)
    status = summarize(job(), [tier0()], rows)
    assert (status.copies_pct, status.images_pct) == (100, 100)
    assert status.completed
    assert status.state is JobState.COMPLETED


@given(
    done=st.integers(0, 300),
    other=st.integers(0, 300),
    skipped=st.integers(0, 300),
)
def test_images_pct_is_the_floor_of_done_over_active(done: int, other: int, skipped: int) -> None:
    rows = targets(
        *[TargetState.DONE] * done, *[TargetState.COPIED] * other, *[TargetState.SKIPPED] * skipped
    )
    status = summarize(job(), [tier0()], rows)
    active = done + other
    expected = 100 if active == 0 else (100 * done) // active
    assert status.images_pct == expected
    assert (status.images_pct == 100) == (other == 0)
    assert status.completed is (other == 0)


# state


def test_completed_only_when_every_active_target_is_done() -> None:
    assert summarize(job(), [tier0()], targets(*[TargetState.DONE] * 4)).completed
    for state in ACTIVE:
        status = summarize(job(), [tier0()], targets(*[TargetState.DONE] * 3, state))
        assert not status.completed, state
        assert status.state is JobState.ACTIVE, state


def test_failed_target_fails_the_job_once_nothing_is_active() -> None:
    for state in ACTIVE:
        rows = targets(TargetState.FAILED, TargetState.DONE, state)
        assert derive_job_state([tier0()], rows) is JobState.ACTIVE, state
    status = summarize(job(), [tier0()], targets(TargetState.FAILED, TargetState.DONE))
    assert status.state is JobState.FAILED
    assert not status.completed
    assert status.images_pct == 50


def test_failed_tier0_fails_the_job_and_counts_as_an_error() -> None:
    status = summarize(job(), [tier0(SourceState.FAILED)], targets(TargetState.FAILED))
    assert status.state is JobState.FAILED
    assert status.upload_pct < 100
    assert status.error_count == 2


@pytest.mark.parametrize("state", [SourceState.PENDING, SourceState.UPLOADING])
def test_job_is_active_while_tier0_uploads(state: SourceState) -> None:
    assert derive_job_state([tier0(state)], targets(TargetState.SKIPPED)) is JobState.ACTIVE


def test_unready_tier1_copies_do_not_hold_a_finished_job() -> None:
    sources = [tier0(), tier1(1, SourceState.COPYING), tier1(2, SourceState.FAILED)]
    assert derive_job_state(sources, targets(TargetState.DONE)) is JobState.COMPLETED


def test_error_count_counts_failed_targets_not_log_lines() -> None:
    rows = targets(TargetState.FAILED, TargetState.FAILED, TargetState.DONE, TargetState.PENDING)
    rows[0] = dataclasses.replace(rows[0], error="copy failed", attempts=5)
    status = summarize(job(), [tier0()], rows)
    assert status.error_count == 2
    assert status.counts["failed"] == 2


def test_no_errors_when_nothing_failed() -> None:
    status = summarize(job(), [tier0(), tier1(1)], targets(TargetState.DONE, TargetState.COPYING))
    assert status.error_count == 0


def test_summary_keeps_the_job_and_its_rows() -> None:
    the_job = job()
    rows = targets(TargetState.DONE)
    status = summarize(the_job, [tier0()], rows)
    assert status.job is the_job
    assert status.targets == rows
