"""The local fleet: a Queue manifest run as ``slotfleet worker`` processes on this machine,
sized by the same autoscaler as the operator's. No cluster, no kopf."""

from slotfleet.fleet.manifest import (
    Override,
    QueueManifest,
    load_queue_manifest,
    parse_override,
    parse_queue_manifest,
)
from slotfleet.fleet.runner import (
    Launcher,
    LocalFleet,
    Process,
    SubprocessLauncher,
    choose_victims,
    worker_command,
)

__all__ = [
    "Launcher",
    "LocalFleet",
    "Override",
    "Process",
    "QueueManifest",
    "SubprocessLauncher",
    "choose_victims",
    "load_queue_manifest",
    "parse_override",
    "parse_queue_manifest",
    "worker_command",
]
