"""The operator's Queue gauges: what a scrape shows after each observation."""

from __future__ import annotations

from slotfleet.models import QueueStats
from slotfleet.operator.metrics import OperatorMetrics, QueueFigures


def sample(text: str, name: str, resource: str) -> float | None:
    prefix = f'{name}{{namespace="team-a",queue="mail",resource="{resource}"}} '
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line.removeprefix(prefix))
    return None


def test_backlog_running_desired_and_store_up() -> None:
    metrics = OperatorMetrics()
    stats = QueueStats(queue="mail", ready=7, scheduled=2, running=3)
    metrics.queues.observe(
        "team-a", "emails", QueueFigures("mail", stats, desired_replicas=4, busy_pods=2)
    )
    text = metrics.render().decode()
    assert sample(text, "slotfleet_queue_pending", "emails") == 7
    assert sample(text, "slotfleet_queue_scheduled", "emails") == 2
    assert sample(text, "slotfleet_queue_running", "emails") == 3
    assert sample(text, "slotfleet_queue_desired_replicas", "emails") == 4
    assert sample(text, "slotfleet_queue_busy_pods", "emails") == 2
    assert sample(text, "slotfleet_queue_store_up", "emails") == 1


def test_store_down_keeps_the_last_backlog_and_says_so() -> None:
    metrics = OperatorMetrics()
    stats = QueueStats(queue="mail", ready=5)
    metrics.queues.observe("team-a", "emails", QueueFigures("mail", stats, busy_pods=3))
    metrics.queues.observe("team-a", "emails", QueueFigures("mail", None))
    text = metrics.render().decode()
    assert sample(text, "slotfleet_queue_pending", "emails") == 5
    # an HPA's busy-pods floor must not drop while the store does not answer
    assert sample(text, "slotfleet_queue_busy_pods", "emails") == 3
    assert sample(text, "slotfleet_queue_store_up", "emails") == 0
    # no autoscaler answer (mode hpa or off): no desired-replicas sample at all
    assert sample(text, "slotfleet_queue_desired_replicas", "emails") is None


def test_a_forgotten_queue_disappears() -> None:
    metrics = OperatorMetrics()
    for resource in ("emails", "other"):
        metrics.queues.observe(
            "team-a", resource, QueueFigures("mail", QueueStats(queue="mail", ready=1))
        )
    metrics.queues.forget("team-a", "emails")
    text = metrics.render().decode()
    assert sample(text, "slotfleet_queue_pending", "emails") is None
    assert sample(text, "slotfleet_queue_pending", "other") == 1
