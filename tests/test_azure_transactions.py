"""Our codec of the Table service's entity-group transactions: the body it writes, the answers it
reads, and that against Azurite it stores what the SDK stores and fails as the SDK fails."""

from __future__ import annotations

import email.parser
import email.policy
import json
import math
from typing import Any

import pytest
from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ServiceResponseError
from azure.core.pipeline.transport import AioHttpTransport
from azure.data.tables import EdmType, EntityProperty, TableTransactionError, UpdateMode
from azure.data.tables.aio import TableClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from azurite import AzuriteServer, fresh_table
from imagedist._backends.azure.transactions import (
    Operation,
    decode_response,
    encode_request,
    entity_json,
    submit_transaction,
)

from helpers import run

ACCOUNT = "stagingacct"
STALE_ETAG = "W/\"datetime'2000-01-01T00%3A00%3A00.0000000Z'\""


# the body, read back by the standard library's MIME parser


def test_the_body_is_a_changeset_of_puts_the_mime_parser_reads_back() -> None:
    entities: list[dict[str, Any]] = [
        {"PartitionKey": "job", "RowKey": "t:a!2Fb", "n": EntityProperty(7, EdmType.INT64)},
        {"PartitionKey": "job", "RowKey": "it's", "text": "ünï\r\n--changeset", "ok": True},
    ]
    body, content_type = encode_request(
        "https://acct.table.core.windows.net",
        "items",
        [Operation(entities[0], STALE_ETAG), Operation(entities[1])],
        boundary="b1",
    )
    assert content_type == "multipart/mixed; boundary=batch_b1"
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
    )
    (changeset,) = message.iter_parts()
    parts = list(changeset.iter_parts())
    assert len(parts) == 2
    requests = [bytes(part.get_payload(decode=True)) for part in parts]
    first_line = [request.split(b"\r\n", 1)[0] for request in requests]
    assert first_line == [
        b"PUT https://acct.table.core.windows.net/items(PartitionKey='job',RowKey='t%3Aa%212Fb')"
        b" HTTP/1.1",
        b"PUT https://acct.table.core.windows.net/items(PartitionKey='job',RowKey='it%27%27s')"
        b" HTTP/1.1",
    ]
    assert b"If-Match: " + STALE_ETAG.encode() in requests[0]
    assert b"If-Match" not in requests[1]
    for entity, request in zip(entities, requests, strict=True):
        head, payload = request.split(b"\r\n\r\n", 1)
        assert f"Content-Length: {len(payload)}".encode() in head
        assert json.loads(payload) == entity_json(entity)


def test_entity_json_types_properties_as_the_service_reads_them() -> None:
    assert entity_json(
        {
            "PartitionKey": "p",
            "small": 5,
            "big": EntityProperty(2**40, EdmType.INT64),
            "ratio": 0.5,
            "nan": math.nan,
            "flag": False,
            "gone": None,
        }
    ) == {
        "PartitionKey": "p",
        "small": 5,
        "big": str(2**40),
        "big@odata.type": "Edm.Int64",
        "ratio": 0.5,
        "ratio@odata.type": "Edm.Double",
        "nan": "NaN",
        "nan@odata.type": "Edm.Double",
        "flag": False,
    }
    with pytest.raises(TypeError):
        entity_json({"too big for Int32": 2**31})
    with pytest.raises(TypeError):
        entity_json({"unsupported": object()})


# the answers


def _answer(parts: list[tuple[int, str, dict[str, str], str]], newline: str = "\r\n") -> bytes:
    """A transaction's answer as the service writes it: a changeset inside the batch."""
    lines = ["--batchresponse_1", "Content-Type: multipart/mixed; boundary=changesetresponse_2", ""]
    for status, reason, headers, body in parts:
        lines += [
            "--changesetresponse_2",
            "Content-Type: application/http",
            "Content-Transfer-Encoding: binary",
            "",
            f"HTTP/1.1 {status} {reason}",
            *(f"{name}: {value}" for name, value in headers.items()),
            "",
            body,
        ]
    lines += ["--changesetresponse_2--", "--batchresponse_1--", ""]
    return newline.join(lines).encode()


@pytest.mark.parametrize("newline", ["\r\n", "\n"])
def test_answers_are_read_in_order_with_their_status_headers_and_body(newline: str) -> None:
    error = '{"odata.error":{"code":"UpdateConditionNotSatisfied","message":{"value":"1:no"}}}'
    body = _answer(
        [
            (204, "No Content", {"ETag": 'W/"1"', "X-Content-Type-Options": "nosniff"}, ""),
            (412, "Precondition Failed", {"Content-Type": "application/json"}, error),
        ],
        newline,
    )
    parts = decode_response("multipart/mixed; boundary=batchresponse_1", body)
    assert [(p.status, p.reason) for p in parts] == [
        (204, "No Content"),
        (412, "Precondition Failed"),
    ]
    assert parts[0].headers["etag"] == 'W/"1"' and parts[0].body == b""
    assert json.loads(parts[1].body) == json.loads(error)


def test_answers_directly_in_the_batch_are_read_too() -> None:
    body = (
        b"--batchresponse_1\r\nContent-Type: application/http\r\n\r\n"
        b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n\r\n{}\r\n"
        b"--batchresponse_1--\r\n"
    )
    (part,) = decode_response('multipart/mixed; boundary="batchresponse_1"', body)
    assert (part.status, part.body) == (400, b"{}")


def test_lines_before_an_answers_status_line_are_skipped() -> None:
    body = (
        b"--batchresponse_1\r\nContent-Type: application/http\r\n\r\n"
        b"changesetresponse_2\r\nHTTP/1.1 400 Bad Request\r\n\r\n{}\r\n"
        b"--batchresponse_1--\r\n"
    )
    (part,) = decode_response("multipart/mixed; boundary=batchresponse_1", body)
    assert (part.status, part.reason, part.body) == (400, "Bad Request", b"{}")


def test_an_answer_without_a_boundary_or_a_status_line_is_an_error() -> None:
    with pytest.raises(ValueError, match="boundary"):
        decode_response("application/json", b"{}")
    with pytest.raises(ValueError, match="status line"):
        decode_response(
            "multipart/mixed; boundary=b",
            b"--b\r\nContent-Type: application/http\r\n\r\nnot http\r\n--b--",
        )


# against Azurite, beside the SDK's own transactions


@pytest.fixture
def connection_string(azurite_server: AzuriteServer) -> str:
    return azurite_server.connection_string(ACCOUNT)


# Property values as the state store writes them: text of any characters, ints, flags.
_TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)
_VALUES = st.one_of(
    _TEXT,
    st.booleans(),
    st.integers(-(2**31), 2**31 - 1),
    st.integers(-(2**63), 2**63 - 1).map(lambda n: EntityProperty(n, EdmType.INT64)),
    st.floats(allow_nan=False, allow_infinity=False),
)
_NAMES = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,20}", fullmatch=True).filter(
    lambda name: name not in ("PartitionKey", "RowKey", "Timestamp")
)
# Keys as the state store makes them: a prefix, then escape_key's characters. (A quote, which a
# point operation doubles, is tested above on the body alone: Azurite misreads a key holding "',"
# from the SDK's transactions as from ours, and escape_key never leaves one in a key.)
_KEYS = st.text("ABCXYZabcxyz0189-_.:@+=,!", max_size=30).map(lambda key: f"t:{key}")


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rows=st.lists(
        st.tuples(_KEYS, st.dictionaries(_NAMES, _VALUES, max_size=6)),
        min_size=1,
        max_size=5,
        unique_by=lambda row: row[0],
    )
)
def test_what_a_transaction_writes_reads_back_as_given(
    connection_string: str, rows: list[tuple[str, dict[str, Any]]]
) -> None:
    async def write_and_read() -> list[dict[str, Any]]:
        async with fresh_table(connection_string, "codec") as client:
            entities = [{"PartitionKey": "p", "RowKey": key, **props} for key, props in rows]
            metas = await submit_transaction(client, [Operation(e) for e in entities])
            read = [await client.get_entity("p", key) for key, _ in rows]
            assert [m["etag"] for m in metas] == [e.metadata["etag"] for e in read]
            # a second transaction, conditional on the ETags the first returned, is applied too
            await submit_transaction(
                client, [Operation(e, m["etag"]) for e, m in zip(entities, metas, strict=True)]
            )
            return [dict(entity) for entity in read]

    expected = [{"PartitionKey": "p", "RowKey": key, **props} for key, props in rows]
    assert run(write_and_read()) == [_as_read(entity) for entity in expected]


def _as_read(entity: dict[str, Any]) -> dict[str, Any]:
    """What the SDK gives back for a written entity (Int64 as an EntityProperty, a whole float as
    a float)."""
    return {
        name: float(value) if isinstance(value, float) else value for name, value in entity.items()
    }


def _sdk_update(entity: dict[str, Any], etag: str) -> Any:
    return (
        "update",
        entity,
        {
            "mode": UpdateMode.REPLACE,
            "etag": etag,
            "match_condition": MatchConditions.IfNotModified,
        },
    )


def _failure(exc: HttpResponseError) -> tuple[type[BaseException], int | None, str, str, int]:
    """What the state store reads from a failure: kind, status, code, message's first line,
    index."""
    first_line = str(exc.message).splitlines()[0]
    code = str(getattr(exc, "error_code", None))
    return type(exc), exc.status_code, code, first_line, getattr(exc, "index", -1)


def test_a_stale_etag_fails_as_the_sdk_fails_naming_the_operation(
    connection_string: str,
) -> None:
    async def both() -> list[tuple[type[BaseException], int | None, str, str, int]]:
        async with fresh_table(connection_string, "codec") as client:
            entities = [{"PartitionKey": "p", "RowKey": f"r{i}", "n": i} for i in range(3)]
            metas = await submit_transaction(client, [Operation(e) for e in entities])
            etags = [metas[0]["etag"], STALE_ETAG, metas[2]["etag"]]
            failures = []
            with pytest.raises(TableTransactionError) as ours:
                await submit_transaction(
                    client, [Operation(e, t) for e, t in zip(entities, etags, strict=True)]
                )
            failures.append(_failure(ours.value))
            with pytest.raises(TableTransactionError) as sdk:
                await client.submit_transaction(
                    [_sdk_update(e, t) for e, t in zip(entities, etags, strict=True)]
                )
            failures.append(_failure(sdk.value))
            return failures

    ours, sdk = run(both())
    assert ours == sdk
    assert ours[1:3] == (412, "UpdateConditionNotSatisfied") and ours[4] == 1


@pytest.mark.parametrize("case", ["missing table", "two writes of one entity"])
def test_a_refused_transaction_fails_as_the_sdk_fails(connection_string: str, case: str) -> None:
    async def both() -> list[tuple[type[BaseException], int | None, str, str, int]]:
        async with fresh_table(connection_string, "codec") as client:
            if case == "missing table":
                await client.delete_table()
                entities = [{"PartitionKey": "p", "RowKey": "a"}]
            else:
                entities = [
                    {"PartitionKey": "p", "RowKey": "a"},
                    {"PartitionKey": "p", "RowKey": "a"},
                ]
            failures = []
            with pytest.raises(HttpResponseError) as ours:
                await submit_transaction(client, [Operation(e) for e in entities])
            failures.append(_failure(ours.value))
            with pytest.raises(HttpResponseError) as sdk:
                await client.submit_transaction(
                    [("upsert", e, {"mode": UpdateMode.REPLACE}) for e in entities]
                )
            failures.append(_failure(sdk.value))
            return failures

    ours, sdk = run(both())
    # the kind may differ (the SDK names some refusals by a subclass); what the store reads not
    assert ours[1:] == sdk[1:]
    assert issubclass(sdk[0], ours[0]) or issubclass(ours[0], sdk[0])


def test_a_changeset_over_the_limit_is_refused_naming_the_first_operation(
    connection_string: str,
) -> None:
    # Azurite writes the changeset's name before the status line of this refusal, which the
    # SDK's own parser cannot read (http.client.BadStatusLine): ours skips to the status line.
    async def submit() -> None:
        async with fresh_table(connection_string, "codec") as client:
            entities = [{"PartitionKey": "p", "RowKey": f"r{i}"} for i in range(101)]
            await submit_transaction(client, [Operation(e) for e in entities])

    with pytest.raises(TableTransactionError) as refused:
        run(submit())
    assert refused.value.status_code == 400
    assert getattr(refused.value, "error_code", None) == "InvalidInput"
    assert refused.value.index == 0


class _DropsFirstAnswers(AioHttpTransport):  # type: ignore[misc]  # azure-core exports it untyped
    """azure-core's transport, losing the answer to the first ``drops`` requests it sends (after
    sending them), as a connection the server closed would."""

    def __init__(self, drops: int) -> None:
        super().__init__()
        self.drops = drops

    async def send(self, request: Any, **kwargs: Any) -> Any:
        response = await super().send(request, **kwargs)
        if self.drops:
            self.drops -= 1
            response.internal_response.close()  # the aiohttp response: its connection goes
            raise ServiceResponseError("Server disconnected")
        return response


def test_a_transaction_whose_answer_was_lost_is_sent_again(connection_string: str) -> None:
    # azure-core retries a POST only on 500, 503 and 504; a transaction goes again on a lost
    # answer, as a PUT would (replacing twice what the first attempt wrote changes nothing).
    async def submit() -> list[str]:
        async with fresh_table(connection_string, "codec") as created:
            name = created.table_name
        transport = _DropsFirstAnswers(drops=1)
        async with TableClient.from_connection_string(
            connection_string, name, transport=transport, retry_backoff_factor=0.01
        ) as table:
            await submit_transaction(table, [Operation({"PartitionKey": "p", "RowKey": "r"})])
            return [e["RowKey"] async for e in table.list_entities()]

    assert run(submit()) == ["r"]
