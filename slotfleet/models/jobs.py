"""Jobs as the user declares them (:class:`Job`) and as the store holds them
(:class:`QueuedJob`), plus the small values that travel between worker and store.

A :class:`Job` is a frozen description: what to call, with which JSON kwargs, on which
queue, with which retry and timeout policy. Enqueuing it yields a :class:`QueuedJob`,
the store's row with an id, a state, attempts, lease and timestamps. Nothing here does
I/O; validation (JSON-only kwargs, bounds) happens at construction so bad input is
refused before it reaches a store.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    ValidationInfo,
    field_validator,
)

from slotfleet.models.queues import QUEUE_NAME_PATTERN
from slotfleet.models.values import (
    MAX_PAYLOAD_BYTES,
    MAX_PAYLOAD_DEPTH,
    SUMMARY_ERROR_CHARS,
    TERMINAL_STATES,
    TRUSTED_ROW,
    Completion,
    JobId,
    JobState,
    Outcome,
    backoff_delay,
    check_json_payload,
    encode_json_payload,
)

__all__ = [
    "MAX_ERROR_CHARS",
    "MAX_JOB_ID",
    "MAX_PAYLOAD_BYTES",
    "MAX_PAYLOAD_DEPTH",
    "MAX_SCHEDULED_AT",
    "MAX_TRACEBACK_CHARS",
    "MIN_SCHEDULED_AT",
    "SUMMARY_ERROR_CHARS",
    "TERMINAL_STATES",
    "TRUSTED_ROW",
    "Completion",
    "FinishedCounts",
    "Job",
    "JobError",
    "JobId",
    "JobState",
    "JobSummary",
    "Outcome",
    "QueuedJob",
    "Reference",
    "RetryPolicy",
    "check_json_payload",
    "check_moment",
    "encode_json_payload",
    "storable_text",
]

#: Largest job id: ids are PostgreSQL ``bigint`` and SQLite ``INTEGER`` (signed 64-bit).
MAX_JOB_ID = 2**63 - 1

#: Earliest and latest ``scheduled_at`` accepted, in UTC. A day inside what Python's
#: ``datetime`` can hold, so the value stays representable once a database or a client
#: shows it in any time zone (a time that cannot be read back would strand its job).
MIN_SCHEDULED_AT = datetime(1, 1, 2, tzinfo=UTC)
MAX_SCHEDULED_AT = datetime(9999, 12, 30, tzinfo=UTC)

#: Longest error message and traceback stored per failed attempt (characters); longer
#: text keeps its start and its end (where a traceback names the failing line).
MAX_ERROR_CHARS = 4_000
MAX_TRACEBACK_CHARS = 32_000


class RetryPolicy(BaseModel):
    """Exponential backoff between attempts: ``min(cap, base * factor**(n-1))`` seconds
    after failed attempt ``n``, spread by up to ``jitter`` (a fraction) either way."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    base: Annotated[float, Field(ge=0, le=86_400)] = 1.0
    """Delay after the first failed attempt, in seconds."""
    factor: Annotated[float, Field(ge=1, le=100)] = 2.0
    """Multiplier applied for each further failed attempt."""
    cap: Annotated[float, Field(ge=0, le=7 * 86_400)] = 300.0
    """Longest delay, in seconds."""
    jitter: Annotated[float, Field(ge=0, le=1)] = 0.1
    """Random spread as a fraction of the delay (0.1 = plus or minus 10 %)."""

    def delay(self, attempt: int, rand: float) -> float:
        """Seconds to wait after failed attempt ``attempt`` (1-based), never more than
        ``cap`` (plus jitter) whatever the attempt count.

        ``rand`` is a number in [0, 1) supplied by the caller, so this stays pure.
        """
        return backoff_delay(self.base, self.factor, self.cap, self.jitter, attempt, rand)


def check_moment(value: datetime, what: str) -> datetime:
    """``value`` in UTC, or ``ValueError`` when it has no time zone or falls outside what
    every store and client can represent (``MIN_SCHEDULED_AT``..``MAX_SCHEDULED_AT``)."""
    if value.tzinfo is None:
        raise ValueError(f"{what} must be timezone-aware (for example datetime.now(UTC))")
    try:
        utc = value.astimezone(UTC)
    except (OverflowError, ValueError):
        utc = None
    if utc is None or not MIN_SCHEDULED_AT <= utc <= MAX_SCHEDULED_AT:
        raise ValueError(
            f"{what} {value.isoformat()} is out of range: in UTC it must fall "
            f"between {MIN_SCHEDULED_AT:%Y-%m-%d} and {MAX_SCHEDULED_AT:%Y-%m-%d}"
        )
    return utc


@functools.lru_cache(maxsize=1024)
def _is_import_path(value: str) -> bool:
    """``package.module:function`` or ``package.module.function``. Cached: a batch names
    the same few functions thousands of times (this check was ~18 % of enqueue_many)."""
    module, _, name = value.partition(":") if ":" in value else value.rpartition(".")
    parts = [*module.split("."), *name.split(".")]
    return bool(module) and bool(name) and all(p.isidentifier() for p in parts)


class Job(BaseModel):
    """What to run and how: the user's side of a job. Frozen; change it with
    :meth:`with_options`.

    ``func`` is an import path, ``"package.module:function"`` or
    ``"package.module.function"``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    func: Annotated[str, Field(min_length=1, max_length=512)]
    queue: Annotated[str, Field(min_length=1, max_length=63, pattern=QUEUE_NAME_PATTERN)] = (
        "default"
    )
    kwargs: dict[str, Any] = Field(default_factory=dict)
    priority: Annotated[int, Field(ge=-32_768, le=32_767)] = 0
    """Higher runs first; equal priorities run first in, first out."""
    scheduled_at: datetime | None = None
    """Not before this time (timezone-aware); ``None`` means now."""
    max_attempts: Annotated[int, Field(ge=1, le=1000)] = 1
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    timeout: Annotated[float, Field(gt=0, le=7 * 86_400)] | None = None
    """Seconds one attempt may run before it is stopped and counted as failed."""
    unique_key: Annotated[str, Field(min_length=1, max_length=255)] | None = None
    """While a job with this key is not terminal, enqueuing another returns that job."""
    meta: dict[str, Any] = Field(default_factory=dict)

    @field_validator("func")
    @classmethod
    def _check_func(cls, value: str) -> str:
        if not _is_import_path(value):
            raise ValueError(f"{value!r} is not an import path like 'package.module:function'")
        return value

    @field_validator("kwargs", "meta")
    @classmethod
    def _check_json(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        # Rows read back from a store were checked when they were enqueued; re-encoding
        # every payload on every read was most of the cost of a fetch.
        if not (info.context and info.context.get(TRUSTED_ROW)):
            check_json_payload(value, info.field_name or "value")
        return value

    @field_validator("scheduled_at")
    @classmethod
    def _check_aware(cls, value: datetime | None, info: ValidationInfo) -> datetime | None:
        if value is None or (info.context and info.context.get(TRUSTED_ROW)):
            return value
        return check_moment(value, "scheduled_at")

    def with_options(self, **changes: Any) -> Job:
        """A copy with ``changes`` applied and validated (``job.with_options(priority=5)``)."""
        return type(self).model_validate({**self.model_dump(), **changes})


def storable_text(text: str, limit: int) -> str:
    """``text`` as every store can keep it: NUL characters (PostgreSQL refuses them) and
    lone surrogates (a non-UTF-8 file name decoded with ``surrogateescape``; not valid
    UTF-8) become visible escapes, and text past ``limit`` characters keeps its start
    and end around a note of what was cut."""
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    if len(text) > limit:
        cut = len(text) - limit
        head = limit // 2
        tail = text[len(text) - (limit - head) :]
        text = f"{text[:head]}\n[... {cut} characters cut ...]\n{tail}"
    return text


class JobError(BaseModel):
    """One failed attempt. Its text is made storable on construction (see
    :func:`storable_text`): an exception's message is untrusted input."""

    model_config = ConfigDict(frozen=True)

    attempt: int
    error: str
    traceback: str = ""
    at: datetime
    worker: str | None = None
    """The worker that ran the attempt (``None`` in rows written before it was recorded)."""

    @field_validator("error")
    @classmethod
    def _storable_error(cls, value: str) -> str:
        return storable_text(value, MAX_ERROR_CHARS)

    @field_validator("traceback")
    @classmethod
    def _storable_traceback(cls, value: str) -> str:
        return storable_text(value, MAX_TRACEBACK_CHARS)


class QueuedJob(Job):
    """A job as the store holds it."""

    id: JobId
    state: JobState = JobState.PENDING
    attempts: int = 0
    result: JsonValue = None
    errors: list[JobError] = Field(default_factory=list)
    lease_owner: str | None = None
    lease_token: str | None = None
    """The claim token of the running attempt: every write about the attempt (lease
    renewals, its completion) names it, so a worker that lost the job cannot touch it."""
    lease_expires_at: datetime | None = None
    cancel_requested_at: datetime | None = None
    created_at: datetime
    started_at: datetime | None = None
    completed_at: datetime | None = None
    claimed_by: str | None = None
    """The worker that claimed the latest attempt; unlike ``lease_owner`` it is kept
    after the attempt ends, so a finished job still says where it ran."""

    @property
    def ref(self) -> Reference:
        return Reference(identifier=self.id)

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL_STATES


class JobSummary(BaseModel):
    """A job's row without its payloads, for listings: what a table of many jobs shows,
    read without decoding kwargs, result or every attempt's traceback."""

    model_config = ConfigDict(frozen=True)

    id: JobId
    queue: str
    func: str
    state: JobState
    priority: int
    attempts: int
    max_attempts: int
    created_at: datetime
    scheduled_at: datetime
    started_at: datetime | None = None
    completed_at: datetime | None = None
    claimed_by: str | None = None
    last_error: str | None = None
    """The latest attempt's error message, cut to :data:`SUMMARY_ERROR_CHARS` characters."""

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL_STATES


class FinishedCounts(BaseModel):
    """Jobs of one queue that ended in one time bucket, by how they ended."""

    model_config = ConfigDict(frozen=True)

    queue: str
    start: datetime
    """Start of the bucket (a multiple of the bucket length since the epoch, UTC)."""
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0


class Reference(BaseModel):
    """A handle on a queued job, as returned by ``enqueue`` and taken by ``cancel``."""

    model_config = ConfigDict(frozen=True)

    identifier: JobId

    def __str__(self) -> str:
        return str(self.identifier)
