"""``bench/apiserver_metrics.py``: the counter reader ``bench/operator_scale.py`` counts
the operator's API requests with, on text shaped like kube-apiserver's ``/metrics``."""

from __future__ import annotations

import pytest

from bench.apiserver_metrics import MetricsError, counter_sum, parse_labels
from bench.operator_scale_env import flow_schema

D = "apiserver_flowcontrol_dispatched_requests_total"
OURS = 'flow_schema="slotfleet-operator-bench"'
EXPOSITION = "\n".join(
    [
        f"# HELP {D} [BETA] Number of requests executed by API Priority and Fairness",
        f"# TYPE {D} counter",
        f'{D}{{flow_schema="exempt",priority_level="exempt"}} 912',
        f'{D}{{{OURS},priority_level="workload-low"}} 1.5e+03',
        f"{D}_extra{{{OURS}}} 7",
        f'{D}{{flow_schema="service-accounts",priority_level="workload-low"}} 40',
        'apiserver_request_total{code="200",verb="GET",note="a \\"quoted\\", comma"} 3',
    ]
)


def test_sums_only_samples_with_the_wanted_labels() -> None:
    name = D
    assert counter_sum(EXPOSITION, name, {"flow_schema": "slotfleet-operator-bench"}) == 1500
    assert counter_sum(EXPOSITION, name, {"priority_level": "workload-low"}) == 1540
    assert counter_sum(EXPOSITION, name) == 2452  # a longer metric name is another metric


def test_a_missing_counter_is_an_error_naming_it() -> None:
    with pytest.raises(MetricsError, match='flow_schema="nope"'):
        counter_sum(
            EXPOSITION, "apiserver_flowcontrol_dispatched_requests_total", {"flow_schema": "nope"}
        )


def test_label_values_with_quotes_and_commas() -> None:
    labels = parse_labels('code="200",note="a \\"quoted\\", comma"')
    assert labels == {"code": "200", "note": 'a "quoted", comma'}
    assert counter_sum(EXPOSITION, "apiserver_request_total", {"note": 'a "quoted", comma'}) == 3


def test_the_flow_schema_matches_the_charts_service_account_alone() -> None:
    spec = flow_schema()["spec"]
    (rule,) = spec["rules"]
    assert rule["subjects"] == [
        {
            "kind": "ServiceAccount",
            "serviceAccount": {"name": "slotfleet", "namespace": "slotfleet-system"},
        }
    ]
    assert spec["priorityLevelConfiguration"] == {"name": "workload-low"}
