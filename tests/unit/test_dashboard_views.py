"""The dashboard's pure parts: settings, filters from query strings, figures and the
chart's geometry. No store, no server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from slotfleet.app.durations import parse_duration
from slotfleet.dashboard.charts import nice_top, sparkline, stacked_bars, tick_step
from slotfleet.dashboard.settings import DashboardSettings, ViewSettings
from slotfleet.dashboard.views import (
    Bucket,
    JobFilter,
    buckets,
    rates,
    timings,
    worker_view,
)
from slotfleet.models import (
    FinishedCounts,
    InvalidSettingsError,
    JobState,
    QueuedJob,
    WorkerHeartbeat,
)
from slotfleet.store import describe_dsn

NOW = datetime(2026, 1, 2, 3, 4, 17, tzinfo=UTC)


@pytest.mark.parametrize(
    ("dsn", "shown"),
    [
        ("sqlite:///jobs.db", "sqlite jobs.db"),
        ("sqlite:////var/lib/jobs.db", "sqlite /var/lib/jobs.db"),
        ("postgresql://app:s3cret@db.internal:5433/jobs", "postgresql db.internal:5433/jobs"),
        ("postgres://app:p@ss/w?rd#x@db/jobs?sslmode=require", "postgresql db/jobs"),
        ("postgresql:///jobs?host=/run/pg&password=s3cret", "postgresql localhost/jobs"),
        ("postgresql://u:p@h1:1,h2:2/jobs", "postgresql h1:1,h2:2/jobs"),
        ("mysql://root:pw@h/db", "an unsupported store"),
    ],
)
def test_a_dsn_is_shown_without_credentials_or_parameters(dsn: str, shown: str) -> None:
    assert describe_dsn(dsn) == shown


def test_actions_need_a_long_enough_token() -> None:
    with pytest.raises(ValidationError, match="actions need a token"):
        DashboardSettings(dsn="sqlite:///x.db", actions=True)
    with pytest.raises(ValidationError, match="at least 16 characters"):
        DashboardSettings(dsn="sqlite:///x.db", actions=True, token="short")
    ok = DashboardSettings(dsn="sqlite:///x.db", actions=True, token="t" * 16)
    assert "t" * 16 not in repr(ok)
    assert DashboardSettings(dsn="sqlite:///x.db").loopback
    assert not DashboardSettings(dsn="sqlite:///x.db", host="0.0.0.0").loopback


def test_view_settings_refuse_windows_the_chart_cannot_draw() -> None:
    with pytest.raises(ValidationError, match="whole number of buckets"):
        ViewSettings(window_seconds=100, bucket_seconds=30)
    with pytest.raises(ValidationError, match="at most 240 buckets"):
        ViewSettings(window_seconds=3600, bucket_seconds=5)
    with pytest.raises(ValidationError, match="forgotten after they are stale"):
        ViewSettings(stale_after_seconds=60, forget_after_seconds=30)


def test_a_filter_from_a_query_string() -> None:
    wanted = JobFilter.from_query(
        {"queue": ["emails"], "state": ["failed", "", "running"], "func": [" "], "after": ["90"]},
        default_limit=50,
    )
    assert wanted.queue == "emails"
    assert wanted.states == [JobState.FAILED, JobState.RUNNING]
    assert (wanted.func, wanted.after, wanted.limit) == (None, 90, 50)
    assert wanted.query(after=None) == {"queue": "emails", "state": ["failed", "running"]}
    assert JobFilter.from_query({}, default_limit=7).limit == 7


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"state": ["exploded"]}, "states.0"),
        ({"after": ["abc"]}, "after"),
        ({"after": ["0"]}, "after"),
        ({"limit": ["501"]}, "limit"),
        ({"queue": ["a", "b"]}, "given 2 times"),
        ({"sort": ["id"]}, "unknown filter 'sort'"),
    ],
)
def test_a_bad_filter_is_one_line(query: dict[str, list[str]], message: str) -> None:
    with pytest.raises(InvalidSettingsError) as info:
        JobFilter.from_query(query, default_limit=50)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_buckets_cover_the_window_and_sum_queues() -> None:
    view = ViewSettings(window_seconds=120, bucket_seconds=30)
    at = datetime(2026, 1, 2, 3, 3, 30, tzinfo=UTC)
    counts = [
        FinishedCounts(queue="a", start=at, succeeded=2, failed=1),
        FinishedCounts(queue="b", start=at, succeeded=3, cancelled=4),
        FinishedCounts(queue="a", start=at - timedelta(hours=1), succeeded=99),
    ]
    chart = buckets(counts, NOW, view)
    assert [b.start.strftime("%H:%M:%S") for b in chart] == [
        "03:02:00",
        "03:02:30",
        "03:03:00",
        "03:03:30",
        "03:04:00",
    ]
    assert (chart[3].succeeded, chart[3].failed, chart[3].cancelled) == (5, 1, 4)
    assert sum(b.total for b in chart) == 10


def test_rates_over_a_window() -> None:
    r = rates([Bucket(start=NOW, succeeded=3, failed=1, cancelled=2)], window_seconds=120)
    assert (r.per_minute, r.failure_rate) == (3.0, 0.25)
    assert rates([], 60).failure_rate is None
    assert rates([Bucket(start=NOW, cancelled=2)], 60).failure_rate is None


def test_worker_view_ages_and_staleness() -> None:
    beat = WorkerHeartbeat(
        worker_id="w",
        queues={"b": (4, 1), "a": (2, 2)},
        last_seen=NOW - timedelta(seconds=45),
        draining=True,
    )
    shown = worker_view(beat, NOW, ViewSettings())
    assert (shown.heartbeat_age_seconds, shown.stale, shown.draining) == (45.0, True, True)
    assert [(s.queue, s.free) for s in shown.slots] == [("a", 0), ("b", 3)]
    assert (shown.slots_total, shown.slots_busy, shown.slots_free) == (6, 3, 3)


def test_timings_of_a_job() -> None:
    job = QueuedJob.model_validate(
        {
            "id": 1,
            "func": "m:f",
            "state": "running",
            "created_at": NOW - timedelta(seconds=30),
            "scheduled_at": NOW - timedelta(seconds=20),
            "started_at": NOW - timedelta(seconds=5),
        }
    )
    assert timings(job, NOW).model_dump() == {"waited_seconds": 15.0, "ran_seconds": 5.0}
    pending = job.model_copy(update={"state": JobState.PENDING, "started_at": None})
    assert timings(pending, NOW).model_dump() == {"waited_seconds": None, "ran_seconds": None}


def test_stacked_bars_are_proportional_and_labelled_on_round_times() -> None:
    start = datetime(2026, 1, 2, 3, 0, 0, tzinfo=UTC)
    data = [
        Bucket(start=start + timedelta(seconds=30 * i), succeeded=i, failed=i % 3)
        for i in range(31)
    ]
    chart = stacked_bars(data, width=620, height=100)
    assert chart.top == nice_top(max(b.total for b in data)) == 50
    for rect in chart.rects:
        assert 0 <= rect.y <= 100
        assert rect.y + rect.height <= 100.01
    tallest = [r for r in chart.rects if r.title.startswith("03:15:00")]
    assert round(sum(r.height for r in tallest), 2) == round(100 * 30 / 50, 2)
    assert [label for _, label in chart.ticks] == [f"03:{m:02d}" for m in range(0, 16, 2)]
    assert stacked_bars([]).rects == []


@pytest.mark.parametrize(
    ("value", "top"), [(0, 5), (4, 5), (5, 5), (7, 10), (11, 20), (230, 500), (1000, 1000)]
)
def test_nice_top(value: int, top: int) -> None:
    assert nice_top(value) == top


def test_tick_steps_are_round_and_few() -> None:
    assert tick_step(900, 30) == 120
    assert tick_step(3600, 30) == 600
    assert tick_step(86400, 3600) == 14400
    assert tick_step(1000, 7) == 7 * 18


def test_sparkline() -> None:
    assert sparkline([0, 1, 4, 8]) == " ▁▄█"
    assert sparkline([0, 0]) == "  "
    assert sparkline([]) == ""


@pytest.mark.parametrize(("text", "seconds"), [("90", 90), ("15m", 900), ("7d", 604800)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["", "x", "-1", "nan", "inf", "3w"])
def test_bad_durations_are_one_line(text: str) -> None:
    with pytest.raises(InvalidSettingsError) as info:
        parse_duration(text)
    assert "\n" not in str(info.value)
