"""Models refuse bad input at construction, with messages a user can act on."""

from __future__ import annotations

import math
from datetime import datetime

import pytest
from pydantic import ValidationError

from slotfleet.models import Job, QueueSettings, RetryPolicy, describe_validation_error
from slotfleet.models.jobs import MAX_PAYLOAD_BYTES, MAX_PAYLOAD_DEPTH


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
        with pytest.raises(ValidationError):
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
