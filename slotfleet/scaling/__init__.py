"""The autoscaler shared by the operator and the local fleet: pure, no I/O, no clock.

See :mod:`slotfleet.scaling.autoscaler` for the rules and why they size on demand.
"""

from slotfleet.scaling.autoscaler import (
    Decision,
    Observation,
    ScalerState,
    decide,
    raw_replicas,
)
from slotfleet.scaling.busy import busy_by_worker

__all__ = [
    "Decision",
    "Observation",
    "ScalerState",
    "busy_by_worker",
    "decide",
    "raw_replicas",
]
