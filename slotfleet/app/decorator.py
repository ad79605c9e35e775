"""The ``@job`` decorator: a function plus the defaults of the jobs made from it.

A decorated function stays callable as before (tests and scripts can call it
directly); ``fn.with_kwargs(...)`` makes a :class:`~slotfleet.models.Job` ready to
enqueue. The worker finds the original function through ``__wrapped__``, and by default
runs nothing else: a job naming an undecorated callable (``os:system``) fails.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar, overload

from slotfleet.models.errors import InvalidJobError, describe_validation_error

if TYPE_CHECKING:
    from slotfleet.models.jobs import Job

P = ParamSpec("P")
R = TypeVar("R")

_CHECK_LATER: ContextVar[bool] = ContextVar("slotfleet_job_options_later", default=False)


@contextmanager
def options_checked_later() -> Iterator[None]:
    """Within the block (this thread, this task), ``@job`` checks its options when the
    first job is made from the function (``with_kwargs``), not as it decorates. A worker
    imports its jobs' modules within it: it runs jobs that were checked at enqueue and
    makes none from a decorator unless a job enqueues another, so its task modules need
    not load the pydantic models. Everywhere else a typo in the options fails at import."""
    token = _CHECK_LATER.set(True)
    try:
        yield
    finally:
        _CHECK_LATER.reset(token)


def import_path(func: Callable[..., Any]) -> str:
    """``module:qualname`` of a module-level function; refuse what a worker cannot import."""
    module = getattr(func, "__module__", None)
    qualname = getattr(func, "__qualname__", "")
    if not module or "<" in qualname or module == "__main__":
        raise InvalidJobError(
            f"{qualname or func!r} cannot be a job: define it at module level in an "
            "importable module (not __main__, not inside a function)"
        )
    return f"{module}:{qualname}"


class JobFunction(Generic[P, R]):
    """A function registered as a job, with default options for its jobs. Workers run
    only these by default: the class carries the mark they look for (``__slotfleet_job__``,
    ``slotfleet.worker.executors.functions``)."""

    __slotfleet_job__ = True

    def __init__(self, func: Callable[P, R], options: dict[str, Any]) -> None:
        self.__wrapped__ = func
        self.options = options
        self.path = import_path(func)
        functools.update_wrapper(self, func)
        if not _CHECK_LATER.get():
            make_job(self.path, {}, options)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.__wrapped__(*args, **kwargs)

    def with_kwargs(self, **kwargs: Any) -> Job:
        """A job that calls this function with ``kwargs`` (JSON values only)."""
        return make_job(self.path, kwargs, self.options)

    def with_options(self, **options: Any) -> JobFunction[P, R]:
        """The same function with other job defaults (``queue=``, ``priority=``, ...)."""
        return JobFunction(self.__wrapped__, {**self.options, **options})

    def __repr__(self) -> str:
        return f"<job {self.path}>"


def make_job(path: str, kwargs: dict[str, Any], options: dict[str, Any]) -> Job:
    """Build a validated :class:`Job`, turning a validation failure into one clear line."""
    from pydantic import ValidationError

    from slotfleet.models.jobs import Job

    try:
        return Job.model_validate({**options, "func": path, "kwargs": kwargs})
    except ValidationError as exc:
        raise InvalidJobError(describe_validation_error(exc, f"job {path}")) from None


@overload
def job(func: Callable[P, R], /) -> JobFunction[P, R]: ...
@overload
def job(
    *,
    queue: str = ...,
    priority: int = ...,
    max_attempts: int = ...,
    timeout: float | None = ...,
    unique_key: str | None = ...,
    **options: Any,
) -> Callable[[Callable[P, R]], JobFunction[P, R]]: ...


def job(
    func: Callable[P, R] | None = None, /, **options: Any
) -> JobFunction[P, R] | Callable[[Callable[P, R]], JobFunction[P, R]]:
    """Register a function as a job: ``@job`` or ``@job(queue="emails", max_attempts=3)``.

    Options are :class:`~slotfleet.models.Job` fields and are checked now, so a typo
    fails at import rather than at enqueue; a worker importing its jobs' modules checks
    them when it makes a job from the function (:func:`options_checked_later`).
    """
    if func is not None:
        return JobFunction(func, options)

    def decorate(f: Callable[P, R]) -> JobFunction[P, R]:
        return JobFunction(f, options)

    return decorate
