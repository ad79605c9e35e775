"""What the operator does for one Queue: apply its children, observe it, size it.

The kopf handlers (``slotfleet.operator.handlers``) only unpack kopf's arguments and
call :class:`QueueReconciler`. Two entry points:

* :meth:`QueueReconciler.apply_children` on create, resume and spec changes: server-side
  apply of everything the builders produce (idempotent: a restart or a retry changes
  nothing; names are fixed, so there are never duplicates), and removal of children the
  spec no longer wants (the HPA when the mode changes, the Service, the PodMonitor);
* :meth:`QueueReconciler.observe`, one Queue's tick, called by the observer loop
  (:class:`slotfleet.operator.observer.QueueObserver`: when, and with which store read)
  with the Queue from kopf's watch and its Deployment, pods and Secret from the
  :class:`~slotfleet.operator.cache.ClusterCache`, so it costs no API read. The tick:
  keep pods' deletion cost and size the fleet through the fleet-control core
  (:func:`slotfleet.control.size_fleet` over :class:`~slotfleet.operator.sizing.PodFleet`),
  write ``status`` only when it changed, and with ``retentionSeconds`` delete finished
  jobs past it about once a minute.

Errors the user can fix become conditions and Events, never crashes: a missing Secret
is ``Degraded/SecretNotFound``; an unreachable database is ``StoreReachable=False``
with the driver's one-line error (the DSN's password scrubbed from it), and recovers on
a later tick by itself. A child the API server refuses (422: the spec asks for a pod it
will never accept) is permanent: ``Degraded/ChildRejected`` with the server's message,
one Warning Event, and no retry until the Queue or its Secret changes.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from slotfleet.control import QueueView, Retention, Sizer, size_fleet
from slotfleet.models import SlotfleetError, describe_validation_error
from slotfleet.models.resource import GROUP, AutoscalingMode, QueueSpec
from slotfleet.operator import status as st
from slotfleet.operator.builders import API_VERSION, QueueRef, build_children, selector_string
from slotfleet.operator.cache import ClusterCache
from slotfleet.operator.kube import KubeApiError, KubeClient
from slotfleet.operator.metrics import OperatorMetrics, QueueFigures
from slotfleet.operator.retiring import RetireGate
from slotfleet.operator.secrets import SecretRead, read_dsn
from slotfleet.operator.sizing import EventSink, PodFleet, write_replicas
from slotfleet.operator.stores import StoreCache
from slotfleet.store.dsn import scrub
from slotfleet.store.rows import one_line

Json = dict[str, Any]

#: Annotation on the worker Deployment: the digest of every child the last apply wrote.
CHILDREN_DIGEST = f"{GROUP}/children-digest"
logger = logging.getLogger(__name__)


def children_digest(children: list[Json]) -> str:
    """A short digest of the children as built (what a later apply would write)."""
    text = json.dumps(children, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:20]


@dataclass
class _QueueMemory:
    """What the operator remembers about one Queue between ticks (lost on restart, which
    is fine: each item is re-derived on the next create/resume or tick)."""

    applied_generation: int | None = None
    apply_error: str | None = None
    rejected: tuple[int, str | None] | None = None
    """``(generation, Secret resourceVersion)`` when the API server last refused a child
    (422): applying again waits until either changes."""
    sizer: Sizer = field(default_factory=Sizer)
    pod_monitor_warned: int | None = None
    retention: Retention = field(default_factory=Retention)
    spec: tuple[int, QueueSpec] | None = None
    """``(generation, parsed spec)``: the spec is parsed once per generation."""
    applied: dict[str, str] = field(default_factory=dict)
    """``Kind/name`` -> digest of each child as last applied: an apply writes only the
    children that changed (a ``/scale`` write changes the Deployment alone)."""
    digest: str | None = None
    """Digest of every child as last applied (unwanted children were removed then)."""


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
        self.cache: ClusterCache | None = None
        """Set by the operator before the observer loop starts."""
        self._memory: dict[tuple[str, str], _QueueMemory] = {}
        self._pod_monitor_api: bool | None = None
        self.on_applied: Callable[[str, str], None] = lambda _ns, _name: None
        """Called after a Queue's children were applied (the observer looks at it)."""

    def _mem(self, ref: QueueRef) -> _QueueMemory:
        return self._memory.setdefault((ref.namespace, ref.name), _QueueMemory())

    def forget(self, namespace: str, name: str) -> None:
        """Queue ``namespace/name`` is gone: drop what is remembered of it."""
        self._memory.pop((namespace, name), None)
        self.metrics.queues.forget(namespace, name)
        if self.cache is not None:
            self.cache.unwant(namespace, name)

    async def secret_of(self, body: Mapping[str, Any], spec: QueueSpec) -> SecretRead:
        ref = self.ref_of(body)
        name = spec.store.secret_ref.name
        if self.cache is not None:
            secret = await self.cache.secret(ref.namespace, name, ref.name)
        else:
            secret = await self.kube.get("v1", "Secret", ref.namespace, name)
        return read_dsn(secret, ref, spec)

    @staticmethod
    def ref_of(body: Mapping[str, Any]) -> QueueRef:
        meta = body["metadata"]
        return QueueRef(name=meta["name"], namespace=meta["namespace"], uid=meta["uid"])

    def parse_spec(self, body: Mapping[str, Any]) -> QueueSpec:
        """The spec as the model; the API server validated it, so failures are rare
        (an object stored before a schema change)."""
        return QueueSpec.model_validate(dict(body.get("spec") or {}))

    def spec_of(self, body: Mapping[str, Any]) -> QueueSpec:
        """:meth:`parse_spec`, once per generation of the Queue."""
        memory = self._mem(self.ref_of(body))
        generation = int(body["metadata"].get("generation", 0))
        if memory.spec is None or memory.spec[0] != generation:
            memory.spec = (generation, self.parse_spec(body))
        return memory.spec[1]

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
        children = build_children(ref, spec, pod_monitor_available=monitor_api)
        digest = children_digest(children)
        # the worker Deployment carries the digest, and is applied last (below)
        carrier = next(c for c in children if c["kind"] == "Deployment")
        carrier["metadata"].setdefault("annotations", {})[CHILDREN_DIGEST] = digest
        digests = {f"{c['kind']}/{c['metadata']['name']}": children_digest([c]) for c in children}
        if self._applied_already(ref, digest, body) and memory.applied_generation is None:
            # an operator restart: what this spec builds is in place already (the
            # Deployment carries the digest of the last apply), so resuming writes nothing
            memory.applied_generation = generation
            memory.applied, memory.digest = digests, digest
            return
        # a spec never changed and no worker Deployment yet (the watch has listed them
        # all): nobody applied this Queue before, so it has no child to remove (two GETs
        # less per new Queue)
        first_apply = (
            generation == 1
            and self.cache is not None
            and self.cache.synced
            and self.cache.deployment(ref.namespace, ref.worker_name) is None
        )
        # the Deployment goes last, after the unwanted children are removed: the digest it
        # carries says every other child is in place, so an operator killed in between
        # resumes the whole apply rather than trusting a partial one
        news = memory.digest != digest or memory.apply_error is not None
        try:
            for child in children:
                if child is not carrier:
                    await self._apply_child(child, memory, digests)
            if memory.digest != digest and not first_apply:
                await self._remove_unwanted(ref, spec, monitor_api)
            await self._apply_child(carrier, memory, digests)
            memory.digest = digest
            if "replicas" not in (body.get("spec") or {}):
                # the schema has no default: the first size depends on the mode
                await write_replicas(self.kube, ref, spec.replicas)
        except (ChildRejected, KubeApiError) as exc:
            message = str(exc)
            reason = "ApplyFailed"
            if isinstance(exc, ChildRejected):
                reason = "ChildRejected"
                memory.rejected = (generation, (await self.secret_of(body, spec)).version)
            if message != memory.apply_error:  # one Event per failure, not per retry
                self.events.warn(body, reason, message)
            memory.apply_error = message
            raise
        if memory.applied_generation != generation and news:
            # a new generation that builds the same children (the first size written
            # through /scale just now) is no news: one Event per apply that changed them
            self.events.info(
                body, "Applied", f"worker fleet configured for generation {generation}"
            )
        memory.applied_generation = generation
        memory.apply_error = None
        self.on_applied(ref.namespace, ref.name)  # status (observedGeneration) follows
        memory.rejected = None

    async def _apply_child(
        self, child: Json, memory: _QueueMemory, digests: Mapping[str, str]
    ) -> None:
        kind, name = child["kind"], child["metadata"]["name"]
        key = f"{kind}/{name}"
        if memory.applied.get(key) == digests[key]:
            return  # applied as it is now (a /scale write changes one child)
        try:
            await self.kube.apply(child)
        except KubeApiError as exc:
            if not exc.invalid:
                raise
            raise ChildRejected(f"the API server refused {kind} {name}: {exc.detail}") from exc
        memory.applied[key] = digests[key]

    def _applied_already(self, ref: QueueRef, digest: str, body: Mapping[str, Any]) -> bool:
        if self.cache is None or "replicas" not in (body.get("spec") or {}):
            return False
        deployment = self.cache.deployment(ref.namespace, ref.worker_name) or {}
        annotations = (deployment.get("metadata") or {}).get("annotations") or {}
        return bool(annotations.get(CHILDREN_DIGEST) == digest)

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

    async def observe(
        self, body: Mapping[str, Any], spec: QueueSpec, secret: SecretRead, view: QueueView
    ) -> Json | None:
        """One Queue's tick: decide from what was gathered, write what changed; return
        the Queue as the status write left it (``None``: nothing written)."""
        ref = self.ref_of(body)
        memory = self._mem(ref)
        generation = int(body["metadata"].get("generation", 0))
        previous: Mapping[str, Any] = body.get("status") or {}
        queue = view.queue
        now = st.rfc3339(datetime.now(UTC))

        if self.cache is not None:
            deployment = self.cache.deployment(ref.namespace, ref.worker_name)
            pods = self.cache.pods(ref.namespace, ref.name)
        else:
            deployment = await self.kube.get(
                "apps/v1", "Deployment", ref.namespace, ref.worker_name
            )
            pods = await self.kube.list(
                "v1", "Pod", ref.namespace, label_selector=selector_string(ref)
            )
        dsn, degraded = secret.dsn, secret.problem
        if memory.rejected is not None and memory.rejected != (generation, secret.version):
            await self._reapply_after_rejection(body)
        if degraded is None and memory.apply_error:
            reason = "ChildRejected" if memory.rejected else "ApplyFailed"
            degraded = st.ConditionUpdate(st.DEGRADED, True, reason, memory.apply_error)
        if degraded is None:
            degraded = st.worker_problem(pods)
        if (
            dsn
            and view.stats is not None
            and memory.retention.due(spec.retention_seconds, time.monotonic())
        ):
            await self._purge_finished(ref, dsn, queue, spec.retention_seconds or 0)
        if dsn is None:
            store_cond = st.ConditionUpdate(
                st.STORE_REACHABLE, None, "NoDSN", "the store DSN cannot be read"
            )
        elif view.stats is None and view.opening:
            store_cond = st.ConditionUpdate(
                st.STORE_REACHABLE, None, "Connecting", scrub(view.error or "", dsn)
            )
        elif view.stats is None:
            error = view.error or "the job store was not read"
            store_cond = st.ConditionUpdate(
                st.STORE_REACHABLE, False, "StoreError", scrub(error, dsn)
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
                # (a cache still listing says nothing about it: no flap on a slow start)
                deployed=deployment is not None
                or (self.cache is not None and not self.cache.synced),
            )
        )

        # Retiring pods (slotfleet.operator.retiring): those marked on earlier ticks
        # get the lowest deletion cost, the gate lets a scale-down through once they
        # have stopped claiming, and the status gets this tick's marks.
        retire = RetireGate.for_tick(
            pods, view.busy(), view.workers, previous, datetime.now(UTC), spec.replicas
        )
        # Deletion costs first, then the size (the core's order): a scale-down written
        # this tick finds every busy pod already marked.
        fleet = PodFleet(self.kube, self.events, body, ref, spec, pods, retire)
        decision = await size_fleet(
            fleet, memory.sizer, spec, view, at=time.monotonic(), paused=pause.paused,
            hpa_sizes=True,
        )  # fmt: skip
        busy = view.busy()
        busy_pods = sum(1 for name in fleet.members() if busy.get(name, 0) > 0)
        desired: int | None = None
        last_scale: str | None = None
        drop: tuple[str, ...] = ()
        if spec.autoscaling.mode is AutoscalingMode.OPERATOR:
            if decision is not None:
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
                retiring=retire.entries()
                if spec.autoscaling.mode is AutoscalingMode.OPERATOR
                else [],
            ),
            now=now,
        )
        if st.status_changed(previous, new_status):
            written = await self.kube.merge_patch(
                API_VERSION,
                "Queue",
                ref.namespace,
                ref.name,
                {"status": new_status},
                subresource="status",
            )
            return written or None
        return None

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

    async def _purge_finished(self, ref: QueueRef, dsn: str, queue: str, retention: int) -> None:
        """``spec.retentionSeconds``: one round of :meth:`Retention.purge` (the rest goes
        on the next round); a failure is logged, and the next round tries again."""
        try:
            async with asyncio.timeout(self.store_timeout):
                store = await self.stores.get(dsn)
                total = await Retention.purge(store, queue, retention)
        except Exception as exc:  # the next round tries again; status reports the store
            error = scrub(one_line(exc), dsn)
            logger.warning("purging finished jobs of %s failed: %s", ref.name, error)
            return
        if total:
            logger.info("purged %d finished jobs of Queue %s/%s", total, ref.namespace, ref.name)
            self.metrics.queues.purged(ref.namespace, ref.name, total)
