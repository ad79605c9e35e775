"""What the HorizontalPodAutoscaler of a Queue in ``autoscaling.mode: hpa`` scales on.

Pure: the ``metrics`` and ``behavior`` of the autoscaling/v2 HPA that
:func:`slotfleet.operator.builders.build_hpa` wraps in a manifest. The metric names are
the ones the chart's prometheus-adapter rules serve
(``charts/slotfleet/templates/prometheus-adapter-rules.yaml``); ``tests/kube/test_chart.py``
checks the two agree and ``tests/kube/test_hpa.py`` runs them through a real Prometheus,
prometheus-adapter and HPA controller.

An HPA takes the largest replica count any of its metrics asks for:

* **demand** (External ``slotfleet_queue_demand``: busy slots + ready jobs, per queue) with
  an ``AverageValue`` target of ``concurrency * targetUtilization`` slots per pod: the HPA
  then computes ``ceil((busy + ready) / (concurrency * targetUtilization))``, the built-in
  autoscaler's formula (``slotfleet.scaling``), from any current size, zero included. A
  burst of N jobs asks for the pods N jobs need in one pass; the busy ratio alone
  saturates at 1.0, so it can never ask for more than ``current / target`` pods a pass;
* **busy pods** (External ``slotfleet_queue_busy_pods``: worker pods that hold a running
  job, from the operator) with an ``AverageValue`` target of 1: the HPA never asks for
  fewer pods than run jobs, the floor ``mode: operator`` keeps too. With each busy pod's
  ``pod-deletion-cost`` at its busy slots, a scale-down removes idle pods;
* **busy ratio** (Pods ``slotfleet_slots_busy_ratio``, each pod's busy/total slots) with an
  ``AverageValue`` target of ``targetUtilization``: what the fleet's own slots say, which
  keeps the HPA sizing when the operator's backlog gauge is late or missing.

``behavior``: scale up at once (one ``Pods`` policy as large as ``maxReplicas``, or
``maxScaleUpStep`` pods per period), and down after ``scaleDownStabilizationSeconds``
(``maxScaleDownStep`` pods per period when set). HPA policies count per period, not per
pass: ``POLICY_PERIOD_SECONDS`` is the HPA controller's default sync period.

What this module is not: it builds no manifest metadata (``builders`` does) and knows
nothing of Prometheus; which series a metric comes from is the adapter rules' business.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

from slotfleet.models.resource import AutoscalingSpec

Json = dict[str, Any]

#: Pods metric: a worker pod's busy slots over its slots, in [0, 1].
RATIO_METRIC = "slotfleet_slots_busy_ratio"
#: External metric, per namespace and ``queue`` label: busy slots + ready jobs.
DEMAND_METRIC = "slotfleet_queue_demand"
#: External metric, per namespace and ``queue`` label: worker pods holding a running job.
BUSY_PODS_METRIC = "slotfleet_queue_busy_pods"
#: Period of the step policies: the HPA controller's default sync period
#: (``--horizontal-pod-autoscaler-sync-period``), so a step is about one pass.
POLICY_PERIOD_SECONDS = 15


def quantity(value: Fraction) -> str:
    """A Kubernetes quantity for a positive fraction, in milli-units when it is not whole
    (2 -> ``2``, 1.6 -> ``1600m``); past a thousandth it rounds to the nearest, never to
    zero (an HPA target must be positive)."""
    if value.denominator == 1:
        return str(value.numerator)
    return f"{max(1, round(value * 1000))}m"


def slots_per_pod_target(concurrency: int, scaling: AutoscalingSpec) -> Fraction:
    """Busy slots one pod is meant to carry: ``concurrency * targetUtilization``, exact
    (the target as the decimal the user wrote, as ``slotfleet.scaling`` takes it)."""
    return concurrency * Fraction(str(scaling.target_utilization))


def hpa_metrics(queue_name: str, concurrency: int, scaling: AutoscalingSpec) -> list[Json]:
    """The HPA's ``spec.metrics``: demand, busy pods, busy ratio (see the module doc)."""
    per_queue = {"matchLabels": {"queue": queue_name}}

    def external(name: str, average: Fraction) -> Json:
        return {
            "type": "External",
            "external": {
                "metric": {"name": name, "selector": per_queue},
                "target": {"type": "AverageValue", "averageValue": quantity(average)},
            },
        }

    return [
        external(DEMAND_METRIC, slots_per_pod_target(concurrency, scaling)),
        external(BUSY_PODS_METRIC, Fraction(1)),
        {
            "type": "Pods",
            "pods": {
                "metric": {"name": RATIO_METRIC},
                "target": {
                    "type": "AverageValue",
                    "averageValue": quantity(Fraction(str(scaling.target_utilization))),
                },
            },
        },
    ]


def hpa_behavior(scaling: AutoscalingSpec) -> Json:
    """The HPA's ``spec.behavior``: up at once (or by ``maxScaleUpStep``), down after the
    stabilization window (by ``maxScaleDownStep`` when set, else the HPA's default)."""

    def pods_per_period(value: int) -> list[Json]:
        return [{"type": "Pods", "value": value, "periodSeconds": POLICY_PERIOD_SECONDS}]

    up_step = scaling.max_scale_up_step or scaling.max_replicas
    scale_down: Json = {"stabilizationWindowSeconds": scaling.scale_down_stabilization_seconds}
    if scaling.max_scale_down_step is not None:
        scale_down["selectPolicy"] = "Max"
        scale_down["policies"] = pods_per_period(scaling.max_scale_down_step)
    return {
        "scaleUp": {
            "stabilizationWindowSeconds": 0,
            "selectPolicy": "Max",
            "policies": pods_per_period(up_step),
        },
        "scaleDown": scale_down,
    }
