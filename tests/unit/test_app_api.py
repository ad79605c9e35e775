"""The client API's pure parts: the decorator, references, CLI kwargs parsing."""

from __future__ import annotations

import subprocess
import sys

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


def test_a_worker_checks_decorator_options_when_a_job_is_made_from_them() -> None:
    """A worker imports its task modules with the check deferred (they load no pydantic);
    the options are still checked, by the first ``with_kwargs``. Outside the block the
    check is at decoration again. A fresh process, to see what it loads."""
    code = (
        "import sys\n"
        "from slotfleet.app.decorator import options_checked_later\n"
        "from slotfleet import job\n"
        "def f(): ...\n"
        "f.__module__ = 'tasks'\n"
        "with options_checked_later():\n"
        "    bad = job(max_attempts=0)(f)\n"
        "print(any(m.startswith('pydantic') for m in sys.modules))\n"
        "for attempt in (bad.with_kwargs, lambda: job(max_attempts=0)(f)):\n"
        "    try:\n"
        "        attempt()\n"
        "    except Exception as exc:\n"
        "        print(type(exc).__name__, exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout.splitlines()
    assert out[0] == "False"
    assert out[1].startswith("InvalidJobError job tasks:f: max_attempts")
    assert out[2].startswith("InvalidJobError job tasks:f: max_attempts")
