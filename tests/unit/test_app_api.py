"""The client API's pure parts: the decorator, references, CLI kwargs parsing."""

from __future__ import annotations

import pytest

from slotfleet.app import job
from slotfleet.app.client import job_id_of
from slotfleet.cli.jobs_cmd import parse_kwargs
from slotfleet.models import InvalidJobError, JobNotFoundError, Reference


@job(queue="emails", max_attempts=3)
def send_email(to: str) -> str:
    return f"sent to {to}"


def test_decorated_function_still_callable_and_makes_jobs() -> None:
    assert send_email("a@b.c") == "sent to a@b.c"
    made = send_email.with_kwargs(to="a@b.c")
    assert made.func == f"{__name__}:send_email"
    assert (made.queue, made.max_attempts, made.kwargs) == ("emails", 3, {"to": "a@b.c"})
    assert send_email.with_options(queue="bulk").with_kwargs(to="x").queue == "bulk"


def test_bad_kwargs_refused_with_one_line() -> None:
    with pytest.raises(InvalidJobError) as info:
        send_email.with_kwargs(to={1, 2})
    assert "JSON-serializable" in str(info.value)
    assert "\n" not in str(info.value)


def test_bad_decorator_options_fail_at_import_time() -> None:
    with pytest.raises(InvalidJobError, match="max_attempts"):
        job(max_attempts=0)(send_email.__wrapped__)


def test_local_functions_cannot_be_jobs() -> None:
    def inner() -> None: ...

    with pytest.raises(InvalidJobError, match="module level"):
        job(inner)


def test_job_id_of() -> None:
    assert job_id_of(Reference(identifier=7)) == 7
    assert job_id_of("12") == 12
    for bad in ("abc", "0", "-3", "1.5"):
        with pytest.raises(JobNotFoundError):
            job_id_of(bad)


def test_parse_kwargs() -> None:
    assert parse_kwargs('{"a": 1}', ["b=2", "c=hello", 'd=["x"]']) == {
        "a": 1,
        "b": 2,
        "c": "hello",
        "d": ["x"],
    }
    for text, pairs in (("[1]", []), ("{bad", []), (None, ["novalue"]), (None, ["1x=2"])):
        with pytest.raises(InvalidJobError):
            parse_kwargs(text, pairs)
