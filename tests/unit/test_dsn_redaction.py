"""Scrubbing a DSN's password out of messages (``slotfleet.store.dsn``)."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import unquote

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from slotfleet.models import SlotfleetError
from slotfleet.store import open_store
from slotfleet.store.dsn import redact_dsn, scrub


def quoted(pw: str) -> str:
    """``pw`` as a quoted libpq keyword value."""
    return "'" + pw.replace("\\", "\\\\").replace("'", "\\'") + "'"


#: Malformed DSNs whose libpq parse error quotes the DSN, or a token of it: password ->
#: (DSN, what the password is in it).
SHAPES: tuple[Callable[[str], tuple[str, str]], ...] = (
    lambda pw: (f"postgresql://app:{pw}@[::1/jobs", pw),  # the whole DSN
    lambda pw: (f"postgresql://app:{pw} x@db/jobs", f"{pw} x"),  # 'unexpected spaces'
    lambda pw: (f"postgresql://app:{pw}%zz@db/jobs", f"{pw}%zz"),  # 'invalid percent-...'
    lambda pw: (f"host=db password={quoted(pw)} port=x", pw),
    lambda pw: (f"postgresql://app:{pw}@db/jobs?bogus=1", pw),
)


@pytest.mark.parametrize("shape", range(len(SHAPES)))
def test_the_store_error_of_a_malformed_dsn_masks_its_password(shape: int) -> None:
    dsn, _ = SHAPES[shape]("Sekrit-Pw-5511")
    try:
        open_store(dsn)
    except SlotfleetError as exc:
        message = str(exc)
    else:
        message = "accepted: " + redact_dsn(dsn)
    assert "Sekrit-Pw-5511" not in message


@given(
    st.text(
        alphabet=st.characters(codec="ascii", exclude_characters="\x00/?#[]*"),  # * is the mask
        min_size=1,
        max_size=40,
    )
)
@example("p@ss:w@rd")
@example("%41bc")
def test_no_form_of_the_password_survives(pw: str) -> None:
    """Whatever the password, a message quoting the DSN, the password or its
    percent-decoded form keeps none of them."""
    for shape in SHAPES:
        dsn, password = shape(pw)
        decoded = unquote(password)
        text = f"bad: {dsn} | token: {password} | decoded: {decoded}"
        scrubbed = scrub(text, dsn)
        assert password not in scrubbed
        assert decoded not in scrubbed


def test_redact_dsn_keeps_what_helps_and_masks_the_password() -> None:
    assert redact_dsn("postgresql://app:s3cret@db:5432/jobs") == "postgresql://app:***@db:5432/jobs"
    assert redact_dsn("postgresql://app@db/jobs") == "postgresql://app@db/jobs"
    assert redact_dsn("sqlite:///var/lib/jobs.db") == "sqlite:///var/lib/jobs.db"
    assert redact_dsn("host=db password='a b' user=x") == "host=db password=*** user=x"
    # credentials of any URL in any message, DSN known or not
    assert scrub("see postgres://u:pw@h/x and password=pw2") == (
        "see postgres://u:***@h/x and password=***"
    )
