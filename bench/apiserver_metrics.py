"""Reading counters from a Prometheus text exposition (the API server's ``/metrics``).

``bench/operator_scale.py`` counts the operator's API requests with the API server's own
API Priority and Fairness counter,
``apiserver_flowcontrol_dispatched_requests_total{flow_schema=...}``, under a FlowSchema
that matches only the operator's ServiceAccount. This module only parses text: it does
no I/O and knows nothing of Kubernetes beyond the exposition format.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})?\s+(?P<value>\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


class MetricsError(ValueError):
    """The exposition has no sample of the counter asked for."""


def parse_labels(text: str) -> dict[str, str]:
    """``a="x",b="y\\"z"`` -> ``{"a": "x", "b": 'y"z'}``."""
    return {
        key: value.replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\")
        for key, value in _LABEL.findall(text)
    }


def counter_sum(text: str, name: str, labels: Mapping[str, str] | None = None) -> float:
    """The sum of every sample of ``name`` whose labels include ``labels``.

    Raises :class:`MetricsError` when no sample matches (a counter absent from the
    exposition has not been incremented yet, or is misnamed: the caller decides)."""
    wanted = dict(labels or {})
    total, found = 0.0, False
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        match = _SAMPLE.match(line)
        if match is None or match.group("name") != name:
            continue
        have = parse_labels(match.group("labels") or "")
        if all(have.get(k) == v for k, v in wanted.items()):
            total += float(match.group("value"))
            found = True
    if not found:
        shown = ",".join(f'{k}="{v}"' for k, v in wanted.items())
        raise MetricsError(f"no sample of {name}{{{shown}}} in the exposition")
    return total
