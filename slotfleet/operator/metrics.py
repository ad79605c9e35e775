"""What the operator knows about each Queue, as Prometheus gauges.

Workers export slots; only the operator reads the backlog from the store. Exporting it
lets an HPA in ``mode: hpa`` scale on demand (busy slots + ready jobs, the
``slotfleet_queue_demand`` rule of the chart's prometheus-adapter rules) and never below
the pods running jobs, and lets a dashboard show the backlog without a database exporter.

Gauges, by ``namespace`` and ``queue`` (the queue name, as on the workers' slot
metrics) and ``resource`` (the Queue object's name):

* ``slotfleet_queue_pending``: jobs ready to run now;
* ``slotfleet_queue_scheduled``: jobs waiting for their ``scheduled_at``;
* ``slotfleet_queue_running``: jobs running;
* ``slotfleet_queue_busy_pods``: worker pods holding a running job (by lease owner, or
  heartbeat), the pods a scale-down must keep: the floor of an HPA in ``mode: hpa``
  (``slotfleet.operator.hpa``), as of the built-in autoscaler;
* ``slotfleet_queue_desired_replicas``: the built-in autoscaler's last answer
  (``mode: operator`` only);
* ``slotfleet_queue_store_up``: 1 when the last store read answered, else 0 (the backlog
  gauges then keep their last values);
* ``slotfleet_queue_purged_total`` (counter): finished jobs deleted under the Queue's
  ``retentionSeconds`` since the operator started.

The ``namespace`` label names the Queue's namespace, not the operator's: scrape the
operator with ``honorLabels: true`` (the chart's PodMonitor does).

What this module is not: a server (``slotfleet.health_server`` serves the registry) and
it reads nothing by itself; the reconciler hands it each observation.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from slotfleet.models import QueueStats

LABELS = ["namespace", "queue", "resource"]


@dataclass(frozen=True)
class QueueFigures:
    """One Queue's last observation."""

    queue: str
    stats: QueueStats | None
    """``None`` when the store did not answer this time."""
    desired_replicas: int | None = None
    busy_pods: int = 0
    """Worker pods holding a running job (meaningful only when ``stats`` is not None)."""


class QueueCollector(Collector):
    """Gauges from the last figures of every tracked Queue, built at scrape time."""

    def __init__(self) -> None:
        self._figures: dict[tuple[str, str], QueueFigures] = {}
        self._last_stats: dict[tuple[str, str], tuple[QueueStats, int]] = {}
        self._purged: dict[tuple[str, str], int] = {}

    def observe(self, namespace: str, resource: str, figures: QueueFigures) -> None:
        key = (namespace, resource)
        self._figures[key] = figures
        if figures.stats is not None:
            self._last_stats[key] = (figures.stats, figures.busy_pods)

    def purged(self, namespace: str, resource: str, count: int) -> None:
        key = (namespace, resource)
        self._purged[key] = self._purged.get(key, 0) + count

    def forget(self, namespace: str, resource: str) -> None:
        self._figures.pop((namespace, resource), None)
        self._last_stats.pop((namespace, resource), None)
        self._purged.pop((namespace, resource), None)

    def collect(self) -> Iterator[Metric]:
        families = {
            "pending": GaugeMetricFamily(
                "slotfleet_queue_pending", "Jobs ready to run now.", labels=LABELS
            ),
            "scheduled": GaugeMetricFamily(
                "slotfleet_queue_scheduled", "Jobs waiting for their scheduled time.", labels=LABELS
            ),
            "running": GaugeMetricFamily("slotfleet_queue_running", "Jobs running.", labels=LABELS),
            "busy_pods": GaugeMetricFamily(
                "slotfleet_queue_busy_pods", "Worker pods running a job.", labels=LABELS
            ),
        }
        desired = GaugeMetricFamily(
            "slotfleet_queue_desired_replicas",
            "Worker pods the built-in autoscaler asked for.",
            labels=LABELS,
        )
        purged = CounterMetricFamily(
            "slotfleet_queue_purged",
            "Finished jobs deleted under the Queue's retentionSeconds.",
            labels=LABELS,
        )
        up = GaugeMetricFamily(
            "slotfleet_queue_store_up", "1 if the job store answered the last read.", labels=LABELS
        )
        for (namespace, resource), figures in sorted(self._figures.items()):
            labels = [namespace, figures.queue, resource]
            up.add_metric(labels, 0 if figures.stats is None else 1)
            last = self._last_stats.get((namespace, resource))
            if last is not None:
                stats, busy_pods = last
                families["pending"].add_metric(labels, stats.ready)
                families["scheduled"].add_metric(labels, stats.scheduled)
                families["running"].add_metric(labels, stats.running)
                families["busy_pods"].add_metric(labels, busy_pods)
            if figures.desired_replicas is not None:
                desired.add_metric(labels, figures.desired_replicas)
            purged.add_metric(labels, self._purged.get((namespace, resource), 0))
        yield from families.values()
        yield desired
        yield purged
        yield up


class OperatorMetrics:
    """The operator's registry (never the global default) and its Queue gauges."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.queues = QueueCollector()
        self.registry.register(self.queues)

    def render(self) -> bytes:
        return generate_latest(self.registry)
