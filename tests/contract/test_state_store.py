"""Contract suite for the StateStore port: every implementation must pass it unchanged.

Tests use only the abstract API through a harness; ids and switch names are unique per test so
a shared backing table (Azure Tables) does not leak between tests. To add an implementation, add
a ``pytest.param(factory, id=...)`` to the ``state`` fixture.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from azurite import AzuriteServer
from imagedist._backends.azure.state import AzureTableStateStore
from imagedist._backends.local.state import SqliteStateStore
from imagedist._domain import (
    BlobRef,
    FailedPhase,
    Job,
    JobState,
    LogFilter,
    LogRecord,
    OsType,
    SourceKind,
    SourceRow,
    SourceState,
    TargetRow,
    TargetState,
)
from imagedist._domain.gallery import GalleryRef, PublicationRow, PublicationState, RegionStatus
from imagedist._exceptions import Conflict, InvalidInput, NotFound, PreconditionFailed
from imagedist.abc import StateStore

from helpers import run


@dataclass
class StateHarness:
    """One state store under test, and a way to open another instance on the same storage."""

    kind: str
    store: StateStore
    #: a fresh adapter on the same storage, as another process would build it
    reopen: Callable[[], StateStore]
    opened: list[StateStore] = field(default_factory=list)

    def other(self) -> StateStore:
        store = self.reopen()
        self.opened.append(store)
        return store


def _sqlite(tmp_path: Path) -> StateHarness:
    path = tmp_path / "state" / "state.db"
    return StateHarness("local", SqliteStateStore(path), lambda: SqliteStateStore(path))


def _sqlite_in_this_thread(tmp_path: Path) -> StateHarness:
    """The SQLite store as the commands that only read open it: every call in the caller's
    thread (no worker thread, so no event loop is needed)."""
    path = tmp_path / "state" / "state.db"

    def open_store() -> StateStore:
        return SqliteStateStore(path, in_worker_threads=False)

    return StateHarness("local", open_store(), open_store)


def _azure(server: AzuriteServer) -> StateHarness:
    """Azure Table storage on Azurite; every instance shares the session's tables."""
    connection_string = server.connection_string("stagingacct")

    def open_store() -> StateStore:
        return AzureTableStateStore(connection_string, table_prefix="contract")

    return StateHarness("azure", open_store(), open_store)


def _memory(tmp_path: Path) -> StateHarness:
    """The sim backend's in-memory store; a reopened instance shares its tables."""
    from imagedist._backends.sim import MemoryStateStore

    store = MemoryStateStore()
    return StateHarness("sim", store, lambda: MemoryStateStore(store.tables))


@pytest.fixture(
    params=[
        pytest.param(_sqlite, id="local"),
        pytest.param(_sqlite_in_this_thread, id="local-in-this-thread"),
        pytest.param(_azure, id="azure"),
        pytest.param(_memory, id="sim"),
    ]
)
def state(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateHarness]:
    if request.param is _azure:
        harness: StateHarness = _azure(request.getfixturevalue("azurite_server"))
    else:
        harness = request.param(tmp_path)
    yield harness
    for store in [harness.store, *harness.opened]:
        run(store.aclose())


# builders


def new_id() -> str:
    return f"job-{uuid.uuid4().hex[:12]}"


def make_job(job_id: str, created_at: float = 1_700_000_000.0, **changes: Any) -> Job:
    fields: dict[str, Any] = {"description": "contract", **changes}
    return Job(
        id=job_id,
        image_name="golden",
        os_type=OsType.LINUX,
        source_path="/data/golden.vhd",
        size_bytes=8 * 1024 * 1024,
        created_at=created_at,
        **fields,
    )


def make_sources(job_id: str, tier1: int = 2) -> list[SourceRow]:
    rows = [
        SourceRow(
            job_id,
            "tier0",
            SourceKind.TIER0,
            BlobRef("stagingacct", "imagedist", f"jobs/{job_id}/golden.vhd"),
        )
    ]
    rows += [
        SourceRow(
            job_id,
            f"tier1-{i:03d}",
            SourceKind.TIER1,
            BlobRef("stagingacct", "imagedist", f"jobs/{job_id}/tier1-{i:03d}.vhd"),
        )
        for i in range(1, tier1 + 1)
    ]
    return rows


def make_targets(
    job_id: str, names: tuple[str, ...] = ("sub-b/eastus", "sub-a/westeurope", "sub-a/eastus")
) -> list[TargetRow]:
    rows = []
    for i, name in enumerate(names):
        subscription, region = name.split("/")
        rows.append(
            TargetRow(
                job_id=job_id,
                target=name,
                subscription=subscription,
                region=region,
                blob=BlobRef(f"acct{i}", "imagedist", f"jobs/{job_id}/golden.vhd"),
                resource_group="imagedist-images",
                image_name=f"golden.{region}",
                updated_at=1.0,
            )
        )
    return rows


def create(store: StateStore, job_id: str | None = None, **job_changes: Any) -> Job:
    job = make_job(job_id or new_id(), **job_changes)
    run(store.create_job(job, make_sources(job.id), make_targets(job.id)))
    return job


def target_row(store: StateStore, job_id: str, name: str) -> TargetRow:
    return next(t for t in run(store.list_targets(job_id)) if t.target == name)


def source_row(store: StateStore, job_id: str, source_id: str) -> SourceRow:
    return next(s for s in run(store.list_sources(job_id)) if s.source_id == source_id)


# jobs


def test_create_job_then_read_it_back(state: StateHarness) -> None:
    job = make_job(new_id())
    sources, targets = make_sources(job.id), make_targets(job.id)
    run(state.store.create_job(job, sources, targets))

    assert run(state.store.get_job(job.id)) == job
    assert run(state.store.list_sources(job.id)) == sorted(sources, key=lambda s: s.source_id)
    assert run(state.store.list_targets(job.id)) == sorted(targets, key=lambda t: t.target)
    assert [t.target for t in run(state.store.list_targets(job.id))] == [
        "sub-a/eastus",
        "sub-a/westeurope",
        "sub-b/eastus",
    ]


def test_list_jobs_newest_first(state: StateHarness) -> None:
    middle = create(state.store, created_at=2_000.0)
    oldest = create(state.store, created_at=1_000.0)
    newest = create(state.store, created_at=3_000.0)
    ours = {oldest.id, middle.id, newest.id}
    listed = [j.id for j in run(state.store.list_jobs()) if j.id in ours]
    assert listed == [newest.id, middle.id, oldest.id]


def test_duplicate_job_id_is_a_conflict_and_changes_nothing(state: StateHarness) -> None:
    job = create(state.store)
    again = make_job(job.id, created_at=9.0, description="impostor")
    with pytest.raises(Conflict):
        run(
            state.store.create_job(
                again, make_sources(job.id, tier1=5), make_targets(job.id, ("sub-z/eastus",))
            )
        )
    assert run(state.store.get_job(job.id)) == job
    assert len(run(state.store.list_sources(job.id))) == 3
    assert "sub-z/eastus" not in {t.target for t in run(state.store.list_targets(job.id))}
    assert [j.id for j in run(state.store.list_jobs())].count(job.id) == 1


def test_unknown_job_is_not_found(state: StateHarness) -> None:
    with pytest.raises(NotFound):
        run(state.store.get_job(new_id()))
    with pytest.raises(NotFound):
        run(state.store.update_job(make_job(new_id(), state=JobState.FAILED)))


def test_update_job_stores_state_and_finish_time(state: StateHarness) -> None:
    job = create(state.store)
    job.state, job.finished_at = JobState.COMPLETED, 1_700_000_500.0
    run(state.store.update_job(job))
    stored = run(state.store.get_job(job.id))
    assert (stored.state, stored.finished_at) == (JobState.COMPLETED, 1_700_000_500.0)
    assert stored == job
    job.state, job.finished_at = JobState.ACTIVE, None
    run(state.store.update_job(job))
    assert run(state.store.get_job(job.id)).finished_at is None


def test_update_job_with_an_expected_revision_is_a_compare_and_set(state: StateHarness) -> None:
    job = create(state.store)
    retried = dataclasses.replace(job, revision=job.revision + 1)
    run(state.store.update_job(retried, expected_revision=job.revision))  # a retry bumps it
    ended = dataclasses.replace(job, state=JobState.FAILED, finished_at=1_700_000_500.0)
    with pytest.raises(PreconditionFailed):  # a worker that read the job before the retry
        run(state.store.update_job(ended, expected_revision=job.revision))
    stored = run(state.store.get_job(job.id))
    assert (stored.state, stored.revision) == (JobState.ACTIVE, job.revision + 1)
    with pytest.raises(NotFound):
        run(state.store.update_job(dataclasses.replace(job, id="job-missing"), expected_revision=0))


def test_items_of_one_job_stay_with_it(state: StateHarness) -> None:
    one = create(state.store)
    two = create(state.store)
    assert {s.job_id for s in run(state.store.list_sources(one.id))} == {one.id}
    assert {t.job_id for t in run(state.store.list_targets(two.id))} == {two.id}
    row = target_row(state.store, one.id, "sub-a/eastus")
    run(state.store.put_target(dataclasses.replace(row, state=TargetState.DONE)))
    assert target_row(state.store, two.id, "sub-a/eastus").state is TargetState.PENDING


# optimistic concurrency


def test_put_target_bumps_the_version_and_persists_every_field(state: StateHarness) -> None:
    job = create(state.store)
    row = target_row(state.store, job.id, "sub-a/westeurope")
    changed = dataclasses.replace(
        row,
        state=TargetState.FAILED,
        source_id="tier1-002",
        copy_id="copy-123",
        failed_phase=FailedPhase.IMAGE,
        error="image creation failed: Boom",
        attempts=3,
        blob_deleted=True,
        lease_owner="w-1",
        lease_until=1_700_000_060.5,
        updated_at=42.25,
    )
    written = run(state.store.put_target(changed))
    assert written.version == row.version + 1
    assert written == dataclasses.replace(changed, version=row.version + 1)
    assert target_row(state.store, job.id, "sub-a/westeurope") == written


def test_listings_of_changes_give_every_row_written_since_the_cursor(
    state: StateHarness,
) -> None:
    """What a worker keeps from listings of changes (later rows replacing earlier ones) is what
    the store holds, whichever instance wrote; a first listing gives every row."""
    job = create(state.store)
    other = state.other()
    targets, target_cursor = run(state.store.list_targets_changed(job.id, 0))
    sources, source_cursor = run(state.store.list_sources_changed(job.id, 0))
    assert targets == run(state.store.list_targets(job.id))
    assert sources == run(state.store.list_sources(job.id))
    kept_targets = {row.target: row for row in targets}
    kept_sources = {row.source_id: row for row in sources}

    for attempts, writer in enumerate([state.store, other, other, state.store], start=1):
        name = "sub-a/eastus" if attempts % 2 else "sub-b/eastus"
        run(writer.put_target(dataclasses.replace(kept_targets[name], attempts=attempts)))
        run(writer.put_source(dataclasses.replace(kept_sources["tier1-001"], error=f"{attempts}")))
        changed, target_cursor = run(state.store.list_targets_changed(job.id, target_cursor))
        kept_targets.update((row.target, row) for row in changed)
        assert kept_targets[name].attempts == attempts
        changed_sources, source_cursor = run(
            state.store.list_sources_changed(job.id, source_cursor)
        )
        kept_sources.update((row.source_id, row) for row in changed_sources)
        assert kept_sources["tier1-001"].error == f"{attempts}"

    assert sorted(kept_targets.values(), key=lambda t: t.target) == run(other.list_targets(job.id))
    assert sorted(kept_sources.values(), key=lambda s: s.source_id) == run(
        other.list_sources(job.id)
    )


def test_put_source_bumps_the_version_and_persists_every_field(state: StateHarness) -> None:
    job = create(state.store)
    row = source_row(state.store, job.id, "tier1-001")
    changed = dataclasses.replace(
        row,
        state=SourceState.COPYING,
        parent_id="tier0",
        progress_bytes=4096,
        deleted=True,
        error="slow",
        lease_owner="w-2",
        lease_until=77.5,
    )
    written = run(state.store.put_source(changed))
    assert written.version == row.version + 1
    assert written == dataclasses.replace(changed, version=row.version + 1)
    assert source_row(state.store, job.id, "tier1-001") == written
    again = run(state.store.put_source(dataclasses.replace(written, state=SourceState.READY)))
    assert again.version == row.version + 2


def test_stale_target_write_is_refused_and_leaves_the_row(state: StateHarness) -> None:
    job = create(state.store)
    row = target_row(state.store, job.id, "sub-a/eastus")
    winner = run(
        state.store.put_target(
            dataclasses.replace(row, state=TargetState.COPYING, lease_owner="w-1")
        )
    )
    with pytest.raises(PreconditionFailed):
        run(
            state.store.put_target(
                dataclasses.replace(row, state=TargetState.FAILED, lease_owner="w-2")
            )
        )
    assert target_row(state.store, job.id, "sub-a/eastus") == winner


def test_stale_source_write_is_refused_and_leaves_the_row(state: StateHarness) -> None:
    job = create(state.store)
    row = source_row(state.store, job.id, "tier0")
    winner = run(state.store.put_source(dataclasses.replace(row, progress_bytes=512)))
    with pytest.raises(PreconditionFailed):
        run(state.store.put_source(dataclasses.replace(row, progress_bytes=1024)))
    with pytest.raises(PreconditionFailed):
        run(
            state.store.put_source(dataclasses.replace(winner, version=winner.version + 5))
        )  # from the future
    assert source_row(state.store, job.id, "tier0") == winner


def test_two_instances_see_each_others_writes(state: StateHarness) -> None:
    first, second = state.store, state.other()
    job = create(first)
    assert run(second.get_job(job.id)) == job

    row_b = target_row(second, job.id, "sub-b/eastus")
    written = run(second.put_target(dataclasses.replace(row_b, state=TargetState.COPIED)))
    assert target_row(first, job.id, "sub-b/eastus") == written

    source = source_row(first, job.id, "tier0")
    run(first.put_source(dataclasses.replace(source, state=SourceState.READY)))
    assert source_row(second, job.id, "tier0").state is SourceState.READY

    run(second.append_log(LogRecord(job.id, 5.0, "info", "job", "from the second")))
    assert [r.message for r in run(first.list_logs(job.id))] == ["from the second"]


def test_two_instances_racing_on_one_row_exactly_one_wins(state: StateHarness) -> None:
    first, second = state.store, state.other()
    job = create(first)
    row_first = target_row(first, job.id, "sub-a/eastus")
    row_second = target_row(second, job.id, "sub-a/eastus")

    async def race() -> list[TargetRow | BaseException]:
        return list(
            await asyncio.gather(
                first.put_target(dataclasses.replace(row_first, lease_owner="w-1")),
                second.put_target(dataclasses.replace(row_second, lease_owner="w-2")),
                return_exceptions=True,
            )
        )

    outcomes = run(race())
    wins = [o for o in outcomes if isinstance(o, TargetRow)]
    losses = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(wins) == 1
    assert len(losses) == 1
    assert isinstance(losses[0], PreconditionFailed)
    assert target_row(first, job.id, "sub-a/eastus") == wins[0]


def test_job_created_by_one_instance_conflicts_in_another(state: StateHarness) -> None:
    job = create(state.store)
    with pytest.raises(Conflict):
        run(state.other().create_job(job, make_sources(job.id), make_targets(job.id)))


# logs


@pytest.fixture
def logged(state: StateHarness) -> tuple[StateStore, str]:
    store = state.store
    job = create(store)
    other = create(store)
    records = [
        LogRecord(job.id, 1.0, "info", "submit", "submitted"),
        LogRecord(job.id, 2.0, "info", "upload", "uploaded"),
        LogRecord(job.id, 3.0, "warning", "copy", "throttled", target="sub-a/eastus"),
        LogRecord(
            job.id,
            4.0,
            "error",
            "copy",
            "copy failed",
            target="sub-b/eastus",
            extra={"code": "CannotVerifyCopySource"},
        ),
        LogRecord(job.id, 5.0, "info", "image", "creating", target="sub-a/eastus"),
        LogRecord(job.id, 6.0, "error", "image", "image failed", target="sub-a/eastus"),
        LogRecord(other.id, 2.5, "error", "copy", "another job's line", target="sub-a/eastus"),
    ]
    for record in records:
        run(store.append_log(record))
    return store, job.id


def _messages(records: list[LogRecord]) -> list[str]:
    return [r.message for r in records]


def test_logs_in_time_order_with_their_fields(logged: tuple[StateStore, str]) -> None:
    store, job_id = logged
    records = run(store.list_logs(job_id))
    assert _messages(records) == [
        "submitted",
        "uploaded",
        "throttled",
        "copy failed",
        "creating",
        "image failed",
    ]
    assert records[3] == LogRecord(
        job_id,
        4.0,
        "error",
        "copy",
        "copy failed",
        target="sub-b/eastus",
        extra={"code": "CannotVerifyCopySource"},
    )


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"step": "copy"}, ["throttled", "copy failed"]),
        ({"step": "cleanup"}, []),
        (
            {"level": "info"},
            ["submitted", "uploaded", "throttled", "copy failed", "creating", "image failed"],
        ),
        ({"level": "warning"}, ["throttled", "copy failed", "image failed"]),
        ({"level": "error"}, ["copy failed", "image failed"]),
        ({"target": "sub-a/eastus"}, ["throttled", "creating", "image failed"]),
        ({"target": "sub-a/eastus", "level": "error"}, ["image failed"]),
        ({"step": "copy", "level": "error"}, ["copy failed"]),
        ({"step": "image", "target": "sub-b/eastus"}, []),
    ],
    ids=lambda v: ",".join(f"{k}={x}" for k, x in v.items()) if isinstance(v, dict) else None,
)
def test_logs_filters(
    logged: tuple[StateStore, str], filters: dict[str, str], expected: list[str]
) -> None:
    store, job_id = logged
    assert _messages(run(store.list_logs(job_id, LogFilter(**filters)))) == expected


def test_a_log_filter_refuses_an_unknown_level() -> None:
    with pytest.raises(InvalidInput, match="Level 'debug' is unknown; use one of info, warning"):
        LogFilter(level="debug")


def test_logs_of_a_job_without_lines_are_empty(state: StateHarness) -> None:
    job = create(state.store)
    assert run(state.store.list_logs(job.id)) == []


# target switches


def test_target_switches(state: StateHarness) -> None:
    suffix = uuid.uuid4().hex[:8]
    a, b, c = (f"sub-{x}-{suffix}/eastus" for x in "abc")

    def ours() -> dict[str, bool]:
        return {k: v for k, v in run(state.store.target_switches()).items() if suffix in k}

    assert ours() == {}
    run(state.store.set_target_switch([a, b], False))
    assert ours() == {a: False, b: False}
    run(state.store.set_target_switch([b, c], True))
    assert ours() == {a: False, b: True, c: True}
    run(state.store.set_target_switch([], False))
    assert ours() == {a: False, b: True, c: True}
    other = {k: v for k, v in run(state.other().target_switches()).items() if suffix in k}
    assert other == {a: False, b: True, c: True}


# secrets


def test_free_text_is_stored_redacted(state: StateHarness) -> None:
    # The last line of defence: whatever error text reaches the store, its SAS does not.
    secret = "SecretSigMarker0123+/abc="
    text = (
        "copy from https%3A%2F%2Fa.blob.core.windows.net%2Fc%2Fb.vhd%3Fsv%3D2024-08-04%26sig%3D"
        + secret.replace("+", "%252B").replace("/", "%252F")
        + f" refused (token sig={secret})"
    )
    job = create(state.store)
    run(
        state.store.put_target(
            dataclasses.replace(target_row(state.store, job.id, "sub-a/eastus"), error=text)
        )
    )
    run(
        state.store.put_source(
            dataclasses.replace(source_row(state.store, job.id, "tier0"), error=text)
        )
    )
    record = LogRecord(job.id, 1.0, "error", "copy", text, extra={"detail": text})
    run(state.store.append_log(record))

    other = state.other()
    stored = [
        target_row(other, job.id, "sub-a/eastus").error,
        source_row(other, job.id, "tier0").error,
        *(f"{r.message} {r.extra}" for r in run(other.list_logs(job.id))),
    ]
    assert all("copy from https" in text for text in stored), stored
    assert not any("SecretSigMarker" in text for text in stored), stored


# gallery versions (issue 11)


def make_publications(job_id: str) -> list[PublicationRow]:
    central = GalleryRef("sub-g", "imagedist-gallery", "golden_gallery")
    return [
        PublicationRow(
            job_id=job_id,
            key=key,
            gallery=GalleryRef(key, "imagedist-gallery", "golden_local")
            if key != "central"
            else central,
            definition="golden",
            version_name="1.0.3",
            region="westeurope",
            regions={"westeurope": RegionStatus(), "eastus": RegionStatus()},
            source_id="tier0" if key == "central" else "central",
            updated_at=1.0,
        )
        for key in ("sub-b", "central", "sub-a")
    ]


def test_publications_are_created_with_the_job_and_listed_by_key(state: StateHarness) -> None:
    job = make_job(new_id(), publish=("images", "gallery"), gallery_version="1.0.3")
    publications = make_publications(job.id)
    run(state.store.create_job(job, make_sources(job.id), make_targets(job.id), publications))

    assert run(state.other().get_job(job.id)) == job  # where it goes, and its version

    listed = run(state.store.list_publications(job.id))
    assert [p.key for p in listed] == ["central", "sub-a", "sub-b"]
    assert listed == sorted(publications, key=lambda p: p.key)
    assert run(state.store.list_publications(new_id())) == []  # another job has none


def test_put_publication_is_a_compare_and_set_of_every_field(state: StateHarness) -> None:
    job = make_job(new_id())
    run(
        state.store.create_job(
            job, make_sources(job.id), make_targets(job.id), make_publications(job.id)
        )
    )
    row = run(state.store.list_publications(job.id))[0]
    changed = dataclasses.replace(
        row,
        state=PublicationState.REPLICATING,
        regions={
            "westeurope": RegionStatus("completed", 100),
            "eastus": RegionStatus("failed", 40, "ReplicationFailed: disk unavailable"),
        },
        error="eastus failed",
        attempts=2,
        lease_owner="w-1",
        lease_until=1_700_000_060.5,
        updated_at=42.25,
    )
    written = run(state.store.put_publication(changed))
    assert written == dataclasses.replace(changed, version=row.version + 1)
    assert run(state.store.list_publications(job.id))[0] == written
    with pytest.raises(PreconditionFailed):  # the row as first read is stale now
        run(state.store.put_publication(dataclasses.replace(row, lease_owner="w-2")))
    assert run(state.store.list_publications(job.id))[0] == written


def test_a_gallery_versions_errors_are_stored_redacted(state: StateHarness) -> None:
    """The version's error and each region's (both quote the platform) lose their SAS."""
    secret = "SecretSigMarker0123+/abc="
    text = f"replication from https://a.blob.core.windows.net/c/b.vhd?sv=2024-08-04&sig={secret}"
    job = make_job(new_id())
    run(
        state.store.create_job(
            job, make_sources(job.id), make_targets(job.id), make_publications(job.id)
        )
    )
    row = run(state.store.list_publications(job.id))[0]
    regions = {"eastus": RegionStatus("failed", 10, text)}
    run(state.store.put_publication(dataclasses.replace(row, error=text, regions=regions)))

    stored = run(state.other().list_publications(job.id))[0]
    texts = [stored.error, stored.regions["eastus"].error]
    assert all("replication from https" in t for t in texts), texts
    assert not any("SecretSigMarker" in t for t in texts), texts


def test_a_write_probe_leaves_nothing_behind(state: StateHarness) -> None:
    """`check` proves it may write to the state store; the probe goes again at once."""
    before = (run(state.store.list_jobs()), run(state.store.target_switches()))
    run(state.store.probe_write())
    run(state.store.probe_write())  # and again: nothing accumulates
    assert (run(state.store.list_jobs()), run(state.store.target_switches())) == before
