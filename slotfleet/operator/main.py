"""Run the operator: kopf settings, the registry, and :func:`run_operator`.

``slotfleet operator`` (``slotfleet/cli/operator_cmd.py``) parses flags and calls
:func:`run_operator`; this module owns the choices about kopf itself:

* progress and the last-handled spec are kept in annotations under ``slotfleet.dev/``
  (the Queue's structural schema would prune kopf's own ``status`` fields);
* no finalizers: children are removed by the garbage collector via owner references,
  and the only delete handler is optional;
* Events at INFO and above are posted to the Queue;
* peering: ``standalone`` (kopf's own; several replicas take turns through the Lease of
  ``--leader-elect``, see ``operator/election.py``) or a named KopfPeering object.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

import kopf

from slotfleet.health_server import HealthServer, MetricsServerConfig
from slotfleet.kube_client import load_api_client
from slotfleet.models.resource import GROUP
from slotfleet.operator.cache import ClusterCache
from slotfleet.operator.election import (
    ElectionOptions,
    LeaseElector,
    address_of,
    run_elected,
)
from slotfleet.operator.handlers import register
from slotfleet.operator.kube import KubeClient, KubeEvents
from slotfleet.operator.metrics import OperatorMetrics
from slotfleet.operator.observer import QueueObserver
from slotfleet.operator.reconciler import QueueReconciler
from slotfleet.operator.stores import StoreCache


@dataclass(frozen=True)
class OperatorOptions:
    """How the operator runs (``slotfleet operator --help`` lists them as flags)."""

    namespaces: tuple[str, ...] | None = None
    """Namespaces to watch; ``None`` watches every namespace (cluster-wide)."""
    liveness: str | None = None
    """kopf's liveness endpoint, e.g. ``http://0.0.0.0:8080/healthz``; ``None``: none."""
    peering: str | None = None
    """KopfPeering name to coordinate through; ``None`` runs standalone."""
    interval: float = 2.0
    """Seconds between observations of each Queue (status, autoscaling, deletion costs)."""
    store_timeout: float = 5.0
    """Seconds one store read may take before the store counts as unreachable."""
    metrics: MetricsServerConfig | None = None
    """Where to serve ``/metrics`` (the Queue gauges of ``operator/metrics.py``);
    ``None``: not served."""
    election: ElectionOptions | None = None
    """Run only while holding this Lease (``--leader-elect``); ``None``: always run."""


def build_settings(options: OperatorOptions) -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.posting.enabled = True
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 60
    return settings


async def operate(options: OperatorOptions, may_write: Callable[[], bool] | None = None) -> None:
    """Run until stopped (SIGINT/SIGTERM); ``may_write``: see ``KubeClient``."""
    api = load_api_client()
    kube = KubeClient(api, may_write=may_write)
    stores = StoreCache()
    metrics = OperatorMetrics()
    # Events name the replica that wrote them (the Lease holder under --leader-elect)
    instance = options.election.identity if options.election else None
    events = KubeEvents(kube, instance=instance)
    reconciler = QueueReconciler(
        kube, stores, events, store_timeout=options.store_timeout, metrics=metrics
    )
    observer = QueueObserver(reconciler, stores)
    cache = ClusterCache(api, kube, options.namespaces, observer.touch)
    registry = kopf.OperatorRegistry()
    register(registry, reconciler, observer, stores, interval=options.interval, cache=cache)
    server = None
    if options.metrics is not None:
        server = HealthServer(
            options.metrics, render_metrics=metrics.render, alive=lambda: True, not_ready=_ready
        )
        await server.start()
    try:
        await kopf.operator(
            registry=registry,
            settings=build_settings(options),
            standalone=options.peering is None,
            peering_name=options.peering,
            liveness_endpoint=options.liveness,
            clusterwide=options.namespaces is None,
            namespaces=list(options.namespaces or ()),
        )
    finally:
        if server is not None:
            await server.stop()
        await stores.close()
        kube.close()


def _ready() -> str | None:
    return None  # the server only serves /metrics here; kopf has its own liveness


async def operate_elected(options: OperatorOptions, election: ElectionOptions) -> None:
    """:func:`operate` only while this process holds the Lease (``operator/election.py``)."""
    # its own client and threads: renewals never queue behind the operator's API calls
    kube = KubeClient(load_api_client(), concurrency=2)
    try:
        elector = LeaseElector(kube, election)
        # a follower answers where the leader will serve: liveness and /metrics
        standby = [address_of(options.liveness)] if options.liveness else []
        if options.metrics is not None:
            standby.append((options.metrics.host, options.metrics.port))
        await run_elected(elector, lambda: operate(options, elector.leading), standby=standby)
    finally:
        kube.close()


def run_operator(options: OperatorOptions) -> None:
    if options.election is None:
        asyncio.run(operate(options))
    else:
        asyncio.run(operate_elected(options, options.election))
