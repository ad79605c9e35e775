"""Which parameters receive the running job's instance, and what its meta must be.

``instance_params`` is the seed's ``get_function_and_kwargs`` signature check, made
robust: string annotations, names imported only for type checkers, ``Optional`` and
``Annotated`` forms; computed once per function.
"""

from __future__ import annotations

import functools
import typing
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, Optional

import pytest

from slotfleet.models import JobId, JobState, QueuedJob
from slotfleet.models.claimed import ClaimedJob
from slotfleet.models.jobs import MAX_PAYLOAD_BYTES
from slotfleet.worker.executors import Executor
from slotfleet.worker.executors import instance as instance_module
from slotfleet.worker.executors.instance import instance_params, meta_problem

if TYPE_CHECKING:
    import slotfleet


class SpecialJob(QueuedJob):
    """A subclass counts, as in the seed (``issubclass``)."""


def plain(*, context: QueuedJob) -> None: ...


def as_string(*, ctx: QueuedJob) -> None: ...  # a string: this module uses PEP 563


def dotted(*, ctx: slotfleet.QueuedJob) -> None: ...  # ``slotfleet`` only for type checkers


def optional(*, a: QueuedJob | None = None, b: Optional[QueuedJob] = None) -> None: ...  # noqa: UP045


def annotated(*, a: Annotated[QueuedJob, "meta"]) -> None: ...


def forward_inside(*, a: typing.Optional["QueuedJob"] = None) -> None: ...  # noqa: UP045, UP037


def subclass(*, a: SpecialJob) -> None: ...


def not_instances(
    positional: QueuedJob,
    *args: QueuedJob,
    generic: list[str],
    either: QueuedJob | int,
    unknown: NoSuchName,  # type: ignore[name-defined]  # noqa: F821
    plain_int: int,
    **rest: QueuedJob,
) -> None: ...


def several(
    x: int, *, first: QueuedJob, other: str = "", second: QueuedJob | None = None
) -> None: ...


@pytest.mark.parametrize(
    ("func", "expected"),
    [
        (plain, ("context",)),
        (as_string, ("ctx",)),
        (dotted, ("ctx",)),
        (optional, ("a", "b")),
        (annotated, ("a",)),
        (forward_inside, ("a",)),
        (subclass, ("a",)),
        (not_instances, ()),
        (several, ("first", "second")),
    ],
)
def test_keyword_only_parameters_annotated_with_the_instance_type(
    func: Callable[..., Any], expected: tuple[str, ...]
) -> None:
    assert instance_params(func) == expected


def test_decorated_functions_are_inspected_through_functools_wraps() -> None:
    def logged(inner: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(inner)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            return inner(*args, **kwargs)

        return wrapper

    assert instance_params(logged(as_string)) == ("ctx",)


def test_callables_without_a_signature_take_nothing() -> None:
    assert instance_params(print) == ()

    class Unhashable:
        __hash__ = None  # type: ignore[assignment]

        def __call__(self, *, context: QueuedJob) -> None: ...

    assert instance_params(Unhashable()) == ("context",)


def test_each_function_is_inspected_once(monkeypatch: pytest.MonkeyPatch) -> None:
    def fresh(*, context: QueuedJob) -> None: ...

    calls: list[object] = []
    original = instance_module._inspect

    def counting(func: Callable[..., Any]) -> tuple[str, ...]:
        calls.append(func)
        return original(func)

    monkeypatch.setattr(instance_module, "_inspect", counting)
    for _ in range(3):
        assert instance_params(fresh) == ("context",)
    assert calls == [fresh]


def make_job(func: str, **fields: Any) -> ClaimedJob:
    queued = QueuedJob.model_validate(
        {
            "id": JobId(7),
            "func": func,
            "state": JobState.RUNNING,
            "created_at": datetime.now(UTC),
            **fields,
        }
    )
    return ClaimedJob.of(queued)


def test_get_function_and_kwargs_hands_the_job_itself() -> None:
    """The seed's behaviour: the running job under the parameter's name (replacing a
    kwarg of that name); unlike the seed, the job's own kwargs are not modified."""
    job = make_job(
        "tests.seed_tasks:job_with_instance_under_other_names",
        kwargs={"steps": 2, "job": "given"},
    )
    func, kwargs = Executor.get_function_and_kwargs(job)
    assert func.__name__ == "job_with_instance_under_other_names"
    instance = job.instance()
    assert kwargs == {"steps": 2, "job": instance, "also": instance}
    assert kwargs["job"] is instance
    assert job.kwargs == {"steps": 2, "job": "given"}


def test_functions_that_do_not_ask_get_their_kwargs_only() -> None:
    job = make_job("tests.seed_tasks:job_with_kwarg_generic", kwargs={"hello": "world"})
    assert Executor.get_function_and_kwargs(job)[1] == {"hello": "world"}


@pytest.mark.parametrize(
    ("meta", "problem"),
    [
        ({"progress": 0.5, "nested": {"a": [1, 2]}}, None),
        ({"blob": "x" * MAX_PAYLOAD_BYTES}, "meta is 1048588 bytes encoded; the limit is 1048576"),
        ({"when": object()}, "meta must be JSON-serializable"),
        ({1: "a"}, "meta: keys must be strings"),
        ({"nan": float("nan")}, "meta must be JSON-serializable"),
        ({"nul": "a\x00b"}, "meta must not contain NUL characters"),
    ],
)
def test_meta_that_cannot_be_stored_says_why(meta: dict[Any, Any], problem: str | None) -> None:
    found = meta_problem(meta)
    if problem is None:
        assert found is None
    else:
        assert found is not None
        assert found.startswith("the job's meta cannot be stored: ")
        assert problem in found
