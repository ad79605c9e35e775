"""Models refuse bad input at construction, with messages a user can act on."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Annotated, Any, cast

import pytest
from annotated_types import MultipleOf
from pydantic import ValidationError

from slotfleet.models import (
    InvalidSettingsError,
    Job,
    JobError,
    QueueSettings,
    RetryPolicy,
    describe_validation_error,
)
from slotfleet.models.jobs import (
    MAX_PAYLOAD_BYTES,
    MAX_PAYLOAD_DEPTH,
    MAX_TRACEBACK_CHARS,
    storable_text,
)
from slotfleet.models.queues import check_bounds

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_job_defaults_and_copy() -> None:
    job = Job(func="pkg.mod:fn", kwargs={"a": [1, 2, {"b": None}]})
    assert job.queue == "default"
    assert job.max_attempts == 1
    assert job.with_options(priority=5).priority == 5
    with pytest.raises(ValidationError):
        job.with_options(priority="high")


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"when": datetime(2024, 1, 1)}, "JSON-serializable"),
        ({"x": {1, 2}}, "JSON-serializable"),
        ({"x": math.nan}, "JSON-serializable"),
        ({"x": "a\x00b"}, "NUL"),
        ({"x": "\ud800"}, "surrogate"),
        ({"x": "y" * (MAX_PAYLOAD_BYTES + 1)}, "bytes encoded"),
    ],
)
def test_kwargs_must_be_strict_json(kwargs: dict[str, object], needle: str) -> None:
    with pytest.raises(ValidationError) as info:
        Job(func="pkg.mod:fn", kwargs=kwargs)
    line = describe_validation_error(info.value, "job pkg.mod:fn")
    assert needle in line
    assert "\n" not in line


def test_deep_nesting_refused() -> None:
    value: object = 1
    for _ in range(MAX_PAYLOAD_DEPTH + 5):
        value = [value]
    with pytest.raises(ValidationError, match="nested deeper"):
        Job(func="pkg.mod:fn", kwargs={"x": value})


@pytest.mark.parametrize("func", ["", "fn", "pkg.mod:", ":fn", "pkg..mod:fn", "1pkg:fn", "a b:c"])
def test_func_must_be_an_import_path(func: str) -> None:
    with pytest.raises(ValidationError):
        Job(func=func)


def test_naive_schedule_refused() -> None:
    with pytest.raises(ValidationError, match="timezone-aware"):
        Job(func="a:b", scheduled_at=datetime(2030, 1, 1))


def test_retry_delay_grows_and_caps() -> None:
    policy = RetryPolicy(base=1, factor=2, cap=10, jitter=0)
    assert [policy.delay(n, 0.5) for n in (1, 2, 3, 4, 5, 50, 10_000)] == [1, 2, 4, 8, 10, 10, 10]
    jittery = RetryPolicy(base=10, jitter=0.1)
    assert 9.0 <= jittery.delay(1, 0.0) <= jittery.delay(1, 0.999) <= 11.0


def test_queue_settings_parse() -> None:
    settings = QueueSettings.parse("emails:threads:8")
    assert (settings.name, settings.executor.value, settings.concurrency) == (
        "emails",
        "threads",
        8,
    )
    assert QueueSettings.parse("plain").executor.value == "async"
    for bad in ("Bad Name", "q:fibers", "q:async:0", "q:async:x"):
        with pytest.raises(InvalidSettingsError):
            QueueSettings.parse(bad)


def test_rows_read_back_skip_the_payload_check_but_new_jobs_do_not() -> None:
    """Reads from a store are trusted (checked at enqueue); anything else is checked."""
    from datetime import UTC

    from slotfleet.models import QueuedJob
    from slotfleet.models.jobs import TRUSTED_ROW

    row = {"id": 1, "func": "a:b", "kwargs": {"x": math.nan}, "created_at": datetime.now(UTC)}
    assert QueuedJob.model_validate(row, context={TRUSTED_ROW: True}).id == 1
    with pytest.raises(ValidationError, match="JSON-serializable"):
        QueuedJob.model_validate(row)


@pytest.mark.parametrize(
    "when",
    [
        datetime.min.replace(tzinfo=timezone(timedelta(hours=5))),
        datetime.max.replace(tzinfo=timezone(timedelta(hours=-5))),
        datetime(1, 1, 1, 12, tzinfo=UTC),
    ],
)
def test_scheduled_at_outside_what_any_store_can_read_back_is_refused(when: datetime) -> None:
    """Regression (issue 9, finding 9): ``datetime.min`` at +05:00 was stored, then could
    not be read back, stranding its job and every job fetched with it."""
    with pytest.raises(ValidationError, match=r"scheduled_at .* is out of range"):
        Job(func="m:f", scheduled_at=when)


def test_scheduled_at_is_kept_in_utc() -> None:
    local = datetime(2030, 1, 1, 12, tzinfo=timezone(timedelta(hours=2)))
    job = Job(func="m:f", scheduled_at=local)
    assert job.scheduled_at == local
    assert job.scheduled_at is not None
    assert job.scheduled_at.utcoffset() == timedelta(0)


def test_retry_delay_at_huge_attempt_counts_is_the_cap() -> None:
    """Regression (issue 9, finding 5): ``100.0 ** 999`` raised OverflowError and killed
    the job's supervising task."""
    policy = RetryPolicy(base=1, factor=100, cap=60, jitter=0)
    assert policy.delay(1000, 0.5) == 60
    assert policy.delay(10**9, 0.5) == 60


def test_error_text_is_made_storable() -> None:
    error = JobError(
        attempt=1, error="caf\udce9 \x00 end", traceback="t" * (MAX_TRACEBACK_CHARS + 10), at=NOW
    )
    assert error.error == "caf\\udce9 \\x00 end"
    assert len(error.traceback) < MAX_TRACEBACK_CHARS + 60
    assert "[... 10 characters cut ...]" in error.traceback
    assert storable_text("plain", 10) == "plain"


def test_every_exported_name_loads_from_the_module_that_defines_it() -> None:
    """``slotfleet.models`` loads its names on first use (PEP 562): a name in ``__all__``
    its loader does not know fails only where it is first used, so a merge that adds a
    model must add it to both."""
    import importlib

    import slotfleet.models as models

    assert set(models._WHERE) == set(models.__all__)
    for name in models.__all__:
        defined = getattr(importlib.import_module(models._WHERE[name]), name)
        assert getattr(models, name) is defined, name


def test_the_worker_values_load_without_pydantic() -> None:
    """Ids, states, outcomes, completions and claimed rows are pydantic-free: importing
    them through ``slotfleet.models`` must not load pydantic (the worker's hot path)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from slotfleet.models import Completion, JobId, JobState, Outcome, TERMINAL_STATES\n"
        "from slotfleet.models.claimed import ClaimedJob\n"
        "print(sorted(m for m in sys.modules if m.partition('.')[0].startswith('pydantic')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


@pytest.mark.parametrize(
    ("field", "kind"),
    [("concurrency", "Concurrency"), ("polling_interval", "PollingInterval")],
)
def test_a_worker_and_the_crd_enforce_the_same_bounds(field: str, kind: str) -> None:
    """The bounds are declared once (``annotated_types`` metadata) and enforced twice:
    by pydantic in the CRD's models and by the worker's ``QueueSettings``, which loads no
    pydantic. Both must accept exactly the same values, a bool aside: pydantic's lax mode
    takes ``True`` as 1 where the worker refuses it."""
    from pydantic import TypeAdapter, ValidationError

    from slotfleet.models import queues

    crd = TypeAdapter(getattr(queues, kind))
    for value in (-1, 0, 0.5, 1, 1.0, 2, 3599.5, 3600, 3600.5, 9999, 10_000, 10_001, 1e9,
                  float("nan"), float("inf"), True):  # fmt: skip
        try:
            crd.validate_python(value, strict=False)
            crd_accepts = not isinstance(value, bool)  # the worker refuses a bool: stricter
        except ValidationError:
            crd_accepts = False
        try:
            QueueSettings(name="q", **cast(dict[str, Any], {field: value}))
            worker_accepts = True
        except InvalidSettingsError:
            worker_accepts = False
        assert worker_accepts == crd_accepts, (field, value)


def test_rate_limit_bounds_agree_with_pydantic() -> None:
    from pydantic import TypeAdapter, ValidationError

    from slotfleet.models import RateLimit

    crd = TypeAdapter(RateLimit)
    for count, period in ((0, 1), (1, 1), (1_000_000, 1), (1_000_001, 1), (5, 0), (5, 86_400),
                          (5, 86_401), (5, -1), (5, 0.001)):  # fmt: skip
        try:
            crd.validate_python({"count": count, "period": period})
            crd_accepts = True
        except ValidationError:
            crd_accepts = False
        try:
            RateLimit(count=count, period=period)
            worker_accepts = True
        except InvalidSettingsError:
            worker_accepts = False
        assert worker_accepts == crd_accepts, (count, period)


@dataclass(frozen=True)
class _Even:
    """A dataclass with a bound :func:`check_bounds` does not know."""

    n: Annotated[int, MultipleOf(2)]

    def __post_init__(self) -> None:
        check_bounds(self)


def test_a_bound_the_worker_cannot_read_is_refused_not_skipped() -> None:
    """A bound only pydantic would enforce would let the two diverge silently."""
    with pytest.raises(TypeError, match="unsupported bound"):
        _Even(n=4)
