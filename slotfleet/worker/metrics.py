"""Prometheus metrics of one worker, on an explicit registry.

Slot gauges (``slotfleet_slots_total``, ``_free``, ``_busy`` by queue and executor) are
computed when scraped by a custom collector that asks the worker, so they can never
drift from the executors' own accounting. Job counters by outcome and the duration and
pickup-latency histograms are updated as attempts start and end.

Pickup latency is ``started_at - max(created_at, scheduled_at)``: how long a job that
could run waited for a slot (a job scheduled for later is not counted as waiting).

What this module is not: it serves nothing (see ``server.py``) and never touches the
global default registry.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import NamedTuple, Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

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


class WorkerMetrics:
    """The worker's metrics and the registry they live on."""

    def __init__(self, source: SlotSource, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.registry.register(SlotCollector(source))
        self.jobs = Counter(
            "slotfleet_jobs",
            "Attempts that ended, by outcome.",
            ["queue", "outcome"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "slotfleet_job_duration_seconds",
            "Seconds an attempt ran.",
            ["queue"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.pickup = Histogram(
            "slotfleet_job_pickup_latency_seconds",
            "Seconds a ready job waited before a worker started it.",
            ["queue"],
            buckets=PICKUP_BUCKETS,
            registry=self.registry,
        )

        # Labelled children, looked up once per queue (and outcome): ``labels()`` takes a
        # lock and builds a key on every call, which showed up in per-job profiles.
        self._pickup_by_queue: dict[str, Histogram] = {}
        self._duration_by_queue: dict[str, Histogram] = {}
        self._jobs_by_key: dict[tuple[str, str], Counter] = {}

    def job_started(self, job: ClaimedJob) -> None:
        if job.started_at is None:
            return
        ready = max(job.created_at, job.scheduled_at) if job.scheduled_at else job.created_at
        pickup = self._pickup_by_queue.get(job.queue)
        if pickup is None:
            pickup = self._pickup_by_queue[job.queue] = self.pickup.labels(job.queue)
        pickup.observe(max(0.0, (job.started_at - ready).total_seconds()))

    def job_completed(self, queue: str, outcome: str, duration: float) -> None:
        jobs = self._jobs_by_key.get((queue, outcome))
        if jobs is None:
            jobs = self._jobs_by_key[(queue, outcome)] = self.jobs.labels(queue, outcome)
        jobs.inc()
        hist = self._duration_by_queue.get(queue)
        if hist is None:
            hist = self._duration_by_queue[queue] = self.duration.labels(queue)
        hist.observe(duration)

    def render(self) -> bytes:
        return generate_latest(self.registry)
