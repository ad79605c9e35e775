"""Worker-side queue settings and the figures workers and stores report about queues,
as plain frozen dataclasses: a worker imports no pydantic to read its settings, beat
its heartbeat or look at its queues (issue 14: a worker's memory and start-up).

:class:`QueueSettings` is what one worker needs to serve one queue. The Kubernetes
``Queue`` resource (``slotfleet.models.resource``) carries the same settings for a
whole fleet; the worker never needs to know which of the two it was given. The bounds of
each setting are declared once, as ``annotated_types`` metadata on the types below
(:data:`Concurrency`, :data:`PollingInterval`, the fields of :class:`RateLimit`):
pydantic enforces them in the CRD's models and writes them into its schema, and
:func:`check_bounds` enforces the same metadata here.

:class:`QueueStats`, :class:`QueuePause` and :class:`WorkerHeartbeat` are what the
stores build from their own rows; they check nothing.
"""

from __future__ import annotations

import math
import operator
import re
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, NewType

from annotated_types import Ge, Gt, Le, Lt

from slotfleet.models.errors import InvalidSettingsError

WorkerId = NewType("WorkerId", str)

QUEUE_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9_.]*[a-z0-9])?$"
_QUEUE_NAME = re.compile(QUEUE_NAME_PATTERN)

Concurrency = Annotated[int, Ge(1), Le(10_000)]
"""Jobs one worker runs at once."""
PollingInterval = Annotated[float, Gt(0), Le(3600)]
"""Seconds between fetches when nothing wakes a worker earlier."""


def check_queue_name(name: str) -> str:
    """``name``, or ``ValueError`` saying what a queue name may be."""
    if not (isinstance(name, str) and len(name) <= 63 and _QUEUE_NAME.fullmatch(name)):
        raise ValueError(
            f"{name!r} is not a queue name (up to 63 lowercase letters, digits, '-', '_' "
            "and '.', starting and ending with a letter or digit)"
        )
    return name


class ExecutorKind(StrEnum):
    """Where a queue's jobs run."""

    ASYNC = "async"
    """Coroutines on the worker's event loop; for I/O-bound async functions."""
    THREADS = "threads"
    """A thread pool; for blocking I/O in plain functions."""
    PROCESSES = "processes"
    """A pool of child processes, reused between jobs; for CPU-bound work."""


class FunctionPolicy(StrEnum):
    """Which functions a worker runs for the jobs it claims."""

    REGISTERED = "registered"
    """Only functions registered with ``@job`` (the default): a job naming anything else,
    ``os:system`` say, fails with an error saying so."""
    ANY = "any"
    """Any importable callable, as Chancy does: whoever can enqueue can run code."""


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = typing.get_type_hints(cls, include_extras=True)
    return hints


#: The ``annotated_types`` bounds this module reads: attribute, test, words for an error.
_RULES: dict[type, tuple[str, Callable[[float, float], bool], str]] = {
    Ge: ("ge", operator.ge, "at least"),
    Gt: ("gt", operator.gt, "greater than"),
    Le: ("le", operator.le, "at most"),
    Lt: ("lt", operator.lt, "less than"),
}


def _number(cls: type, name: str, value: object) -> int | float:
    """``value`` as the number field ``name`` of ``cls`` holds, within its bounds, or
    :class:`InvalidSettingsError` naming the field (one line)."""
    hint = _hints(cls)[name]
    annotated = next(
        (a for a in (hint, *typing.get_args(hint)) if typing.get_origin(a) is Annotated), hint
    )
    kind, *bounds = typing.get_args(annotated) or (annotated,)
    whole = kind is int
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or (whole and not isinstance(value, int) and not float(value).is_integer())
    ):
        raise InvalidSettingsError(f"{name}: {value!r} is not {'a whole' if whole else 'a'} number")
    number: int | float = int(value) if whole else float(value)
    if not math.isfinite(number):
        raise InvalidSettingsError(f"{name}: {value!r} is not a finite number")
    for bound in bounds:
        rule = _RULES.get(type(bound))
        if rule is None:  # pydantic would enforce it and this reader would not: refuse
            raise TypeError(f"{cls.__name__}.{name}: unsupported bound {bound!r}")
        attr, holds, words = rule
        limit = float(getattr(bound, attr))
        if not holds(number, limit):
            raise InvalidSettingsError(f"{name}: must be {words} {limit:g} (got {value!r})")
    return number


def check_bounds(obj: object) -> None:
    """Check (and normalise: ``8.0`` to ``8`` for a whole number, ``1`` to ``1.0``) every
    number field of the frozen dataclass ``obj`` against its ``annotated_types`` bounds."""
    cls = type(obj)
    for f in fields(obj):  # type: ignore[arg-type]
        value = getattr(obj, f.name)
        hint = _hints(cls)[f.name]
        if value is None or not any(
            typing.get_origin(a) is Annotated for a in (hint, *typing.get_args(hint))
        ):
            continue
        object.__setattr__(obj, f.name, _number(cls, f.name, value))


def _choice(name: str, kind: type[StrEnum], value: object) -> Any:
    if isinstance(value, kind):
        return value
    if isinstance(value, str) and value in kind.__members__.values():
        return kind(value)
    allowed = ", ".join(m.value for m in kind)
    raise InvalidSettingsError(f"{name}: {value!r} is not one of {allowed}")


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most ``count`` job starts per ``period`` seconds, across every worker of the queue."""

    __pydantic_config__: ClassVar[dict[str, Any]] = {"extra": "forbid"}

    count: Annotated[int, Ge(1), Le(1_000_000)]
    """Job starts allowed in one window."""
    period: Annotated[float, Gt(0), Le(86_400)] = 1.0
    """Window length in seconds."""

    def __post_init__(self) -> None:
        check_bounds(self)


@dataclass(frozen=True, slots=True)
class QueueSettings:
    """How one worker serves one queue. Checked when built: a bad value raises
    :class:`InvalidSettingsError` naming the field, in one line."""

    name: str
    """The queue's name, as jobs are enqueued to it."""
    executor: ExecutorKind = ExecutorKind.ASYNC
    """Which executor runs this queue's jobs."""
    concurrency: Concurrency | None = None
    """Jobs run at once by one worker; ``None`` takes the executor's default."""
    polling_interval: PollingInterval = 1.0
    """Seconds between fetches when nothing wakes the worker earlier."""
    rate_limit: RateLimit | None = None
    """Starts allowed per window across all workers; ``None`` means unlimited."""
    paused: bool = False
    """A paused queue fetches nothing; running jobs finish."""
    functions: FunctionPolicy = FunctionPolicy.REGISTERED
    """Which functions this queue's jobs may name (``@job``-registered ones, or any)."""

    def __post_init__(self) -> None:
        try:
            check_queue_name(self.name)
        except ValueError as exc:
            raise InvalidSettingsError(f"name: {exc}") from None
        set_ = object.__setattr__
        set_(self, "executor", _choice("executor", ExecutorKind, self.executor))
        set_(self, "functions", _choice("functions", FunctionPolicy, self.functions))
        if not isinstance(self.paused, bool):
            raise InvalidSettingsError(f"paused: {self.paused!r} is not true or false")
        rate = self.rate_limit
        if isinstance(rate, Mapping):
            try:
                set_(self, "rate_limit", RateLimit(**rate))
            except InvalidSettingsError as exc:
                raise InvalidSettingsError(f"rate_limit.{exc}") from None
            except TypeError:
                raise InvalidSettingsError(
                    f"rate_limit: {dict(rate)!r} is not {{count, period}}"
                ) from None
        elif rate is not None and not isinstance(rate, RateLimit):
            raise InvalidSettingsError(f"rate_limit: {rate!r} is not {{count, period}}")
        check_bounds(self)

    @classmethod
    def parse(cls, text: str) -> QueueSettings:
        """Parse the CLI form ``name[:executor[:concurrency]]`` (``emails:threads:8``)."""
        name, _, rest = text.partition(":")
        kind, _, conc = rest.partition(":")
        concurrency: int | None = None
        if conc:
            try:
                concurrency = int(conc)
            except ValueError:
                raise InvalidSettingsError(f"concurrency: {conc!r} is not a whole number") from None
        executor = _choice("executor", ExecutorKind, kind) if kind else ExecutorKind.ASYNC
        return cls(name=name, executor=executor, concurrency=concurrency)


@dataclass(frozen=True, slots=True)
class QueueStats:
    """A queue's backlog and slots as the store sees them now."""

    queue: str
    ready: int = 0
    """Pending or retrying jobs whose time has come: what a free slot would take now."""
    scheduled: int = 0
    """Pending or retrying jobs due later."""
    running: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    workers: int = 0
    """Live workers (fresh heartbeat) serving the queue."""
    slots_total: int = 0
    slots_busy: int = 0
    paused: bool = False
    """Paused in the store (``slotfleet pause``): no worker fetches from it now. A Queue
    resource's ``spec.paused`` is separate (see docs/decisions.md)."""
    resume_at: datetime | None = None
    """When that pause ends by itself; ``None`` while paused until resumed."""

    @property
    def slots_free(self) -> int:
        return max(0, self.slots_total - self.slots_busy)


@dataclass(frozen=True, slots=True)
class QueuePause:
    """A queue paused in the store: no worker of any fleet fetches from it until
    ``resume_at`` (by the store's clock), or until it is resumed when that is ``None``."""

    queue: str
    paused_at: datetime
    """When it was paused (the store's clock)."""
    resume_at: datetime | None = None
    """When it resumes by itself; ``None``: only ``slotfleet resume`` ends it."""

    @property
    def in_effect(self) -> bool:
        """Whether it still pauses the queue as of ``paused_at`` (a time given to
        ``pause`` that had already passed pauses nothing)."""
        return self.resume_at is None or self.resume_at > self.paused_at


@dataclass(frozen=True, slots=True)
class WorkerHeartbeat:
    """What a worker writes on every heartbeat: who it is and its slots per queue."""

    worker_id: str
    hostname: str = ""
    pid: int = 0
    queues: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    """queue name -> (total slots, busy slots)."""
    started_at: datetime | None = None
    last_seen: datetime | None = None
    draining: bool = False
    retiring: str | None = None
    """The retirement mark (a Queue's ``status.retiring[].since``) this worker confirms:
    it has stopped claiming jobs and claims none until the mark is lifted."""
