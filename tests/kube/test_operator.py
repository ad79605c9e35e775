# The kubernetes client's stubs mark every model field Optional; these tests read fields
# that the API server always sets, and pass plain dicts as bodies (which the client accepts).
# mypy: disable-error-code="union-attr, index, attr-defined, no-any-return"
"""The operator on a real control plane: CRD validation, children, status, RBAC, GC.

The operator runs as a real subprocess (``slotfleet operator --standalone --namespace NS``)
with the admin kubeconfig; worker pods run as local processes through the test node, with
their own ServiceAccount tokens; the job store is a real PostgreSQL database.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from slotfleet.models import Completion, Job, JobId, JobState, Outcome, QueuedJob
from slotfleet.operator.kube import FIELD_MANAGER
from slotfleet.store import open_store

from .controlplane import ControlPlane
from .fixtures import KubeAdmin
from .operator_helpers import (
    GROUP,
    PLURAL,
    VERSION,
    OperatorProcess,
    QueueVersions,
    apply_queue,
    condition,
    create_secret,
    get_queue,
    kubectl,
    owned_children,
    queue_manifest,
    run,
    running_pods,
    wait_for,
)
from .testnode import TestNode

pytestmark = pytest.mark.kube

# ------------------------------------------------------------------ validation

INVALID: list[tuple[str, dict[str, Any], str]] = [
    ("no-store", {"store": None}, "spec.store: Required value"),
    ("no-secret-name", {"store": {"secretRef": {"key": "dsn"}}}, "spec.store.secretRef.name"),
    ("bad-kind", {"executor": {"kind": "fibers"}}, 'Unsupported value: "fibers"'),
    ("zero-slots", {"executor": {"concurrency": 0}}, "spec.executor.concurrency"),
    ("many-slots", {"executor": {"concurrency": 20000}}, "spec.executor.concurrency"),
    ("negative-replicas", {"replicas": -1}, "spec.replicas"),
    (
        "over-max",
        {"replicas": 20, "autoscaling": {"mode": "operator", "maxReplicas": 5}},
        "replicas must not exceed autoscaling.maxReplicas",
    ),
    (
        "min-over-max",
        {"autoscaling": {"mode": "off", "minReplicas": 6, "maxReplicas": 5}},
        "autoscaling.minReplicas must not exceed autoscaling.maxReplicas",
    ),
    ("bad-mode", {"autoscaling": {"mode": "sometimes"}}, "spec.autoscaling.mode"),
    ("zero-target", {"autoscaling": {"targetUtilization": 0}}, "targetUtilization"),
    ("big-target", {"autoscaling": {"targetUtilization": 1.5}}, "targetUtilization"),
    ("bad-queue-name", {"queueName": "Emails!"}, "spec.queueName"),
    ("bad-env-name", {"env": [{"name": "1 bad"}]}, "spec.env[0].name"),
    (
        "dup-env",
        {"env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]},
        "Duplicate value",
    ),
    ("zero-polling", {"pollingInterval": 0}, "spec.pollingInterval"),
    ("zero-rate", {"rateLimit": {"count": 0}}, "spec.rateLimit.count"),
    ("zero-drain", {"drainTimeoutSeconds": 0}, "spec.drainTimeoutSeconds"),
    ("short-lease", {"leaseSeconds": 1}, "spec.leaseSeconds"),
    ("zero-retention", {"retentionSeconds": 0}, "spec.retentionSeconds"),
    ("low-port", {"metricsPort": 80}, "spec.metricsPort"),
    ("pull-policy", {"imagePullPolicy": "Sometimes"}, "spec.imagePullPolicy"),
    ("empty-image", {"image": ""}, "spec.image"),
    ("unknown-field", {"replica": 3}, 'unknown field "spec.replica"'),
    (
        "resources-key",
        {"resources": {"limitz": {"cpu": "1"}}},
        'unknown field "spec.resources.limitz"',
    ),
    ("resources-qty", {"resources": {"limits": {"cpu": "lots"}}}, "must be a quantity"),
]


def test_invalid_queues_are_rejected_with_readable_messages(
    kube_admin: KubeAdmin, namespace: str, queue_crd: str
) -> None:
    failures = []
    for name, spec_patch, expected in INVALID:
        manifest = queue_manifest(f"q-{name}")
        for key, value in spec_patch.items():
            if value is None:
                manifest["spec"].pop(key)
            else:
                manifest["spec"][key] = value
        proc = kubectl(
            kube_admin,
            "apply",
            "-n",
            namespace,
            "-f",
            "-",
            stdin=json.dumps(manifest),
            check=False,
        )
        if proc.returncode == 0 or expected not in proc.stderr:
            failures.append(f"{name}: rc={proc.returncode} stderr={proc.stderr.strip()}")
    # the name itself: too long, or not starting with a letter
    for bad_name in ["9lives", "q" * 49]:
        proc = kubectl(
            kube_admin,
            "apply",
            "-n",
            namespace,
            "-f",
            "-",
            stdin=json.dumps(queue_manifest(bad_name)),
            check=False,
        )
        if proc.returncode == 0 or "at most 48 characters" not in proc.stderr:
            failures.append(f"name {bad_name}: {proc.stderr.strip()}")
    assert not failures, "\n".join(failures)
    assert len(INVALID) + 2 >= 15


def test_valid_queue_gets_defaults_and_shows_in_get(
    kube_admin: KubeAdmin, namespace: str, queue_crd: str
) -> None:
    apply_queue(kube_admin, namespace, queue_manifest("plain"))
    spec = get_queue(kube_admin, namespace, "plain")["spec"]
    assert spec["executor"] == {"kind": "async", "concurrency": 4}
    assert spec["autoscaling"]["maxReplicas"] == 10
    assert spec["metricsPort"] == 9464
    out = kubectl(kube_admin, "get", "sfq", "-n", namespace).stdout
    assert out.split("\n")[0].split() == [
        "NAME",
        "REPLICAS",
        "READY",
        "BUSY",
        "FREE",
        "PENDING",
        "PAUSED",
        "MODE",
        "STATUS",
        "AGE",
    ]


# ------------------------------------------------------------------ children and status


def test_children_rbac_status_scale_and_gc(
    kube_admin: KubeAdmin,
    namespace: str,
    operator: OperatorProcess,
    test_node: TestNode,
    postgres_dsn: str,
    control_plane: ControlPlane,
) -> None:
    create_secret(kube_admin, namespace, postgres_dsn)
    apply_queue(kube_admin, namespace, queue_manifest("work"))
    uid = get_queue(kube_admin, namespace, "work")["metadata"]["uid"]

    def children_ready() -> dict[str, list[Any]] | None:
        found = owned_children(kube_admin, namespace, "work")
        return found if all(len(v) == 1 for v in found.values()) else None

    children = wait_for("children", children_ready)
    for kind, objs in children.items():
        refs = objs[0].metadata.owner_references
        assert [(r.kind, r.uid, r.controller) for r in refs] == [("Queue", uid, True)], kind

    def status_ready() -> dict[str, Any] | None:
        q = get_queue(kube_admin, namespace, "work")
        reach = condition(q, "StoreReachable")
        return q if reach and reach["status"] == "True" else None

    queue = wait_for("StoreReachable", status_ready)
    assert queue["status"]["selector"] == (
        "app.kubernetes.io/name=slotfleet-worker,slotfleet.dev/queue=work"
    )
    assert condition(queue, "Degraded")["status"] == "False"

    _check_worker_rbac(kube_admin, control_plane, namespace)

    # scale through /scale (mode off): the Deployment follows spec.replicas
    kubectl(kube_admin, "scale", "queue", "work", "-n", namespace, "--replicas=3")
    apps = client.AppsV1Api(kube_admin.api_client)
    wait_for(
        "deployment replicas 3",
        lambda: apps.read_namespaced_deployment("work-worker", namespace).spec.replicas == 3,
    )
    wait_for(
        "status.replicas 3",
        lambda: get_queue(kube_admin, namespace, "work").get("status", {}).get("replicas") == 3,
    )

    # deleting the Queue removes its children (garbage collector, no finalizer)
    assert not get_queue(kube_admin, namespace, "work")["metadata"].get("finalizers")
    kubectl(kube_admin, "delete", "queue", "work", "-n", namespace, "--wait=true")
    wait_for(
        "children garbage-collected",
        lambda: not any(owned_children(kube_admin, namespace, "work").values()),
        timeout=60,
    )


def _token_client(
    admin: KubeAdmin, control_plane: ControlPlane, namespace: str, sa: str
) -> client.ApiClient:
    core = client.CoreV1Api(admin.api_client)
    token = core.create_namespaced_service_account_token(
        sa,
        namespace,
        client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=600)
        ),
    ).status.token
    configuration = client.Configuration()
    configuration.host = admin.server
    configuration.ssl_ca_cert = str(admin.ca_file)
    configuration.api_key = {"authorization": f"Bearer {token}"}
    return client.ApiClient(configuration)


def _status_of(call: Callable[[], Any]) -> int:
    try:
        call()
    except ApiException as exc:
        return int(exc.status)
    return 200


def _check_worker_rbac(admin: KubeAdmin, control_plane: ControlPlane, namespace: str) -> None:
    """The worker's ServiceAccount: its own Queue read-only, nothing else."""
    # another Queue in the namespace, and a Secret, to be refused
    apply_queue(admin, namespace, queue_manifest("other", replicas=0))
    worker = _token_client(admin, control_plane, namespace, "work-worker")
    objs = client.CustomObjectsApi(worker)
    core = client.CoreV1Api(worker)
    args = (GROUP, VERSION, namespace, PLURAL)
    assert _status_of(lambda: objs.get_namespaced_custom_object(*args, "work")) == 200
    assert (
        _status_of(
            lambda: objs.list_namespaced_custom_object(*args, field_selector="metadata.name=work")
        )
        == 200
    )
    assert (
        _status_of(
            lambda: objs.list_namespaced_custom_object(
                *args,
                field_selector="metadata.name=work",
                watch=True,
                timeout_seconds=1,
                _preload_content=False,
            ).read()
        )
        == 200
    )
    assert _status_of(lambda: objs.list_namespaced_custom_object(*args)) == 403
    assert (
        _status_of(
            lambda: objs.patch_namespaced_custom_object(*args, "work", {"spec": {"paused": True}})
        )
        == 403
    )
    assert (
        _status_of(
            lambda: objs.patch_namespaced_custom_object_status(
                *args, "work", {"status": {"pending": 1}}
            )
        )
        == 403
    )
    assert _status_of(lambda: objs.get_namespaced_custom_object(*args, "other")) == 403
    assert _status_of(lambda: core.read_namespaced_secret("db", namespace)) == 403
    assert _status_of(lambda: core.list_namespaced_secret(namespace)) == 403
    pod = client.V1Pod(
        metadata=client.V1ObjectMeta(name="evil"),
        spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="x")]),
    )
    assert _status_of(lambda: core.create_namespaced_pod(namespace, pod)) == 403
    worker.close()  # type: ignore[no-untyped-call]


def test_missing_secret_and_unreachable_store_are_conditions(
    kube_admin: KubeAdmin, namespace: str, operator: OperatorProcess, postgres_dsn: str
) -> None:
    apply_queue(kube_admin, namespace, queue_manifest("lost", secret="nope", replicas=0))

    def degraded() -> dict[str, Any] | None:
        cond = condition(get_queue(kube_admin, namespace, "lost"), "Degraded")
        return cond if cond and cond["status"] == "True" else None

    cond = wait_for("Degraded", degraded)
    assert cond["reason"] == "SecretNotFound"
    assert cond["message"] == f"Secret {namespace}/nope (spec.store.secretRef) not found"
    ready = condition(get_queue(kube_admin, namespace, "lost"), "Ready")
    assert ready is not None
    assert (ready["status"], ready["reason"]) == ("False", "SecretNotFound")
    wait_for(
        "a SecretNotFound event",
        lambda: any(
            e.reason == "SecretNotFound"
            for e in client.CoreV1Api(kube_admin.api_client)
            .list_namespaced_event(namespace, field_selector="involvedObject.name=lost")
            .items
        ),
    )

    # a DSN nobody listens on: StoreReachable=False with one line, and it recovers
    create_secret(kube_admin, namespace, "postgresql://nobody@127.0.0.1:1/nothing", name="nope")

    def unreachable() -> dict[str, Any] | None:
        c = condition(get_queue(kube_admin, namespace, "lost"), "StoreReachable")
        return c if c and c["status"] == "False" else None

    cond = wait_for("StoreReachable=False", unreachable)
    assert "\n" not in cond["message"]
    assert cond["message"]
    assert condition(get_queue(kube_admin, namespace, "lost"), "Degraded")["status"] == "False"

    create_secret(kube_admin, namespace, postgres_dsn, name="nope")

    def reachable() -> bool:
        c = condition(get_queue(kube_admin, namespace, "lost"), "StoreReachable")
        return bool(c and c["status"] == "True")

    wait_for("StoreReachable=True again", reachable)


def test_hpa_mode_adds_and_removes_the_hpa(
    kube_admin: KubeAdmin, namespace: str, operator: OperatorProcess, postgres_dsn: str
) -> None:
    create_secret(kube_admin, namespace, postgres_dsn)
    manifest = queue_manifest(
        "elastic",
        replicas=1,
        autoscaling={
            "mode": "hpa",
            "minReplicas": 1,
            "maxReplicas": 4,
            "targetUtilization": 0.5,
            "scaleDownStabilizationSeconds": 90,
        },
    )
    apply_queue(kube_admin, namespace, manifest)
    hpas = client.AutoscalingV2Api(kube_admin.api_client)
    hpa = wait_for(
        "HPA",
        lambda: hpas.read_namespaced_horizontal_pod_autoscaler("elastic", namespace),
    )
    assert hpa.spec.scale_target_ref.kind == "Queue"
    assert hpa.spec.scale_target_ref.api_version == "slotfleet.dev/v1alpha1"
    assert [m.type for m in hpa.spec.metrics] == ["External", "External", "Pods"]
    assert hpa.spec.metrics[2].pods.target.average_value == "500m"
    assert hpa.spec.behavior.scale_down.stabilization_window_seconds == 90
    manifest["spec"]["autoscaling"]["mode"] = "off"
    apply_queue(kube_admin, namespace, manifest)

    def gone() -> bool:
        try:
            hpas.read_namespaced_horizontal_pod_autoscaler("elastic", namespace)
        except ApiException as exc:
            return exc.status == 404
        return False

    wait_for("HPA removed", gone)


def test_operator_mode_scales_from_zero_on_backlog(
    kube_admin: KubeAdmin, namespace: str, operator: OperatorProcess, postgres_dsn: str
) -> None:
    create_secret(kube_admin, namespace, postgres_dsn)
    manifest = queue_manifest(
        "auto",
        replicas=0,
        executor={"kind": "async", "concurrency": 2},
        autoscaling={
            "mode": "operator",
            "minReplicas": 0,
            "maxReplicas": 3,
            "targetUtilization": 1.0,
        },
    )
    apply_queue(kube_admin, namespace, manifest)

    async def enqueue() -> None:
        store = open_store(postgres_dsn)
        await store.open()
        try:
            await store.enqueue(
                [
                    Job(
                        func="examples.tasks:send_email",
                        queue="auto",
                        kwargs={"to": f"u{i}", "seconds": 30},
                        scheduled_at=None,
                    )
                    for i in range(5)
                ]
            )
        finally:
            await store.close()

    run(enqueue())
    queue = wait_for(
        "spec.replicas scaled up",
        lambda: (q := get_queue(kube_admin, namespace, "auto"))["spec"]["replicas"] >= 3 and q,
    )
    assert queue["spec"]["replicas"] == 3  # ceil(5 / 2), clamped to maxReplicas
    wait_for(
        "status.desiredReplicas and Scaling",
        lambda: (
            get_queue(kube_admin, namespace, "auto").get("status", {}).get("desiredReplicas") == 3
        ),
    )
    wait_for(
        "a Scaled event",
        lambda: any(
            e.reason == "Scaled"
            for e in client.CoreV1Api(kube_admin.api_client)
            .list_namespaced_event(namespace, field_selector="involvedObject.name=auto")
            .items
        ),
    )


def test_retention_seconds_has_the_operator_delete_finished_jobs(
    kube_admin: KubeAdmin, namespace: str, operator: OperatorProcess, postgres_dsn: str
) -> None:
    """Finished jobs past ``retentionSeconds`` go; pending and running ones stay."""

    async def prepare() -> list[int]:
        store = open_store(postgres_dsn)
        await store.open()
        try:
            jobs = await store.enqueue(
                [Job(func="examples.tasks:send_email", queue="kept", kwargs={"to": "x"})] * 4
            )
            claimed = await store.fetch("kept", "w", 3, 60, claim="retention-test")
            succeeded = Outcome.SUCCEEDED
            await store.complete(
                [
                    Completion(
                        job_id=j.id, worker_id="w", token="retention-test", outcome=succeeded
                    )
                    for j in claimed[:2]
                ]
            )
            return [j.id for j in jobs]
        finally:
            await store.close()

    async def remaining() -> dict[int, str]:
        store = open_store(postgres_dsn)
        await store.open()
        try:
            return {j.id: j.state.value for j in await store.list_jobs(queue="kept")}
        finally:
            await store.close()

    ids = run(prepare())
    time.sleep(1.5)  # older than the retention before the operator's first look
    create_secret(kube_admin, namespace, postgres_dsn)
    apply_queue(kube_admin, namespace, queue_manifest("kept", replicas=0, retentionSeconds=1))
    wait_for("the finished jobs to be deleted", lambda: len(run(remaining())) == 2)
    assert run(remaining()) == {ids[2]: "running", ids[3]: "pending"}
    assert "purged 2 finished jobs of Queue" in operator.log.read_text(errors="replace")


def test_operator_killed_mid_reconcile_converges_without_duplicates(
    kube_admin: KubeAdmin, namespace: str, operator: OperatorProcess, postgres_dsn: str
) -> None:
    create_secret(kube_admin, namespace, postgres_dsn)
    apply_queue(kube_admin, namespace, queue_manifest("sturdy", replicas=0))
    time.sleep(0.5)
    operator.stop(signal.SIGKILL)
    operator.start()
    wait_for(
        "children after restart",
        lambda: (
            (c := owned_children(kube_admin, namespace, "sturdy"))
            and all(len(v) == 1 for v in c.values())
            and c
        ),
    )
    wait_for(
        "observedGeneration",
        lambda: (
            get_queue(kube_admin, namespace, "sturdy").get("status", {}).get("observedGeneration")
            == 1
        ),
    )
    before = operator_writes(owned_children(kube_admin, namespace, "sturdy"))
    operator.stop()
    operator.start()
    time.sleep(4)  # resume handlers and a few ticks
    after = owned_children(kube_admin, namespace, "sturdy")
    assert {k: len(v) for k, v in after.items()} == {k: 1 for k in after}
    # the restarted operator wrote nothing (the controller-manager still may: a
    # Deployment's status changes its resourceVersion, and since the Deployment is
    # applied last its status settles after the Queue's observedGeneration)
    assert operator_writes(after) == before


def operator_writes(children: dict[str, list[Any]]) -> dict[str, Any]:
    """Each child's generation and what the operator's field manager last wrote of it
    (its managedFields entries: an apply that changes something updates them)."""
    return {
        kind: (
            obj.metadata.generation,
            sorted(
                (m.operation, m.subresource or "", str(m.time), json.dumps(m.fields_v1))
                for m in obj.metadata.managed_fields or []
                if m.manager == FIELD_MANAGER
            ),
        )
        for kind, (obj,) in children.items()
    }


def test_a_new_queue_without_replicas_gets_one_applied_event(
    kube_admin: KubeAdmin, namespace: str, operator: OperatorProcess, postgres_dsn: str
) -> None:
    """Regression (issue 13, requests per new Queue): the first size, written through
    ``/scale``, made a second generation that announced "Applied" again, with nothing
    applied; a thousand new Queues paid a thousand Events for it."""
    create_secret(kube_admin, namespace, postgres_dsn)
    manifest = queue_manifest(
        "fresh", autoscaling={"mode": "operator", "minReplicas": 0, "maxReplicas": 2}
    )
    manifest["spec"].pop("replicas")
    apply_queue(kube_admin, namespace, manifest)

    def settled() -> bool:
        queue = get_queue(kube_admin, namespace, "fresh")
        ready = condition(queue, "Ready")
        return (
            queue["spec"].get("replicas") == 0
            and queue["metadata"]["generation"] == 2
            and queue.get("status", {}).get("observedGeneration") == 2
            and ready is not None
            and ready["status"] == "True"
        )

    wait_for("the first size written and observed", settled)
    time.sleep(3)  # a late Event would be posted by now
    events = (
        client.CoreV1Api(kube_admin.api_client)
        .list_namespaced_event(namespace, field_selector="involvedObject.name=fresh")
        .items
    )
    assert sorted((e.reason, e.message) for e in events) == [
        ("Applied", "worker fleet configured for generation 1")
    ], [(e.reason, e.message, e.source.component) for e in events]


# ------------------------------------------------------------------ workers end to end


def test_jobs_run_and_cancel_flows_through_the_queue_status(
    kube_admin: KubeAdmin,
    namespace: str,
    operator: OperatorProcess,
    test_node: TestNode,
    postgres_dsn: str,
) -> None:
    create_secret(kube_admin, namespace, postgres_dsn)
    apply_queue(kube_admin, namespace, queue_manifest("e2e", replicas=1))
    wait_for("a worker pod running", lambda: running_pods(kube_admin, namespace, "e2e"), 60)

    async def scenario() -> None:
        store = open_store(postgres_dsn)
        await store.open()
        try:
            quick = await store.enqueue(
                [
                    Job(
                        func="examples.tasks:send_email",
                        queue="e2e",
                        kwargs={"to": f"u{i}", "seconds": 0.05},
                    )
                    for i in range(5)
                ]
            )
            (slow,) = await store.enqueue(
                [
                    Job(
                        func="examples.tasks:send_email",
                        queue="e2e",
                        kwargs={"to": "slow", "seconds": 600},
                    )
                ]
            )
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                states = [(await store.get(j.id)).state for j in quick]
                running = (await store.get(slow.id)).state
                if all(s is JobState.SUCCEEDED for s in states) and running is JobState.RUNNING:
                    break
                await asyncio.sleep(0.3)
            else:
                raise AssertionError(f"jobs did not run: {states}, slow {running}")
            with QueueVersions(kube_admin, namespace, "e2e") as versions:
                await store.request_cancel(JobId(slow.id))
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    job = await store.get(slow.id)
                    if job is not None and job.state is JobState.CANCELLED:
                        break
                    await asyncio.sleep(0.2)
                else:
                    raise AssertionError("the slow job was not cancelled")
            # the request reached the worker through the Queue's status (the worker reads
            # nothing else); the operator lists it only while the job is not cancelled
            assert slow.id in versions.cancellations()
        finally:
            await store.close()

    run(scenario())
    wait_for(
        "cancellation entry dropped",
        lambda: (
            not (get_queue(kube_admin, namespace, "e2e").get("status") or {}).get("cancellations")
        ),
    )
    out = kubectl(kube_admin, "get", "queues", "-n", namespace, "-o", "wide").stdout
    row = out.splitlines()[1].split()
    assert row[0] == "e2e"
    assert row[1] == "1"  # replicas
    assert row[5] == "0"  # pending
    assert row[6] == "false"  # paused
    pods = running_pods(kube_admin, namespace, "e2e")
    cost = (pods[0].metadata.annotations or {}).get("controller.kubernetes.io/pod-deletion-cost")
    assert cost is not None


def test_an_enqueue_and_a_cancel_wake_the_operator_before_its_tick(
    kube_admin: KubeAdmin, namespace: str, queue_crd: str, postgres_dsn: str, tmp_path: Path
) -> None:
    """A burst need not wait for the next tick: the operator hears enqueues and cancel
    requests on the Queues' databases. With a 600 s tick, a backlog is sized and a cancel
    request reaches the status long before the second tick could have come."""
    create_secret(kube_admin, namespace, postgres_dsn)
    op = OperatorProcess(kube_admin, namespace, tmp_path / "operator.log", interval=600)
    op.start()
    try:
        manifest = queue_manifest(
            "woken",
            replicas=0,
            executor={"kind": "async", "concurrency": 2},
            autoscaling={"mode": "operator", "minReplicas": 0, "maxReplicas": 3},
        )
        apply_queue(kube_admin, namespace, manifest)
        wait_for(
            "the first observation",
            lambda: condition(get_queue(kube_admin, namespace, "woken"), "StoreReachable"),
        )

        async def listening() -> bool:
            # the operator's own connection LISTENing for enqueues and cancel requests
            async with await psycopg.AsyncConnection.connect(postgres_dsn) as conn:
                cur = await conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN%cancels%'"
                )
                row = await cur.fetchone()
                return bool(row and row[0])

        wait_for("the operator to listen on the database", lambda: run(listening()))

        async def enqueue_and_claim() -> QueuedJob:
            store = open_store(postgres_dsn)
            await store.open()
            try:
                jobs = [Job(func="examples.tasks:send_email", queue="woken") for _ in range(4)]
                await store.enqueue(jobs)
                # a job claimed by a worker of no pod (there is no kubelet here), then
                # cancelled: a running job's cancel request is what reaches the status
                (claimed,) = await store.fetch("woken", "bystander", 1, 60, claim="c1")
                await store.request_cancel(JobId(claimed.id))
                found = await store.get(JobId(claimed.id))
                assert found is not None
                return found
            finally:
                await store.close()

        started = time.monotonic()
        job = run(enqueue_and_claim())
        wait_for(
            "spec.replicas raised by the enqueue",
            lambda: get_queue(kube_admin, namespace, "woken")["spec"]["replicas"] > 0,
            timeout=60,
        )
        wait_for(
            "the cancel request in status",
            lambda: any(
                c["job"] == job.id
                for c in (get_queue(kube_admin, namespace, "woken").get("status") or {}).get(
                    "cancellations"
                )
                or []
            ),
            timeout=60,
        )
        # both came from the wake-up: the operator's next tick was 600 s away
        assert time.monotonic() - started < 600
    finally:
        op.stop()
