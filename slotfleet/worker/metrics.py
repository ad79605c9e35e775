"""Prometheus metrics of one worker, on an explicit registry.

Slot gauges (``slotfleet_slots_total``, ``_free``, ``_busy`` by queue and executor) are
computed when scraped by a custom collector that asks the worker, so they can never
drift from the executors' own accounting. Job counters by outcome and the duration and
pickup-latency histograms are counted as attempts start and end, in plain integers (a
bucket index and two additions per observation, on the event loop's thread), and
exported as ``slotfleet_jobs_total`` and the two histograms' ``_bucket``/``_count``/
``_sum`` series when scraped: prometheus_client's own metrics take a lock per update,
four per job, which showed up in a drain's profile.

Pickup latency is ``started_at - max(created_at, scheduled_at)``: how long a job that
could run waited for a slot (a job scheduled for later is not counted as waiting).

What this module is not: it serves nothing (see ``server.py``) and never touches the
global default registry.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Iterator
from typing import NamedTuple, Protocol

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from slotfleet.models.claimed import ClaimedJob

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)
PICKUP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class SlotUsage(NamedTuple):
    queue: str
    executor: str
    total: int
    busy: int
    free: int
    """Jobs the queue could start now: below ``total - busy`` when a worker-wide cap
    (``--max-slots``) is taken up by other queues."""


class SlotSource(Protocol):
    def slot_usage(self) -> Iterable[SlotUsage]:
        """Slots per queue as they are now."""
        ...


class SlotCollector(Collector):
    """Slot gauges derived from the worker at scrape time."""

    def __init__(self, source: SlotSource) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        labels = ["queue", "executor"]
        total = GaugeMetricFamily(
            "slotfleet_slots_total", "Job slots of this worker.", labels=labels
        )
        free = GaugeMetricFamily("slotfleet_slots_free", "Job slots idle.", labels=labels)
        busy = GaugeMetricFamily("slotfleet_slots_busy", "Job slots running a job.", labels=labels)
        for usage in self._source.slot_usage():
            key = [usage.queue, usage.executor]
            total.add_metric(key, usage.total)
            busy.add_metric(key, usage.busy)
            free.add_metric(key, max(0, usage.free))
        yield total
        yield free
        yield busy


class Buckets:
    """One histogram child: counts per upper bound (not cumulative) and the sum."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def cumulative(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip((*self.bounds, math.inf), self.counts, strict=True):
            running += count
            out.append((floatToGoString(bound), running))  # type: ignore[no-untyped-call]
        return out


class JobCollector(Collector):
    """Job counters and histograms, counted by :class:`WorkerMetrics` and exported here."""

    def __init__(self, metrics: WorkerMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m = self._metrics
        jobs = CounterMetricFamily(
            "slotfleet_jobs", "Attempts that ended, by outcome.", labels=["queue", "outcome"]
        )
        for (queue, outcome), count in sorted(m.jobs.items()):
            jobs.add_metric([queue, outcome], count)
        yield jobs
        for name, doc, children in (
            ("slotfleet_job_duration_seconds", "Seconds an attempt ran.", m.durations),
            (
                "slotfleet_job_pickup_latency_seconds",
                "Seconds a ready job waited before a worker started it.",
                m.pickups,
            ),
        ):
            family = HistogramMetricFamily(name, doc, labels=["queue"])
            for queue, child in sorted(children.items()):
                family.add_metric([queue], child.cumulative(), child.total)
            yield family


class WorkerMetrics:
    """The worker's metrics and the registry they live on."""

    def __init__(self, source: SlotSource, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.registry.register(SlotCollector(source))
        self.jobs: dict[tuple[str, str], int] = {}
        """Attempts that ended, by (queue, outcome)."""
        self.durations: dict[str, Buckets] = {}
        self.pickups: dict[str, Buckets] = {}
        self.registry.register(JobCollector(self))

    def job_started(self, job: ClaimedJob) -> None:
        if job.started_at is None:
            return
        ready = max(job.created_at, job.scheduled_at) if job.scheduled_at else job.created_at
        pickup = self.pickups.get(job.queue)
        if pickup is None:
            pickup = self.pickups[job.queue] = Buckets(PICKUP_BUCKETS)
        pickup.observe(max(0.0, (job.started_at - ready).total_seconds()))

    def job_completed(self, queue: str, outcome: str, duration: float) -> None:
        key = (queue, outcome)
        self.jobs[key] = self.jobs.get(key, 0) + 1
        hist = self.durations.get(queue)
        if hist is None:
            hist = self.durations[queue] = Buckets(DURATION_BUCKETS)
        hist.observe(duration)

    def render(self) -> bytes:
        return generate_latest(self.registry)
