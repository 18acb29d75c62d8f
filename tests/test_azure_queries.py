"""Our reader of Table storage query answers: the filter it sends, the entities it reads, and
that against Azurite it lists what the SDK lists, page after page."""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError
from azure.data.tables import EdmType, EntityProperty

from azurite import AzuriteServer, fresh_table
from imagedist._backends.azure.queries import filter_text, query_rows, row_of
from imagedist._backends.azure.transactions import Operation, submit_transaction

from helpers import run

ACCOUNT = "stagingacct"


def test_filter_parameters_become_quoted_literals() -> None:
    since = datetime(2026, 1, 2, 3, 4, 5, 600_000, tzinfo=UTC)
    text = filter_text(
        "PartitionKey eq @pk and RowKey ge @p and Timestamp ge @since",
        {"p": "t:", "pk": "it's", "since": since},
    )
    assert text == (
        "PartitionKey eq 'it''s' and RowKey ge 't:'"
        " and Timestamp ge datetime'2026-01-02T03:04:05.600000Z'"
    )


def test_an_entity_reads_as_plain_values_with_its_etag_and_stamp() -> None:
    row = row_of(
        {
            "odata.etag": 'W/"1"',
            "PartitionKey": "p",
            "RowKey": "r",
            "Timestamp": "2026-01-02T03:04:05.1234567Z",
            "version@odata.type": "Edm.Int64",
            "version": "9007199254740993",
            "lease_until@odata.type": "Edm.Double",
            "lease_until": 5,
            "nan@odata.type": "Edm.Double",
            "nan": "NaN",
            "text": "ü",
            "flag": True,
            "small": 7,
        }
    )
    assert row.etag == 'W/"1"'
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    expected = datetime(2026, 1, 2, 3, 4, 5, 123_456, tzinfo=UTC) - epoch
    assert row.stamp == expected // timedelta(microseconds=1)
    nan = row.fields.pop("nan")
    assert math.isnan(nan)
    assert row.fields == {
        "PartitionKey": "p",
        "RowKey": "r",
        "version": 9007199254740993,
        "lease_until": 5.0,
        "text": "ü",
        "flag": True,
        "small": 7,
    }
    assert isinstance(row.fields["lease_until"], float)
    assert row_of({"PartitionKey": "p", "Timestamp": "2026-01-02T03:04:05Z"}).stamp == (
        datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC) - epoch
    ) // timedelta(microseconds=1)
    with pytest.raises(TypeError):
        row_of({"when@odata.type": "Edm.DateTime", "when": "2026-01-02T03:04:05Z"})


# against Azurite, beside the SDK's own queries


@pytest.fixture
def connection_string(azurite_server: AzuriteServer) -> str:
    return azurite_server.connection_string(ACCOUNT)


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, EntityProperty) else value


def test_a_listing_reads_what_the_sdk_reads_across_pages(connection_string: str) -> None:
    # Azurite, like Azure, answers at most 1,000 entities a page: 1,150 take two.
    async def both() -> tuple[list[Any], list[Any]]:
        async with fresh_table(connection_string, "query") as table:
            for start in range(0, 1_150, 100):
                await submit_transaction(
                    table,
                    [
                        Operation(
                            {
                                "PartitionKey": "job",
                                "RowKey": f"t:{i:05d}",
                                "version": EntityProperty(i, EdmType.INT64),
                                "lease_until": i / 4,
                                "note": f"it's {i} ☃",
                            }
                        )
                        for i in range(start, min(start + 100, 1_150))
                    ],
                )
            await submit_transaction(table, [Operation({"PartitionKey": "job", "RowKey": "u:1"})])
            where = "PartitionKey eq @pk and RowKey ge @lo and RowKey lt @hi"
            parameters = {"pk": "job", "lo": "t:", "hi": "t;"}
            ours = await query_rows(table, where, parameters)
            sdk = [e async for e in table.query_entities(where, parameters=parameters)]
            return (
                [(r.fields, r.etag) for r in ours],
                [({k: _plain(v) for k, v in e.items()}, e.metadata["etag"]) for e in sdk],
            )

    ours, sdk = run(both())
    assert len(ours) == 1_150
    assert ours == sdk


def test_a_listing_since_a_time_reads_only_what_was_written_since(
    connection_string: str,
) -> None:
    async def listed() -> tuple[list[str], list[str]]:
        async with fresh_table(connection_string, "query") as table:
            await submit_transaction(table, [Operation({"PartitionKey": "p", "RowKey": "old"})])
            (old,) = await query_rows(table, "PartitionKey eq @pk", {"pk": "p"})
            # A margin: with one microsecond more, Azurite still matched the older entity
            later = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=old.stamp + 10_000)
            await asyncio.sleep(0.05)
            await submit_transaction(table, [Operation({"PartitionKey": "p", "RowKey": "new"})])
            since = await query_rows(
                table, "PartitionKey eq @pk and Timestamp ge @since", {"pk": "p", "since": later}
            )
            every = await query_rows(table, "PartitionKey eq @pk", {"pk": "p"})
            return [r.fields["RowKey"] for r in since], [r.fields["RowKey"] for r in every]

    assert run(listed()) == (["new"], ["new", "old"])


def test_a_query_of_a_missing_table_fails_with_its_status_and_code(
    connection_string: str,
) -> None:
    async def query() -> None:
        async with fresh_table(connection_string, "query") as table:
            await table.delete_table()
            await query_rows(table, "PartitionKey eq @pk", {"pk": "p"})

    with pytest.raises(HttpResponseError) as refused:
        run(query())
    assert refused.value.status_code == 404
    assert getattr(refused.value, "error_code", None) == "TableNotFound"


def test_rows_read_before_are_kept_until_their_entity_is_written_again(
    connection_string: str,
) -> None:
    """A listing given the rows it read before reuses those whose ETag is unchanged, reads the
    rewritten ones anew, and reads what a listing without them reads."""

    async def listings() -> tuple[list[Any], list[Any], list[Any], list[Any]]:
        async with fresh_table(connection_string, "query") as table:
            first = [Operation({"PartitionKey": "p", "RowKey": k, "n": 1}) for k in "abc"]
            await submit_transaction(table, first)
            known: dict[tuple[str, str], Any] = {}
            before = await query_rows(table, "PartitionKey eq @pk", {"pk": "p"}, known)
            await submit_transaction(
                table, [Operation({"PartitionKey": "p", "RowKey": "b", "n": 2})]
            )
            after = await query_rows(table, "PartitionKey eq @pk", {"pk": "p"}, known)
            fresh = await query_rows(table, "PartitionKey eq @pk", {"pk": "p"})
            return before, after, fresh, list(known.values())

    before, after, fresh, known = run(listings())
    assert [r.fields["n"] for r in after] == [1, 2, 1]
    assert after == fresh  # the same rows as a listing that kept none
    assert after[0] is before[0] and after[2] is before[2]  # unchanged: not read again
    assert after[1] is not before[1] and after[1].etag != before[1].etag
    assert sorted(known, key=lambda r: r.fields["RowKey"]) == after
