"""A job as a worker claimed it (:class:`ClaimedJob`): the store's row in slots, read
without pydantic, which was most of a fetch's Python cost.

The row was validated when it was enqueued, so a claim trusts it (as ``TRUSTED_ROW``
did). A job whose function asks for its own instance (a keyword-only parameter annotated
``QueuedJob``, see ``worker/executors/instance.py``) still gets a real, validated
:class:`~slotfleet.models.QueuedJob`: :meth:`ClaimedJob.instance` builds it on first
use, and from then on the claimed job and its instance share one ``meta`` dict, so what
the job writes there is what its completion stores.

What this module is not: it imports no pydantic until :meth:`ClaimedJob.instance` is
called, and it checks nothing; the store decides what a row holds.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from slotfleet.models.values import JobId, JobState, backoff_delay

if TYPE_CHECKING:
    from slotfleet.models.jobs import QueuedJob, Reference

#: A row's retry policy when it names none of its fields (RetryPolicy's defaults).
_DEFAULT_RETRY = {"base": 1.0, "factor": 2.0, "cap": 300.0, "jitter": 0.1}

#: Columns a claim reads, in this order (``ClaimedJob.from_values`` takes them so).
CLAIMED_COLUMNS = (
    "id",
    "queue",
    "func",
    "kwargs",
    "priority",
    "scheduled_at",
    "max_attempts",
    "retry",
    "timeout",
    "unique_key",
    "meta",
    "attempts",
    "errors",
    "lease_owner",
    "lease_token",
    "lease_expires_at",
    "cancel_requested_at",
    "created_at",
    "started_at",
    "claimed_by",
)

_TIMES = ("scheduled_at", "lease_expires_at", "cancel_requested_at", "created_at", "started_at")


class Backoff:
    """A claimed row's retry policy (:class:`~slotfleet.models.RetryPolicy`'s fields
    and its :meth:`delay`), read without validation."""

    __slots__ = ("base", "cap", "factor", "jitter")

    def __init__(self, data: Mapping[str, Any] | None) -> None:
        values = {**_DEFAULT_RETRY, **(data or {})}
        self.base = float(values["base"])
        self.factor = float(values["factor"])
        self.cap = float(values["cap"])
        self.jitter = float(values["jitter"])

    def delay(self, attempt: int, rand: float) -> float:
        """Seconds to wait after failed attempt ``attempt``; see ``RetryPolicy.delay``."""
        return backoff_delay(self.base, self.factor, self.cap, self.jitter, attempt, rand)


class ClaimedJob:
    """A running attempt's job as its worker holds it. Attribute names and meanings
    are :class:`~slotfleet.models.QueuedJob`'s; ``retry`` is a :class:`Backoff`,
    ``errors`` the earlier attempts' errors as stored (JSON objects)."""

    __slots__ = (
        *(c for c in CLAIMED_COLUMNS if c not in ("retry", "errors")),
        "_errors",
        "_instance",
        "_retry",
        "retry_data",
    )

    id: JobId
    queue: str
    func: str
    kwargs: dict[str, Any]
    priority: int
    scheduled_at: datetime
    max_attempts: int
    retry_data: dict[str, Any] | str | None
    """The retry policy as stored, decoded or still JSON text (see :attr:`retry`)."""
    timeout: float | None
    unique_key: str | None
    meta: dict[str, Any]
    attempts: int
    _errors: list[dict[str, Any]] | str
    lease_owner: str | None
    lease_token: str | None
    lease_expires_at: datetime | None
    cancel_requested_at: datetime | None
    created_at: datetime
    started_at: datetime | None
    claimed_by: str | None

    #: A claimed job is running; it has no result and no completion time yet.
    state = JobState.RUNNING
    result = None
    completed_at = None

    def __init__(self, record: Mapping[str, Any]) -> None:
        renamed = {"retry": "retry_data", "errors": "_errors"}
        for name in CLAIMED_COLUMNS:
            setattr(self, renamed.get(name, name), record[name])
        self._instance: QueuedJob | None = None
        self._retry: Backoff | None = None

    @classmethod
    def from_values(cls, values: Any) -> ClaimedJob:
        """From a row of :data:`CLAIMED_COLUMNS` in that order (the store's row maker).
        kwargs and meta may be JSON text (decoded here), the retry policy and errors too
        (decoded when first read)."""
        job = cls.__new__(cls)
        (
            job.id,
            job.queue,
            job.func,
            kwargs,
            job.priority,
            job.scheduled_at,
            job.max_attempts,
            job.retry_data,
            job.timeout,
            job.unique_key,
            meta,
            job.attempts,
            job._errors,
            job.lease_owner,
            job.lease_token,
            job.lease_expires_at,
            job.cancel_requested_at,
            job.created_at,
            job.started_at,
            job.claimed_by,
        ) = values
        job.kwargs = _decoded(kwargs)
        job.meta = _decoded(meta)
        job._instance = None
        job._retry = None
        return job

    @classmethod
    def of(cls, job: QueuedJob) -> ClaimedJob:
        """The claimed form of a :class:`QueuedJob` (tests, and callers that hold one):
        ``job`` itself is its instance, sharing its ``meta``."""
        record = {name: getattr(job, name) for name in CLAIMED_COLUMNS}
        record["retry"] = job.retry.model_dump()
        record["errors"] = [e.model_dump(mode="json") for e in job.errors]
        claimed = cls(record)
        claimed._instance = job
        return claimed

    @property
    def retry(self) -> Backoff:
        """The retry policy (read on first use: only a failed attempt needs it)."""
        if self._retry is None:
            data = self.retry_data
            if isinstance(data, str):
                data = self.retry_data = json.loads(data)
            self._retry = Backoff(data)
        return self._retry

    @property
    def errors(self) -> list[dict[str, Any]]:
        """The earlier attempts' errors as stored (JSON objects), decoded on first use."""
        errors = self._errors
        if isinstance(errors, str):
            errors = self._errors = json.loads(errors)
        assert not isinstance(errors, str)
        return errors

    def __repr__(self) -> str:
        return f"ClaimedJob(id={self.id}, func={self.func!r}, attempt={self.attempts})"

    @property
    def ref(self) -> Reference:
        from slotfleet.models.jobs import Reference

        return Reference(identifier=self.id)

    @property
    def has_instance(self) -> bool:
        """Whether :meth:`instance` was called: the job was handed its own instance."""
        return self._instance is not None

    def record(self) -> dict[str, Any]:
        """Every :class:`QueuedJob` field, as stored (times in UTC)."""
        data = {name: getattr(self, name) for name in CLAIMED_COLUMNS if name != "retry"}
        retry = self.retry_data
        if isinstance(retry, str):
            retry = self.retry_data = json.loads(retry)
        data["retry"] = retry if retry is not None else dict(_DEFAULT_RETRY)
        for name in _TIMES:
            value = data[name]
            if value is not None:
                data[name] = value.astimezone(UTC)
        data.update(state=self.state.value, result=None, completed_at=None)
        return data

    def instance(self) -> QueuedJob:
        """The validated :class:`QueuedJob` of this attempt, built once; its ``meta`` is
        this job's ``meta`` from then on."""
        if self._instance is None:
            from slotfleet.models.jobs import TRUSTED_ROW, QueuedJob

            built = QueuedJob.model_validate(self.record(), context={TRUSTED_ROW: True})
            self.meta = built.meta
            self._instance = built
        else:
            self.meta = self._instance.meta
        return self._instance

    def instance_json(self) -> str:
        """The instance's fields without ``kwargs``, as JSON text (what a process
        executor's child rebuilds the instance from when the job asks for it)."""
        data = self.record()
        del data["kwargs"]
        if self._instance is not None:
            data["meta"] = self._instance.meta
        return json.dumps(data, default=_iso, ensure_ascii=False)


def _decoded(value: Any) -> Any:
    """A JSON object column as a dict: text is decoded (``{}`` without the parser)."""
    if isinstance(value, str):
        return {} if value == "{}" else json.loads(value)
    return value


def _iso(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON-serializable")
