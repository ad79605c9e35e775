"""The plain values a worker handles per job, without pydantic: ids, states, outcomes,
the backoff formula, the payload checks and the :class:`Completion` a worker reports.

A worker's hot path (claim, run, report) builds nothing but these and
:class:`~slotfleet.models.claimed.ClaimedJob`; the validated models of ``jobs.py`` stay
at the edges (enqueue, the CRD, settings). ``jobs.py`` re-exports every name here, so
``from slotfleet.models.jobs import JobState`` keeps working.

What this module is not: it validates nothing it is given at construction beyond the
two rules of a completion (a retry names its delay, which is not negative); the
executor that builds a completion checks its payloads with :func:`check_json_payload`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import TYPE_CHECKING, Any, NewType

if TYPE_CHECKING:
    from slotfleet.models.jobs import JobError

JobId = NewType("JobId", int)

#: Largest encoded kwargs (or meta) accepted at enqueue; bigger payloads belong in
#: object storage with a reference in the kwargs.
MAX_PAYLOAD_BYTES = 1 << 20

#: Deepest nesting of kwargs accepted at enqueue (JSON parsers and jsonb have limits).
MAX_PAYLOAD_DEPTH = 64

#: Characters of the latest error a :class:`~slotfleet.models.jobs.JobSummary` carries.
SUMMARY_ERROR_CHARS = 200

#: Validation context marking data read back from a store, whose payloads were checked
#: at enqueue: ``QueuedJob.model_validate(row, context={TRUSTED_ROW: True})``.
TRUSTED_ROW = "slotfleet.trusted_row"


class JobState(StrEnum):
    """Where a job is in its life. ``retrying`` is a pending job with a failed attempt."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    RETRYING = "retrying"
    CANCELLED = "cancelled"


TERMINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})


class Outcome(StrEnum):
    """How an attempt ended, as the worker reports it to the store."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    RETRY = "retry"
    CANCELLED = "cancelled"
    RELEASED = "released"
    """Handed back unfinished (drain): pending again, the attempt not counted."""


def backoff_delay(
    base: float, factor: float, cap: float, jitter: float, attempt: int, rand: float
) -> float:
    """Seconds to wait after failed attempt ``attempt`` (1-based):
    ``min(cap, base * factor**(attempt-1))`` spread by ``jitter`` either way, never more
    than ``cap`` (plus jitter) whatever the attempt count. ``rand`` is in [0, 1)."""
    exponent = max(attempt - 1, 0)
    try:
        raw = base * factor**exponent
    except OverflowError:  # 100.0 ** 999: past any cap
        raw = math.inf
    delay = min(cap, raw)
    spread = delay * jitter * (2 * rand - 1)
    return max(0.0, delay + spread)


def _walk(value: Any, limit: int) -> tuple[int, bool]:
    """Nesting depth of a JSON-like value (giving up past ``limit``) and whether any
    string or key holds a NUL character (PostgreSQL's jsonb refuses those).

    Raises ``ValueError`` for a key that is not a string at any depth: ``json.dumps``
    would silently turn ``{1: "x", "1": "y"}`` into ``{"1": "y"}`` and lose a value.
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    deepest, has_nul = 0, False
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if deepest > limit:
            break
        if isinstance(item, str):
            has_nul = has_nul or "\x00" in item
        elif isinstance(item, dict):
            for key in item:
                if not isinstance(key, str):
                    raise ValueError(f"keys must be strings, not {type(key).__name__} ({key!r})")
                has_nul = has_nul or "\x00" in key
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list | tuple):
            stack.extend((v, level + 1) for v in item)
    return deepest, has_nul


def encode_json_payload(value: Any, what: str) -> str:
    """``value`` as strict JSON text (what is stored), or ``ValueError`` unless it is
    strict JSON with string keys, within the size and depth limits and free of NUL
    characters. Encodes once: callers that store the value keep the text."""
    _check_shape(value, what)
    try:
        encoded = json.dumps(value, allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise ValueError(f"{what} must be JSON-serializable: {exc}") from None
    _check_size(encoded, what)
    return encoded


def check_encoded_payload(value: Any, encoded: str, what: str) -> None:
    """The checks of :func:`encode_json_payload` for a ``value`` already encoded as
    ``encoded`` (strict JSON text of it): no second encoding."""
    _check_shape(value, what)
    _check_size(encoded, what)


def _check_shape(value: Any, what: str) -> None:
    try:
        depth, has_nul = _walk(value, MAX_PAYLOAD_DEPTH)
    except ValueError as exc:
        raise ValueError(f"{what}: {exc}") from None
    if depth > MAX_PAYLOAD_DEPTH:
        raise ValueError(f"{what} is nested deeper than {MAX_PAYLOAD_DEPTH} levels")
    if has_nul:
        raise ValueError(f"{what} must not contain NUL characters")


def _check_size(encoded: str, what: str) -> None:
    try:
        size = len(encoded.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValueError(f"{what} contains a lone surrogate (not valid Unicode)") from None
    if size > MAX_PAYLOAD_BYTES:
        raise ValueError(f"{what} is {size} bytes encoded; the limit is {MAX_PAYLOAD_BYTES}")


def check_json_payload(value: Any, what: str) -> None:
    """Refuse ``value`` unless it encodes as strict JSON within the size and depth limits."""
    encode_json_payload(value, what)


@dataclass(frozen=True, slots=True, kw_only=True)
class Completion:
    """The end of one attempt, written by the worker that holds the job's lease.

    The store applies it only while the job is still ``running`` under the claim
    ``token`` of this attempt, so a late write from a worker that lost the job (a
    paused process, a restarted container, an earlier attempt) changes nothing.

    A plain frozen dataclass, not a pydantic model: one is built per job on the
    worker's hot path. ``result_json`` is the result as the executor encoded (and
    checked) it; the store writes that text as it is instead of encoding ``result``
    again.
    """

    job_id: JobId
    worker_id: str
    token: str
    """The attempt's claim token (:attr:`QueuedJob.lease_token`)."""
    attempt: int = 0
    """The attempt this ends (the job's ``attempts`` when it was claimed)."""
    outcome: Outcome
    result: Any = None
    result_json: str | None = None
    """``result`` as strict JSON text, when the executor has it already (else the store
    encodes ``result``)."""
    error: JobError | None = None
    retry_delay: float | None = None
    """For ``RETRY``: seconds from the store's clock until the job is ready again."""
    meta: dict[str, Any] | None = None
    """The job's ``meta`` as the attempt left it, when the job was handed its instance
    (checked against the payload limits by the executor); ``None`` keeps the stored one."""

    def __post_init__(self) -> None:
        if not isinstance(self.outcome, Outcome):
            object.__setattr__(self, "outcome", Outcome(self.outcome))
        if self.outcome is Outcome.RETRY and self.retry_delay is None:
            raise ValueError("a retry needs retry_delay")
        if self.retry_delay is not None and not self.retry_delay >= 0:
            raise ValueError(f"retry_delay must be >= 0, not {self.retry_delay}")

    def result_text(self) -> str:
        """The result as JSON text, as stored."""
        if self.result_json is not None:
            return self.result_json
        if self.result is None:
            return "null"
        return json.dumps(self.result, allow_nan=False, ensure_ascii=False)

    def replace(self, **changes: Any) -> Completion:
        """A copy with ``changes`` (``result`` drops a pre-encoded ``result_json``)."""
        if "result" in changes and "result_json" not in changes:
            changes["result_json"] = None
        return replace(self, **changes)
