"""The PostgreSQL wire-protocol pieces of the fault suite's claim-dropping proxy
(``tests/faults/pgproxy.py``), on hand-built messages."""

from __future__ import annotations

import struct

from tests.faults.pgproxy import (
    bind_parameters,
    bind_statement,
    data_row_value,
    decode_id,
    id_column,
    is_claim,
    parse_message,
    split_messages,
    startup_parameters,
)


def message(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("!i", len(body) + 4) + body


def test_split_messages_keeps_a_partial_message_for_later() -> None:
    first = message(b"P", b"s1\x00SELECT 1\x00\x00\x00")
    second = message(b"S", b"")
    buffer = bytearray(first + second[:3])
    assert split_messages(buffer) == [(b"P", first[5:])]
    buffer += second[3:]
    assert split_messages(buffer) == [(b"S", b"")]
    assert buffer == bytearray()


def test_parse_and_bind_name_their_statement() -> None:
    assert parse_message(b"_pg3_0\x00UPDATE x\x00\x00\x00") == ("_pg3_0", "UPDATE x")
    assert bind_statement(b"\x00_pg3_0\x00\x00\x00\x00\x00\x00\x00") == "_pg3_0"


def test_bind_parameters_in_text_and_null() -> None:
    body = b"\x00_pg3_1\x00" + struct.pack("!hh", 1, 0) + struct.pack("!h", 3)
    body += struct.pack("!i", 2) + b"fa" + struct.pack("!i", -1) + struct.pack("!i", 3) + b"w01"
    body += struct.pack("!hh", 1, 0)  # result formats
    assert bind_parameters(body) == [b"fa", None, b"w01"]


def test_startup_parameters() -> None:
    body = b"user\x00postgres\x00application_name\x00w01\x00\x00"
    assert startup_parameters(body) == {"user": "postgres", "application_name": "w01"}


def test_a_claim_is_an_update_that_sets_jobs_running() -> None:
    fetch = "UPDATE slotfleet_jobs AS j\nSET state = 'running',\n    attempts = j.attempts + 1"
    assert is_claim(fetch)
    assert is_claim(
        "WITH c AS (SELECT 1) UPDATE slotfleet_jobs j SET attempts = 1, state = 'running'"
    )
    assert not is_claim("UPDATE slotfleet_jobs SET state = 'cancelled' WHERE id = $1")
    assert not is_claim("UPDATE slotfleet_workers SET state = 'running'")
    heartbeat = (
        "UPDATE slotfleet_jobs SET lease_expires_at = now() + $1 "
        "WHERE state = 'running' AND lease_owner = $2"
    )
    assert not is_claim(heartbeat)
    recover = "UPDATE slotfleet_jobs AS j SET state = CASE WHEN x THEN 'failed' END FROM t"
    assert not is_claim(recover)


def row_description(*columns: tuple[str, int]) -> bytes:
    body = struct.pack("!h", len(columns))
    for name, fmt in columns:
        body += name.encode() + b"\x00" + struct.pack("!ihihih", 0, 0, 20, 8, -1, fmt)
    return body


def data_row(*values: bytes | None) -> bytes:
    body = struct.pack("!h", len(values))
    for value in values:
        body += struct.pack("!i", -1) if value is None else struct.pack("!i", len(value)) + value
    return body


def test_the_id_column_is_found_and_decoded_in_text_and_binary() -> None:
    assert id_column(row_description(("queue", 0), ("id", 0))) == (1, 0)
    assert id_column(row_description(("queue", 0))) is None
    row = data_row(b"fa", b"42", None)
    assert data_row_value(row, 1) == b"42"
    assert data_row_value(row, 2) is None
    assert decode_id(b"42", 0) == 42
    assert decode_id((42).to_bytes(8, "big"), 1) == 42


def test_exactly_one_statement_of_the_postgresql_store_is_a_claim() -> None:
    """The proxy must recognise the store's real claim, and nothing else it runs."""
    from slotfleet.store import postgres_sql

    statements = {
        name: value for name, value in vars(postgres_sql).items() if isinstance(value, str)
    }
    claims = [name for name, text in statements.items() if is_claim(text)]
    assert len(claims) == 1, claims
