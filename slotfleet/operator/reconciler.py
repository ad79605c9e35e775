"""What the operator does for one Queue: apply its children, observe it, size it.

The kopf handlers (``slotfleet.operator.handlers``) only unpack kopf's arguments and
call :class:`QueueReconciler`. Two entry points:

* :meth:`QueueReconciler.apply_children` on create, resume and spec changes: server-side
  apply of everything the builders produce (idempotent: a restart or a retry changes
  nothing; names are fixed, so there are never duplicates), and removal of children the
  spec no longer wants (the HPA when the mode changes, the Service, the PodMonitor);
* :meth:`QueueReconciler.observe` every few seconds (:meth:`observe_forever`): read the
  DSN from the Secret, the store's figures, running jobs and cancel requests, the
  Deployment and its pods (a container the kubelet cannot start is ``Degraded``); keep
  pods' deletion cost at their busy slots (running jobs by lease owner,
  or the heartbeat if higher) and size the fleet (``mode: operator``), never below the
  pods that run a job and only once their costs are in place (both in
  ``slotfleet.operator.sizing``); write ``status`` when it
  changed; with ``retentionSeconds``, delete finished jobs past it about once a minute.

Errors the user can fix become conditions and Events, never crashes: a missing Secret
is ``Degraded/SecretNotFound``; an unreachable database is ``StoreReachable=False``
with the driver's one-line error (the DSN's password scrubbed from it), and recovers on
a later tick by itself. A child the API server refuses (422: the spec asks for a pod it
will never accept) is permanent: ``Degraded/ChildRejected`` with the server's message,
one Warning Event, and no retry until the Queue or its Secret changes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from slotfleet.models import SlotfleetError, describe_validation_error
from slotfleet.models.resource import (
    PURGE_BATCH,
    RETENTION_CHECK_SECONDS,
    AutoscalingMode,
    QueueSpec,
)
from slotfleet.operator import status as st
from slotfleet.operator.builders import API_VERSION, QueueRef, build_children, selector_string
from slotfleet.operator.kube import KubeApiError, KubeClient
from slotfleet.operator.metrics import OperatorMetrics, QueueFigures
from slotfleet.operator.secrets import read_dsn
from slotfleet.operator.sizing import (
    EventSink,
    SizingMemory,
    autoscale,
    update_deletion_costs,
    write_replicas,
)
from slotfleet.operator.stores import StoreCache, StoreView, purge_finished, read_view
from slotfleet.store.dsn import scrub
from slotfleet.store.rows import one_line

Json = dict[str, Any]

#: Retention (``spec.retentionSeconds``): batches of PURGE_BATCH at most per round.
PURGE_BATCHES = 10
logger = logging.getLogger(__name__)


@dataclass
class _QueueMemory:
    """What the operator remembers about one Queue between ticks (lost on restart, which
    is fine: each item is re-derived on the next create/resume or tick)."""

    applied_generation: int | None = None
    apply_error: str | None = None
    rejected: tuple[int, str | None] | None = None
    """``(generation, Secret resourceVersion)`` when the API server last refused a child
    (422): applying again waits until either changes."""
    sizing: SizingMemory = field(default_factory=SizingMemory)
    pod_monitor_warned: int | None = None
    last_purge: float | None = None
    """``time.monotonic()`` of the last retention purge."""


class ChildRejected(SlotfleetError):
    """The API server refused a child of the Queue as invalid (422); retrying the same
    spec cannot help."""


class QueueReconciler:
    """Reconciles Queues. One instance per operator process."""

    def __init__(
        self,
        kube: KubeClient,
        stores: StoreCache,
        events: EventSink,
        *,
        store_timeout: float = 5.0,
        metrics: OperatorMetrics | None = None,
    ) -> None:
        self.kube = kube
        self.stores = stores
        self.events = events
        self.store_timeout = store_timeout
        self.metrics = metrics or OperatorMetrics()
        self._memory: dict[tuple[str, str], _QueueMemory] = {}
        self._pod_monitor_api: bool | None = None
        self._tracked: dict[tuple[str, str], None] = {}

    def _mem(self, ref: QueueRef) -> _QueueMemory:
        return self._memory.setdefault((ref.namespace, ref.name), _QueueMemory())

    def track(self, namespace: str, name: str) -> None:
        """Observe this Queue from now on (see :meth:`observe_forever`)."""
        self._tracked.setdefault((namespace, name), None)

    def forget(self, namespace: str, name: str) -> None:
        self._tracked.pop((namespace, name), None)
        self._memory.pop((namespace, name), None)
        self.metrics.queues.forget(namespace, name)

    async def observe_forever(self, interval: float) -> None:
        """Observe every tracked Queue every ``interval`` seconds, concurrently; one
        Queue's failure is logged and never stops the others."""
        while True:
            started = time.monotonic()
            keys = list(self._tracked)
            results = await asyncio.gather(
                *(self._observe_key(ns, name) for ns, name in keys), return_exceptions=True
            )
            for (ns, name), result in zip(keys, results, strict=True):
                if isinstance(result, Exception):
                    logger.warning("observing Queue %s/%s failed: %s", ns, name, one_line(result))
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))

    async def _observe_key(self, namespace: str, name: str) -> None:
        body = await self.kube.get(API_VERSION, "Queue", namespace, name)
        if body is None:
            self.forget(namespace, name)
            return
        if body["metadata"].get("deletionTimestamp"):
            return
        await self.observe(body)

    @staticmethod
    def ref_of(body: Mapping[str, Any]) -> QueueRef:
        meta = body["metadata"]
        return QueueRef(name=meta["name"], namespace=meta["namespace"], uid=meta["uid"])

    def parse_spec(self, body: Mapping[str, Any]) -> QueueSpec:
        """The spec as the model; the API server validated it, so failures are rare
        (an object stored before a schema change)."""
        return QueueSpec.model_validate(dict(body.get("spec") or {}))

    # ------------------------------------------------------------------ children

    async def apply_children(self, body: Mapping[str, Any]) -> None:
        """Apply every child the spec wants and remove the others; fill in
        ``spec.replicas`` when the spec leaves it out. Raises :class:`ChildRejected`
        (permanent) when the API server refuses a child as invalid, ``KubeApiError``
        (worth a retry) for any other API failure."""
        ref = self.ref_of(body)
        memory = self._mem(ref)
        generation = int(body["metadata"].get("generation", 0))
        try:
            spec = self.parse_spec(body)
        except ValidationError as exc:
            memory.apply_error = describe_validation_error(exc, "spec")
            self.events.warn(body, "InvalidSpec", memory.apply_error)
            raise
        monitor_api = await self._has_pod_monitor_api()
        if spec.pod_monitor and not monitor_api and memory.pod_monitor_warned != generation:
            memory.pod_monitor_warned = generation
            self.events.warn(
                body,
                "PodMonitorUnavailable",
                "spec.podMonitor is true but the PodMonitor CRD (monitoring.coreos.com) is "
                "not installed; skipping it",
            )
        try:
            for child in build_children(ref, spec, pod_monitor_available=monitor_api):
                try:
                    await self.kube.apply(child)
                except KubeApiError as exc:
                    if not exc.invalid:
                        raise
                    kind, name = child["kind"], child["metadata"]["name"]
                    raise ChildRejected(
                        f"the API server refused {kind} {name}: {exc.detail}"
                    ) from exc
            await self._remove_unwanted(ref, spec, monitor_api)
            if "replicas" not in (body.get("spec") or {}):
                # the schema has no default: the first size depends on the mode
                await write_replicas(self.kube, ref, spec.replicas)
        except (ChildRejected, KubeApiError) as exc:
            message = str(exc)
            reason = "ApplyFailed"
            if isinstance(exc, ChildRejected):
                reason = "ChildRejected"
                memory.rejected = (generation, (await read_dsn(self.kube, ref, spec)).version)
            if message != memory.apply_error:  # one Event per failure, not per retry
                self.events.warn(body, reason, message)
            memory.apply_error = message
            raise
        if memory.applied_generation != generation:
            self.events.info(
                body, "Applied", f"worker fleet configured for generation {generation}"
            )
        memory.applied_generation = generation
        memory.apply_error = None
        memory.rejected = None

    async def _has_pod_monitor_api(self) -> bool:
        if self._pod_monitor_api is None:
            try:
                self._pod_monitor_api = await self.kube.has_api(
                    "monitoring.coreos.com/v1", "podmonitors"
                )
            except KubeApiError:
                return False
        return self._pod_monitor_api

    async def _remove_unwanted(self, ref: QueueRef, spec: QueueSpec, monitor_api: bool) -> None:
        unwanted: list[tuple[str, str, str]] = []
        if spec.pod_disruption_budget is None:
            unwanted.append(("policy/v1", "PodDisruptionBudget", ref.worker_name))
        if spec.autoscaling.mode is not AutoscalingMode.HPA:
            unwanted.append(("autoscaling/v2", "HorizontalPodAutoscaler", ref.name))
        if not spec.metrics_service:
            unwanted.append(("v1", "Service", ref.metrics_service_name))
        if not spec.pod_monitor and monitor_api:
            unwanted.append(("monitoring.coreos.com/v1", "PodMonitor", ref.name))
        for api_version, kind, name in unwanted:
            found = await self.kube.get(api_version, kind, ref.namespace, name)
            owners = (found or {}).get("metadata", {}).get("ownerReferences") or []
            if any(o.get("uid") == ref.uid for o in owners):
                await self.kube.delete(api_version, kind, ref.namespace, name)

    # ------------------------------------------------------------------ observe

    async def observe(self, body: Mapping[str, Any]) -> None:
        """One tick: gather, decide, write. Called by the timer."""
        ref = self.ref_of(body)
        memory = self._mem(ref)
        generation = int(body["metadata"].get("generation", 0))
        previous: Mapping[str, Any] = body.get("status") or {}
        spec = self.parse_spec(body)
        queue = spec.effective_queue_name(ref.name)
        now = st.rfc3339(datetime.now(UTC))

        deployment = await self.kube.get("apps/v1", "Deployment", ref.namespace, ref.worker_name)
        pods = await self.kube.list("v1", "Pod", ref.namespace, label_selector=selector_string(ref))
        secret = await read_dsn(self.kube, ref, spec)
        dsn, degraded = secret.dsn, secret.problem
        if memory.rejected is not None and memory.rejected != (generation, secret.version):
            await self._reapply_after_rejection(body)
        if degraded is None and memory.apply_error:
            reason = "ChildRejected" if memory.rejected else "ApplyFailed"
            degraded = st.ConditionUpdate(st.DEGRADED, True, reason, memory.apply_error)
        if degraded is None:
            degraded = st.worker_problem(pods)
        view = (
            await read_view(self.stores, dsn, queue, self.store_timeout)
            if dsn
            else StoreView(None, None, [], None)
        )
        if dsn and view.error is None and spec.retention_seconds is not None:
            await self._purge_finished(ref, dsn, queue, spec.retention_seconds, memory)
        if dsn is None:
            store_cond = st.ConditionUpdate(
                st.STORE_REACHABLE, None, "NoDSN", "the store DSN cannot be read"
            )
        elif view.error is not None:
            store_cond = st.ConditionUpdate(
                st.STORE_REACHABLE, False, "StoreError", scrub(view.error, dsn)
            )
        else:
            store_cond = st.ConditionUpdate(st.STORE_REACHABLE, True, "Connected", "")

        pause = st.pause_view(spec.paused, view.stats, previous, queue)
        conditions = [store_cond, pause.condition]
        conditions.append(degraded or st.ConditionUpdate(st.DEGRADED, False, "AsExpected", ""))
        ready_replicas = int(((deployment or {}).get("status") or {}).get("readyReplicas") or 0)
        conditions.append(
            st.ready_condition(
                degraded=degraded,
                store_ok=store_cond.status,
                ready=ready_replicas,
                wanted=spec.replicas,
            )
        )

        # Deletion costs first: a scale-down written this tick must find every busy pod
        # already marked, or the ReplicaSet controller may pick a busy one.
        busy_pods, costs_settled = await update_deletion_costs(self.kube, ref, queue, view, pods)

        desired: int | None = None
        last_scale: str | None = None
        drop: tuple[str, ...] = ()
        if spec.autoscaling.mode is AutoscalingMode.OPERATOR:
            if view.stats is not None:
                decision = await autoscale(
                    self.kube,
                    self.events,
                    body,
                    ref,
                    spec,
                    view.stats,
                    memory.sizing,
                    busy_pods=busy_pods,
                    costs_settled=costs_settled,
                    paused=pause.paused,
                )
                desired = decision.desired
                changed = decision.replicas != spec.replicas
                if changed:
                    last_scale = now
                conditions.append(
                    st.ConditionUpdate(
                        st.SCALING, changed, "Scaled" if changed else "Steady", decision.reason
                    )
                )
        else:
            drop = (st.SCALING,)

        self.metrics.queues.observe(
            ref.namespace, ref.name, QueueFigures(queue, view.stats, desired, busy_pods)
        )
        self._report_transitions(body, previous, conditions)
        new_status = st.build_status(
            previous,
            st.Observed(
                generation=generation,
                applied_generation=memory.applied_generation,
                spec_replicas=spec.replicas,
                deployment=deployment,
                selector=selector_string(ref),
                stats=view.stats,
                cancellations=view.cancellations,
                conditions=conditions,
                drop_conditions=drop,
                desired_replicas=desired,
                last_scale_time=last_scale,
                pause=pause,
            ),
            now=now,
        )
        if st.status_changed(previous, new_status):
            await self.kube.merge_patch(
                API_VERSION,
                "Queue",
                ref.namespace,
                ref.name,
                {"status": new_status},
                subresource="status",
            )

    async def _reapply_after_rejection(self, body: Mapping[str, Any]) -> None:
        """The Queue or its Secret changed since the API server refused a child: try
        once more (kopf retries a spec change by itself; a Secret change only shows here)."""
        ref = self.ref_of(body)
        where = f"{ref.namespace}/{ref.name}"
        logger.info("Queue %s or its Secret changed: applying its children again", where)
        try:
            await self.apply_children(body)
        except (ChildRejected, KubeApiError, ValidationError) as exc:
            logger.warning("applying Queue %s failed again: %s", where, exc)

    def _report_transitions(
        self,
        body: Mapping[str, Any],
        previous: Mapping[str, Any],
        conditions: list[st.ConditionUpdate],
    ) -> None:
        """An Event when Degraded or StoreReachable changes: what a user should notice."""
        old = previous.get("conditions") or []
        for cond in conditions:
            if cond.type not in (st.DEGRADED, st.STORE_REACHABLE):
                continue
            if st.condition_status(old, cond.type) == cond.status_text:
                continue
            bad = (cond.type == st.DEGRADED and cond.status) or (
                cond.type == st.STORE_REACHABLE and cond.status is False
            )
            if bad and cond.reason not in ("ApplyFailed", "ChildRejected"):
                # (apply_children posted those itself, once per failure)
                self.events.warn(body, cond.reason, cond.message)
            elif st.condition_status(old, cond.type) is not None and cond.status is not None:
                self.events.info(body, cond.reason, f"{cond.type} is {cond.status_text} again")

    async def _purge_finished(
        self, ref: QueueRef, dsn: str, queue: str, retention: int, memory: _QueueMemory
    ) -> None:
        """``spec.retentionSeconds``: delete the queue's jobs that finished longer ago, on
        the first tick and then every ``RETENTION_CHECK_SECONDS``, at most
        ``PURGE_BATCHES * PURGE_BATCH`` rows a time (the rest goes on the next round)."""
        now = time.monotonic()
        if memory.last_purge is not None and now - memory.last_purge < RETENTION_CHECK_SECONDS:
            return
        memory.last_purge = now
        older_than = timedelta(seconds=retention)
        try:
            total = await purge_finished(
                self.stores, dsn, queue, older_than, self.store_timeout, PURGE_BATCH, PURGE_BATCHES
            )
        except Exception as exc:  # the next round tries again; status reports the store
            error = scrub(one_line(exc), dsn)
            logger.warning("purging finished jobs of %s failed: %s", ref.name, error)
            return
        if total:
            logger.info("purged %d finished jobs of Queue %s/%s", total, ref.namespace, ref.name)
            self.metrics.queues.purged(ref.namespace, ref.name, total)
