"""Enqueue payloads (kwargs and meta) that are not plain JSON: each one is either refused
with one clear line (:class:`InvalidJobError`) or accepted and read back exactly from
both stores.

"Exactly" means the same JSON value with the same Python types: a ``float`` stays a
``float`` with the same value, a key stays the same string. Two JSON normalisations are
accepted because JSON has no other spelling for them: tuples come back as lists, and
object key order may change (PostgreSQL's jsonb sorts keys).

Runs against both backends through the parametrized ``store`` fixture; the PostgreSQL
half needs the fixture server (marker ``postgres``).
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from slotfleet.app.decorator import make_job
from slotfleet.models import InvalidJobError, Job
from slotfleet.models.jobs import MAX_PAYLOAD_BYTES, MAX_PAYLOAD_DEPTH
from slotfleet.store import Store

FUNC = "tests.tasks:add"

HYPOTHESIS = settings(
    max_examples=75,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Any code point, lone surrogates and NUL included.
any_text = st.text(st.characters(exclude_categories=()), max_size=20)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | any_text
)
odd_values = st.sampled_from([b"bytes", {1, 2}, object(), complex(1, 2), Ellipsis])
odd_keys = st.integers() | st.booleans() | st.none() | st.floats() | st.tuples(st.integers())


def payloads(keys: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.recursive(
        json_scalars | odd_values,
        lambda inner: (
            st.lists(inner, max_size=4)
            | st.tuples(inner, inner)
            | st.dictionaries(keys, inner, max_size=4)
        ),
        max_leaves=12,
    )


anything = st.dictionaries(any_text | odd_keys, payloads(any_text | odd_keys), max_size=5)
string_keyed = st.dictionaries(any_text, payloads(any_text), max_size=5)


class Mismatch(AssertionError):
    pass


def same_json(got: Any, sent: Any, where: str = "kwargs") -> None:
    """Raise :class:`Mismatch` unless ``got`` is ``sent`` read back (see module doc)."""
    if isinstance(sent, bool) or sent is None or isinstance(sent, str):
        if type(got) is not type(sent) or got != sent:
            raise Mismatch(f"{where}: sent {sent!r}, got {got!r}")
    elif isinstance(sent, int):
        if type(got) is not int or got != sent:
            raise Mismatch(f"{where}: sent int {sent!r}, got {type(got).__name__} {got!r}")
    elif isinstance(sent, float):
        if type(got) is not float or got != sent or math.copysign(1, got) != math.copysign(1, sent):
            raise Mismatch(f"{where}: sent float {sent!r}, got {type(got).__name__} {got!r}")
    elif isinstance(sent, list | tuple):
        if not isinstance(got, list) or len(got) != len(sent):
            raise Mismatch(f"{where}: sent {sent!r}, got {got!r}")
        for i, (g, s) in enumerate(zip(got, sent, strict=True)):
            same_json(g, s, f"{where}[{i}]")
    elif isinstance(sent, dict):
        if not isinstance(got, dict) or sorted(map(repr, got)) != sorted(map(repr, sent)):
            raise Mismatch(f"{where}: sent keys {list(sent)!r}, got keys {list(got or {})!r}")
        for key, value in sent.items():
            same_json(got[key], value, f"{where}[{key!r}]")
    else:
        raise Mismatch(f"{where}: a {type(sent).__name__} was accepted")


def build(kwargs: Any, meta: Any = None) -> Job | InvalidJobError:
    """The job, or the one-line refusal (checked here)."""
    try:
        return make_job(FUNC, kwargs, {} if meta is None else {"meta": meta})
    except InvalidJobError as exc:
        text = str(exc)
        assert text.strip(), "an empty error message"
        assert "\n" not in text, f"a multi-line error: {text!r}"
        assert "\r" not in text, f"a multi-line error: {text!r}"
        assert len(text) < 2000, f"an error of {len(text)} characters"
        return exc


async def round_trip(store: Store, kwargs: Any, meta: Any = None) -> Job | InvalidJobError:
    job = build(kwargs, meta)
    if isinstance(job, InvalidJobError):
        return job
    [queued] = await store.enqueue([job])
    got = await store.get(queued.id)
    assert got is not None
    same_json(got.kwargs, kwargs, "kwargs")
    same_json(got.meta, meta or {}, "meta")
    return job


@HYPOTHESIS
@given(kwargs=anything)
@example(kwargs={"a": {1: "x", "1": "y"}})
@example(kwargs={1: "x"})
async def test_kwargs_are_refused_in_one_line_or_round_trip_exactly(
    store: Store, kwargs: dict[Any, Any]
) -> None:
    await round_trip(store, kwargs)


@HYPOTHESIS
@given(kwargs=string_keyed)
@example(kwargs={"s": "\ud800"})
@example(kwargs={"s": "a\x00b"})
@example(kwargs={"\x00": 1})
async def test_string_keyed_kwargs_are_refused_in_one_line_or_round_trip_exactly(
    store: Store, kwargs: dict[str, Any]
) -> None:
    """The same with string keys everywhere, so the search also covers what lies
    beyond the non-string-key case."""
    await round_trip(store, kwargs)


@HYPOTHESIS
@given(meta=anything)
async def test_meta_is_refused_in_one_line_or_round_trips_exactly(
    store: Store, meta: dict[Any, Any]
) -> None:
    await round_trip(store, {}, meta)


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"nested": {1: "one"}}, id="int-key-inside"),
        pytest.param({"nested": {1: "int", "1": "str"}}, id="colliding-keys-inside"),
        pytest.param({"nested": {None: 1, True: 2}}, id="none-and-bool-keys-inside"),
    ],
)
async def test_non_string_keys_below_the_top_are_refused_or_kept(
    store: Store, kwargs: dict[str, Any]
) -> None:
    """JSON object keys are strings: ``{1: "x"}`` must not quietly become ``{"1": "x"}``,
    and ``{1: a, "1": b}`` must not lose one of its values."""
    await round_trip(store, kwargs)


@pytest.mark.parametrize(
    "value", [1e16, 1e300, 1.7976931348623157e308, 5e-324, -0.0, 123456789.125, 2.0**53]
)
async def test_floats_round_trip_as_the_same_float(store: Store, value: float) -> None:
    await round_trip(store, {"x": value})


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1, 10**100, 0])
async def test_big_integers_round_trip(store: Store, value: int) -> None:
    await round_trip(store, {"x": value})


@pytest.mark.parametrize(
    "text",
    [
        "emoji \U0001f600 and \u200d joiner",
        "line\u2028separator\u2029",
        "\ufeffbom",
        "\ufffe\uffff noncharacters",
        "control \x01\x1f\x7f",
        "combining e\u0301",
        "rtl \u202e override",
        "\U0010ffff",
    ],
)
async def test_odd_but_valid_unicode_round_trips(store: Store, text: str) -> None:
    await round_trip(store, {text: text, "list": [text]}, {"note": text})


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"s": "\ud800"}, "surrogate"),
        ({"\udfff": 1}, "surrogate"),
        ({"s": "a\x00b"}, "NUL"),
        ({"a\x00": 1}, "NUL"),
        ({"x": float("nan")}, "JSON"),
        ({"x": float("inf")}, "JSON"),
        ({"x": b"bytes"}, "JSON"),
        ({"x": {1, 2}}, "JSON"),
        ({"x": object()}, "JSON"),
        ({1: "x"}, "kwargs"),
        ({"x": 10**5000}, "JSON"),
    ],
)
def test_bad_payloads_are_refused_in_one_line(kwargs: dict[Any, Any], words: str) -> None:
    refused = build(kwargs)
    assert isinstance(refused, InvalidJobError), f"accepted {kwargs!r}"
    assert words.lower() in str(refused).lower(), str(refused)


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"d": value}
    return value


async def test_nesting_up_to_the_limit_round_trips(store: Store) -> None:
    await round_trip(store, nested(MAX_PAYLOAD_DEPTH))


@pytest.mark.parametrize("depth", [MAX_PAYLOAD_DEPTH + 1, 10_000, 200_000])
def test_deeper_nesting_is_refused_in_one_line(depth: int) -> None:
    refused = build(nested(depth))
    assert isinstance(refused, InvalidJobError)
    assert "deeper" in str(refused)


def test_self_referencing_payload_is_refused_in_one_line() -> None:
    loop: list[Any] = []
    loop.append(loop)
    refused = build({"loop": loop})
    assert isinstance(refused, InvalidJobError)


async def test_payload_just_under_the_size_limit_round_trips(store: Store) -> None:
    await round_trip(store, {"s": "x" * (MAX_PAYLOAD_BYTES - 100)})


@pytest.mark.parametrize(
    "kwargs",
    [
        {"s": "x" * (MAX_PAYLOAD_BYTES + 1)},
        {"s": "\u00e9" * (MAX_PAYLOAD_BYTES // 2 + 10)},  # 2 bytes each in UTF-8
        {"l": list(range(300_000))},
    ],
)
def test_payload_over_the_size_limit_is_refused_in_one_line(kwargs: dict[str, Any]) -> None:
    refused = build(kwargs)
    assert isinstance(refused, InvalidJobError)
    assert "limit" in str(refused)


@pytest.mark.parametrize("kwargs", [None, [], "text", 5, [("a", 1)]])
def test_kwargs_that_are_not_an_object_are_refused_in_one_line(kwargs: Any) -> None:
    refused = build(kwargs)
    assert isinstance(refused, InvalidJobError)
