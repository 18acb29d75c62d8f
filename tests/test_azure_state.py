"""The Azure Table state store against Azurite: what the contract suite cannot say.

Key escaping, races between two processes' adapters, batching of large jobs, log order across
instances, and that no account key ever reaches an exception message.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from azure.data.tables.aio import TableClient
from hypothesis import given
from hypothesis import strategies as st

from azurite import AzuriteServer
from imagedist._backends.azure import state as state_module
from imagedist._backends.azure import transactions
from imagedist._backends.azure.state import (
    MAX_TEXT,
    AzureTableStateStore,
    escape_key,
    unescape_key,
)
from imagedist._domain import (
    BlobRef,
    Job,
    LogFilter,
    LogRecord,
    OsType,
    SourceKind,
    SourceRow,
    TargetRow,
    TargetState,
)
from imagedist._exceptions import (
    AuthFailed,
    ImagedistError,
    InvalidInput,
    NotFound,
    PreconditionFailed,
)

from helpers import run

PREFIX = "adapter"
ACCOUNT = "stagingacct"


@pytest.fixture
def server(azurite_server: AzuriteServer) -> AzuriteServer:
    return azurite_server


@pytest.fixture
def stores(server: AzuriteServer) -> Iterator[list[AzureTableStateStore]]:
    """Two adapters on the same tables, as two worker processes would build them."""
    connection_string = server.connection_string(ACCOUNT)
    opened = [AzureTableStateStore(connection_string, table_prefix=PREFIX) for _ in range(2)]
    yield opened
    for store in opened:
        run(store.aclose())


def new_id() -> str:
    return f"job-{uuid.uuid4().hex[:12]}"


def make_job(job_id: str) -> Job:
    return Job(job_id, "golden", OsType.LINUX, "/tmp/golden.vhd", 8 << 30, 1_700_000_000.0)


def make_target(job_id: str, name: str) -> TargetRow:
    return TargetRow(
        job_id=job_id,
        target=name,
        subscription="sub",
        region="eastus",
        blob=BlobRef("acct", "imagedist", f"jobs/{job_id}/golden.vhd"),
        resource_group="rg",
        image_name="golden",
    )


def tier0(job_id: str) -> SourceRow:
    return SourceRow(job_id, "tier0", SourceKind.TIER0, BlobRef("stagingacct", "c", "golden.vhd"))


# key escaping


@given(st.text())
def test_escape_key_round_trips_and_yields_a_legal_key(text: str) -> None:
    key = escape_key(text)
    assert unescape_key(key) == text
    assert not set(key) & set("/\\#?%'~")
    assert all(0x20 < ord(c) < 0x7F for c in key)


def test_target_names_with_reserved_characters_round_trip(
    stores: list[AzureTableStateStore],
) -> None:
    store, other = stores
    names = [
        "sub-a/eastus",
        "sub#1/west?europe",
        "back\\slash/region",
        "per%cent/it's",
        "tab\tand\x7fcontrol/ünïcödé ☃",
        "tilde~/!bang",
    ]
    job = make_job(new_id())
    run(store.create_job(job, [tier0(job.id)], [make_target(job.id, n) for n in names]))

    listed = run(other.list_targets(job.id))
    assert [t.target for t in listed] == sorted(names)
    for row in listed:  # point operations (read, conditional replace) work on every key
        written = run(other.put_target(dataclasses.replace(row, state=TargetState.COPYING)))
        assert written.version == row.version + 1
    assert {t.target: t.state for t in run(store.list_targets(job.id))} == dict.fromkeys(
        names, TargetState.COPYING
    )

    suffix = uuid.uuid4().hex[:8]
    switch_names = [f"{n}-{suffix}" for n in names]
    run(store.set_target_switch(switch_names, False))
    switches = run(other.target_switches())
    assert {n: switches[n] for n in switch_names} == dict.fromkeys(switch_names, False)


# optimistic concurrency


@pytest.mark.parametrize("cached", [True, False], ids=["etag-cached", "etag-read"])
def test_many_racing_writers_on_two_instances_exactly_one_wins(
    server: AzuriteServer, stores: list[AzureTableStateStore], cached: bool
) -> None:
    first, second = stores
    job = make_job(new_id())
    run(first.create_job(job, [tier0(job.id)], [make_target(job.id, "sub-a/eastus")]))
    if cached:  # each instance remembers the row's ETag from its own read
        rows = [run(first.list_targets(job.id))[0], run(second.list_targets(job.id))[0]]
        racers = [first, second]
    else:  # fresh instances: each must read the ETag before its conditional write
        rows = [run(first.list_targets(job.id))[0]] * 2
        connection_string = server.connection_string(ACCOUNT)
        racers = [AzureTableStateStore(connection_string, table_prefix=PREFIX) for _ in range(2)]

    async def race() -> list[TargetRow | BaseException]:
        return await asyncio.gather(
            *(
                racers[i % 2].put_target(dataclasses.replace(rows[i % 2], lease_owner=f"w-{i}"))
                for i in range(20)
            ),
            return_exceptions=True,
        )

    try:
        outcomes = run(race())
    finally:
        if not cached:
            for store in racers:
                run(store.aclose())
    wins = [o for o in outcomes if isinstance(o, TargetRow)]
    losses = [o for o in outcomes if not isinstance(o, TargetRow)]
    assert len(wins) == 1, outcomes
    assert len(losses) == 19
    assert all(isinstance(o, PreconditionFailed) for o in losses), losses
    assert run(second.list_targets(job.id)) == wins
    assert wins[0].version == rows[0].version + 1


def test_stale_cached_etag_is_refused_and_a_fresh_read_succeeds(
    stores: list[AzureTableStateStore],
) -> None:
    first, second = stores
    job = make_job(new_id())
    run(first.create_job(job, [tier0(job.id)], [make_target(job.id, "sub-a/eastus")]))
    row = run(first.list_targets(job.id))[0]
    moved = run(second.put_target(dataclasses.replace(row, attempts=1)))
    with pytest.raises(PreconditionFailed):
        run(first.put_target(dataclasses.replace(row, attempts=2)))  # first's cached ETag is stale
    again = run(
        first.put_target(dataclasses.replace(moved, attempts=3))
    )  # the winner's row, read afresh
    assert again.version == row.version + 2
    assert run(second.list_targets(job.id)) == [again]


def test_put_of_a_missing_row_is_a_precondition_failure(
    stores: list[AzureTableStateStore],
) -> None:
    with pytest.raises(PreconditionFailed):
        run(stores[0].put_target(make_target(new_id(), "sub-a/eastus")))


def test_writes_of_one_job_go_together_and_a_stale_one_fails_alone(
    stores: list[AzureTableStateStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = stores
    job = make_job(new_id())
    names = [f"sub-a/region{i}" for i in range(10)]
    run(first.create_job(job, [tier0(job.id)], [make_target(job.id, n) for n in names]))
    rows = run(first.list_targets(job.id))  # first remembers every row's ETag
    moved = run(second.put_target(dataclasses.replace(rows[3], attempts=7)))
    sent: list[str] = []
    original_update = TableClient.update_entity
    original_submit = transactions.submit_transaction

    async def update_entity(self: TableClient, *args: Any, **kwargs: Any) -> Any:
        sent.append("update_entity")
        return await original_update(self, *args, **kwargs)

    async def submit_transaction(table: TableClient, operations: Any) -> Any:
        sent.append("submit_transaction")
        return await original_submit(table, operations)

    monkeypatch.setattr(TableClient, "update_entity", update_entity)
    monkeypatch.setattr(transactions, "submit_transaction", submit_transaction)

    async def write_all() -> list[TargetRow | BaseException]:
        return await asyncio.gather(
            *(first.put_target(dataclasses.replace(row, lease_owner="w-1")) for row in rows),
            return_exceptions=True,
        )

    outcomes = run(write_all())
    assert [type(o) for o in outcomes] == [TargetRow] * 3 + [PreconditionFailed] + [TargetRow] * 6
    assert sent == ["submit_transaction"] * 2  # refused as a whole, sent again without it
    stored = {row.target: row for row in run(second.list_targets(job.id))}
    assert stored[names[3]] == moved
    for row, outcome in zip(rows, outcomes, strict=True):
        if isinstance(outcome, TargetRow):
            assert stored[row.target] == outcome
            assert outcome.lease_owner == "w-1" and outcome.version == row.version + 1


# listings of what changed


def test_a_listing_of_changes_reads_what_was_written_since_and_all_now_and_then(
    stores: list[AzureTableStateStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, other = stores
    monkeypatch.setattr(state_module, "CHANGE_OVERLAP_SECONDS", 0.0)
    job = make_job(new_id())
    names = [f"sub-a/region{i}" for i in range(5)]
    run(store.create_job(job, [tier0(job.id)], [make_target(job.id, n) for n in names]))
    rows, cursor = run(store.list_targets_changed(job.id, 0))
    assert [row.target for row in rows] == names

    first = run(other.put_target(dataclasses.replace(rows[1], attempts=1)))
    changed, cursor = run(store.list_targets_changed(job.id, cursor))
    assert first in changed
    second = run(other.put_target(dataclasses.replace(rows[3], attempts=2)))
    changed, cursor = run(store.list_targets_changed(job.id, cursor))
    assert changed == [first, second]  # the newest stamp seen comes again, nothing older

    monkeypatch.setattr(state_module, "FULL_LISTING_SECONDS", 0.0)
    everything, _ = run(store.list_targets_changed(job.id, cursor))
    assert everything == run(other.list_targets(job.id))


# batching, sizes


def test_create_job_with_250_targets_batches_and_lists_them_sorted(
    stores: list[AzureTableStateStore],
) -> None:
    store, other = stores
    job = make_job(new_id())
    names = [f"sub-{i % 17:02d}/region-{i:03d}" for i in range(250)]
    targets = [make_target(job.id, n) for n in reversed(names)]
    sources = [tier0(job.id)] + [
        SourceRow(job.id, f"tier1-{i:03d}", SourceKind.TIER1, BlobRef("s", "c", f"t{i}.vhd"))
        for i in range(120, 0, -1)
    ]
    run(store.create_job(job, sources, targets))

    listed = run(other.list_targets(job.id))
    assert [t.target for t in listed] == sorted(names)
    assert listed == sorted(targets, key=lambda t: t.target)
    assert run(other.list_sources(job.id)) == sorted(sources, key=lambda s: s.source_id)


def test_failed_create_job_leaves_nothing_behind(stores: list[AzureTableStateStore]) -> None:
    store, _ = stores
    job = make_job(new_id())
    twice = [make_target(job.id, "sub-a/eastus")] * 2  # one entity twice in one batch: refused
    with pytest.raises(ImagedistError):
        run(store.create_job(job, [tier0(job.id)], twice))
    with pytest.raises(NotFound):
        run(store.get_job(job.id))
    run(store.create_job(job, [tier0(job.id)], twice[:1]))  # the id is free again
    assert len(run(store.list_targets(job.id))) == 1


def test_oversized_error_and_message_are_truncated_not_refused(
    stores: list[AzureTableStateStore],
) -> None:
    store, _ = stores
    job = make_job(new_id())
    run(store.create_job(job, [tier0(job.id)], [make_target(job.id, "sub-a/eastus")]))
    row = run(store.list_targets(job.id))[0]
    written = run(store.put_target(dataclasses.replace(row, error="x" * 200_000)))
    stored = run(store.list_targets(job.id))[0]
    assert stored == written
    assert len(stored.error) <= MAX_TEXT
    assert stored.error.startswith("x" * 1000)

    run(store.append_log(LogRecord(job.id, 1.0, "error", "copy", "é" * 100_000, extra={"k": "v"})))
    [record] = run(store.list_logs(job.id))
    assert len(record.message) <= MAX_TEXT
    assert record.extra == {"k": "v"}


# logs


def test_logs_of_two_instances_interleave_in_time_order(
    stores: list[AzureTableStateStore],
) -> None:
    first, second = stores
    job = make_job(new_id())
    run(first.create_job(job, [tier0(job.id)], []))
    times = [1_700_000_000.0 + i * 0.25 for i in range(40)]
    shuffled = times[1::2] + times[0::2]  # appended out of order, from both instances at once

    async def append_all() -> None:
        await asyncio.gather(
            *(
                (first if i % 2 else second).append_log(
                    LogRecord(job.id, ts, "info", "copy", f"line {ts}")
                )
                for i, ts in enumerate(shuffled)
            )
        )

    run(append_all())
    for store in stores:
        assert [r.ts for r in run(store.list_logs(job.id))] == times

    # equal timestamps from one instance keep their order
    run(first.append_log(LogRecord(job.id, 2e9, "info", "job", "a")))
    run(first.append_log(LogRecord(job.id, 2e9, "info", "job", "b")))
    assert [r.message for r in run(second.list_logs(job.id, LogFilter(step="job")))] == ["a", "b"]


def test_log_lines_go_in_batches_and_are_written_when_the_store_closes(
    stores: list[AzureTableStateStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = stores
    job = make_job(new_id())
    run(first.create_job(job, [tier0(job.id)], []))
    sent: list[str] = []
    original = transactions.submit_transaction

    async def counting(table: TableClient, operations: Any) -> Any:
        sent.append(table.table_name)
        return await original(table, operations)

    monkeypatch.setattr(transactions, "submit_transaction", counting)

    async def append_and_close() -> None:
        for i in range(250):
            await first.append_log(LogRecord(job.id, 1_700_000_000.0 + i, "info", "copy", f"{i}"))
        await first.aclose()

    run(append_and_close())
    assert sent == [f"{PREFIX}logs"] * 3  # 100 + 100 + 50
    assert [r.message for r in run(second.list_logs(job.id))] == [str(i) for i in range(250)]


# credentials and secrets


def test_a_wrong_key_is_auth_failed_and_no_key_leaks(server: AzuriteServer) -> None:
    real_key = server.key(ACCOUNT)
    wrong_key = "d3Jvbmcta2V5" * 7 + "AAAA"
    connection_string = server.connection_string(ACCOUNT).replace(real_key, wrong_key)
    store = AzureTableStateStore(
        connection_string, table_prefix=PREFIX, client_kwargs={"retry_total": 0}
    )
    try:
        with pytest.raises(AuthFailed) as caught:
            run(store.get_job(new_id()))
    finally:
        run(store.aclose())

    chain: list[BaseException] = []
    exc: BaseException | None = caught.value
    while exc is not None and exc not in chain:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    for link in chain:
        text = f"{link}\n{link!r}\n{link.args!r}"
        assert real_key not in text
        assert wrong_key not in text
    assert real_key not in str(caught.value) and wrong_key not in str(caught.value)


def test_a_malformed_connection_string_is_invalid_input_without_the_string() -> None:
    secret = "c2VjcmV0LWtleS1ub3QtdG8tbGVhaw=="
    with pytest.raises(InvalidInput) as caught:
        AzureTableStateStore(f"AccountKey={secret};NoEndpointHere")
    assert secret not in str(caught.value)


def test_an_endpoint_without_a_credential_or_a_bad_prefix_is_invalid_input() -> None:
    with pytest.raises(InvalidInput):
        AzureTableStateStore("https://acct.table.core.windows.net")
    with pytest.raises(InvalidInput):
        AzureTableStateStore("UseDevelopmentStorage=true", table_prefix="bad-prefix")
    with pytest.raises(InvalidInput):
        AzureTableStateStore("UseDevelopmentStorage=true", table_prefix="9lives")


# event loops


def test_one_store_serves_several_event_loops_and_one_long_one(
    stores: list[AzureTableStateStore],
) -> None:
    store, _ = stores
    job = make_job(new_id())
    run(store.create_job(job, [tier0(job.id)], [make_target(job.id, "sub-a/eastus")]))

    async def in_one_loop() -> int:
        row = (await store.list_targets(job.id))[0]
        for _ in range(5):
            row = await store.put_target(dataclasses.replace(row, attempts=row.attempts + 1))
        return row.attempts

    assert run(in_one_loop()) == 5
    assert run(store.get_job(job.id)) == job  # a new loop after the last one closed


# reads create nothing


def test_reads_of_a_store_never_written_are_empty_and_create_no_table(
    server: AzuriteServer,
) -> None:
    prefix = f"fresh{uuid.uuid4().hex[:8]}"
    store = AzureTableStateStore(server.connection_string(ACCOUNT), table_prefix=prefix)

    async def reads() -> tuple[list[Job], list[LogRecord], dict[str, bool], bool]:
        with pytest.raises(NotFound):
            await store.get_job("job-unknown")
        assert await store.list_targets("job-unknown") == []
        assert await store.list_sources("job-unknown") == []
        found = (
            await store.list_jobs(),
            await store.list_logs("job-unknown"),
            await store.target_switches(),
            await store.is_ready(),
        )
        await store.aclose()
        return found

    assert run(reads()) == ([], [], {}, False)  # is_ready: no table was created by a read
