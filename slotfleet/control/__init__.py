"""The fleet-control core shared by the operator and the local fleet.

Kopf-free and cluster-free: one tick's view of a queue (:mod:`.view`), one sizer that
keeps the autoscaler's state and builds its observation (:mod:`.sizer`), the tick that
marks busy members and resizes through a :class:`~slotfleet.control.port.FleetPort`
(:mod:`.tick`), the retention cadence (:mod:`.retention`) and the one writer of the
worker's command line (:mod:`.argv`). The operator implements the port with pods and
the Queue's ``/scale``; the local fleet with processes.
"""

from slotfleet.control.argv import number, worker_args
from slotfleet.control.port import FleetPort
from slotfleet.control.retention import Retention
from slotfleet.control.sizer import Sizer
from slotfleet.control.tick import cost_bucket, size_fleet
from slotfleet.control.view import QueueView, read_views

__all__ = [
    "FleetPort",
    "QueueView",
    "Retention",
    "Sizer",
    "cost_bucket",
    "number",
    "read_views",
    "size_fleet",
    "worker_args",
]
