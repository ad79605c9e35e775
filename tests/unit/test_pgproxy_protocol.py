"""The PostgreSQL wire-protocol pieces of the fault suite's claim-dropping proxy
(``tests/faults/pgproxy.py``), on hand-built messages."""

from __future__ import annotations

import struct

from tests.faults.pgproxy import (
    CLAIM,
    bind_parameters,
    bind_statement,
    data_row_value,
    decode_id,
    id_column,
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


def test_claim_pattern_matches_the_fetch_but_not_other_updates() -> None:
    fetch = "UPDATE slotfleet_jobs AS j\nSET state = 'running',\n    attempts = j.attempts + 1"
    assert CLAIM.search(fetch)
    assert not CLAIM.search("UPDATE slotfleet_jobs SET state = 'cancelled' WHERE id = $1")
    assert not CLAIM.search("UPDATE slotfleet_workers SET state = 'running'")


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
