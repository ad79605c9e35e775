# The kubernetes client marks every model field Optional; these tests read fields the API
# server and the kubelet always set for a running pod.
# mypy: disable-error-code="union-attr, arg-type"
"""Worker pods in containers under a real kubelet: what the stand-in test node cannot show.

* the container's security context as the worker's own process sees it;
* SIGTERM from the runtime to PID 1 on delete: the worker drains and exits 0, nothing lost;
* a worker process killed inside its pod: the kubelet restarts the container in the same
  pod (same name, so the same worker id) and the killed attempts run again once their
  leases end, instead of being renewed by the new container;
* readiness and liveness probes run by the kubelet against a worker that stops answering.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import threading
from datetime import UTC, datetime
from typing import Any

import pytest
from kubernetes import client, watch

from slotfleet.models import QueuedJob
from tests.kube.operator_helpers import email, store_enqueue, store_list, wait_for

from .cluster import NodeCluster
from .helpers import (
    container_pid,
    container_status,
    exec_python,
    ready_workers,
    start_queue,
    worker_pods,
)

pytestmark = pytest.mark.node

INSPECT = r"""
import errno, json, os
status = dict(l.split(':', 1) for l in open('/proc/1/status').read().splitlines())
def write(path):
    try:
        with open(path, 'w') as f:
            f.write('x')
        return 'ok'
    except OSError as exc:
        return errno.errorcode[exc.errno]
try:
    os.setuid(0)
    setuid = 'ok'
except OSError as exc:
    setuid = errno.errorcode[exc.errno]
print(json.dumps({
    'pid1': open('/proc/1/cmdline').read().split('\0')[:2],
    'uid': os.getuid(), 'gid': os.getgid(),
    'status': {k: v.strip() for k, v in status.items()},
    'write_root': write('/usr/local/lib/slotfleet-probe'),
    'write_etc': write('/etc/passwd'),
    'write_tmp': write('/tmp/slotfleet-probe'),
    'setuid0': setuid,
}))
"""


def jobs_of(dsn: str, queue: str) -> list[QueuedJob]:
    return list(asyncio.run(store_list(dsn, queue)))


def test_a_running_worker_has_a_read_only_root_no_root_user_and_no_capabilities(
    node_cluster: NodeCluster, node_namespace: str, node_dsn: str
) -> None:
    pod = start_queue(node_cluster, node_namespace, node_dsn, "sec")
    seen: dict[str, Any] = json.loads(
        exec_python(node_cluster, node_namespace, pod.metadata.name, INSPECT)
    )
    status = seen["status"]
    assert seen["pid1"] == ["/usr/bin/python3", "/usr/local/bin/slotfleet"], "PID 1 is the worker"
    assert (seen["uid"], seen["gid"]) == (10001, 10001)
    assert status["Uid"].split() == ["10001"] * 4
    for caps in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert status[caps] == "0000000000000000", f"{caps} = {status[caps]}"
    assert status["NoNewPrivs"] == "1"
    assert status["Seccomp"] == "2", "seccomp RuntimeDefault filters the worker's syscalls"
    assert seen["write_root"] == "EROFS"
    assert seen["write_etc"] == "EROFS"
    assert seen["write_tmp"] == "ok", "the emptyDir /tmp is writable"
    assert seen["setuid0"] == "EPERM"


class PodWatch:
    """The statuses a pod goes through until it is deleted (a watch in a thread)."""

    def __init__(self, core: client.CoreV1Api, namespace: str, name: str) -> None:
        self.statuses: list[client.V1ContainerStatus] = []
        self.deleted = threading.Event()
        self._watch = watch.Watch()  # type: ignore[no-untyped-call]
        self._thread = threading.Thread(target=self._run, args=(core, namespace, name), daemon=True)
        self._thread.start()

    def _run(self, core: client.CoreV1Api, namespace: str, name: str) -> None:
        for event in self._watch.stream(  # type: ignore[no-untyped-call]
            core.list_namespaced_pod,
            namespace,
            field_selector=f"metadata.name={name}",
            timeout_seconds=120,
        ):
            pod = event["object"]
            self.statuses += pod.status.container_statuses or []
            if event["type"] == "DELETED":
                self.deleted.set()
                return

    def terminated(self) -> client.V1ContainerStateTerminated | None:
        for status in reversed(self.statuses):
            if status.state and status.state.terminated:
                return status.state.terminated
        return None


def test_deleting_a_worker_pod_drains_it_exit_0_and_loses_no_job(
    node_cluster: NodeCluster, node_namespace: str, node_dsn: str
) -> None:
    admin = node_cluster.admin
    core = client.CoreV1Api(admin.api_client)
    pod = start_queue(node_cluster, node_namespace, node_dsn, "drain", drainTimeoutSeconds=30)
    name = pod.metadata.name
    long_jobs = [email("drain", f"long{i}", seconds=6.0) for i in range(4)]
    asyncio.run(store_enqueue(node_dsn, long_jobs))
    wait_for(
        "the 4 long jobs running in the pod",
        lambda: (
            sum(j.state == "running" and j.lease_owner == name for j in jobs_of(node_dsn, "drain"))
            == 4
        ),
        timeout=60,
    )
    queued = [email("drain", f"short{i}", seconds=0.2) for i in range(6)]
    asyncio.run(store_enqueue(node_dsn, queued))
    seen = PodWatch(core, node_namespace, name)
    core.delete_namespaced_pod(name, node_namespace)  # the pod's own grace: drain + 10 s
    assert seen.deleted.wait(90), "the pod was not deleted within its grace period"
    terminated = seen.terminated()
    assert terminated is not None, "the kubelet never reported the container terminated"
    assert terminated.exit_code == 0, f"exit {terminated.exit_code} ({terminated.reason})"

    def all_done() -> list[QueuedJob] | None:
        rows = jobs_of(node_dsn, "drain")
        return rows if len(rows) == 10 and all(j.state == "succeeded" for j in rows) else None

    rows = wait_for("every job to succeed (the replacement pod runs the rest)", all_done, 90)
    long_rows = [j for j in rows if str(j.kwargs["to"]).startswith("long")]
    assert len(long_rows) == 4
    assert all(j.attempts == 1 for j in long_rows), "a running job was cut off by the delete"


def test_a_worker_killed_in_its_pod_restarts_and_its_jobs_run_again_after_the_lease(
    node_cluster: NodeCluster, node_namespace: str, node_dsn: str
) -> None:
    """The container restarts in the same pod, so the new worker has the same id; the
    killed attempts must still end with their leases (not be renewed by the newcomer)
    and run again."""
    lease = 4
    admin = node_cluster.admin
    pod = start_queue(
        node_cluster,
        node_namespace,
        node_dsn,
        "restart",
        leaseSeconds=lease,
        drainTimeoutSeconds=5,
        executor={"kind": "async", "concurrency": 2},
    )
    jobs = [
        email("restart", f"r{i}", seconds=8.0).model_copy(update={"max_attempts": 3})
        for i in range(2)
    ]
    asyncio.run(store_enqueue(node_dsn, jobs))
    wait_for(
        "both jobs running",
        lambda: sum(j.state == "running" for j in jobs_of(node_dsn, "restart")) == 2,
        timeout=60,
    )
    os.kill(container_pid(node_cluster, pod), signal.SIGKILL)
    killed_at = datetime.now(UTC)

    def restarted() -> client.V1ContainerStatus | None:
        [again] = [p for p in worker_pods(admin, node_namespace, "restart")]
        status = container_status(again)
        return status if status.restart_count == 1 and status.state.running else None

    status = wait_for("the kubelet to restart the container", restarted, timeout=60)
    assert again_same_pod(status, pod)
    assert status.last_state.terminated.exit_code == 137, "SIGKILL"
    container_started = status.state.running.started_at

    def rerun() -> list[QueuedJob] | None:
        rows = jobs_of(node_dsn, "restart")
        return rows if all(j.state == "succeeded" for j in rows) else None

    try:
        rows = wait_for("both jobs to run again and succeed", rerun, timeout=lease + 45)
    except AssertionError:
        now = datetime.now(UTC)
        detail = [
            f"job {j.id}: {j.state}, attempts {j.attempts}, lease owner {j.lease_owner}, "
            f"lease ends {j.lease_expires_at} ({now:%H:%M:%S} now; killed {killed_at:%H:%M:%S})"
            f", errors {[e.error for e in j.errors]}"
            for j in jobs_of(node_dsn, "restart")
        ]
        raise AssertionError(
            "the killed attempts did not run again (a lease that outlived the killed "
            "container, renewed by its successor with the same worker id, keeps a job "
            "running)\n" + "\n".join(detail)
        ) from None
    assert all(j.attempts == 2 for j in rows), [j.attempts for j in rows]
    for job in rows:  # the killed attempt ended by its lease, naming the pod's worker id
        assert [(e.attempt, e.error) for e in job.errors] == [
            (1, f"lease expired (worker {pod.metadata.name} stopped heartbeating)")
        ]
    # the second attempts began once the leases ended and the new container fetched
    earliest = max(killed_at.timestamp() + lease, container_started.timestamp())
    for job in rows:
        assert job.started_at is not None
        late = job.started_at.timestamp() - earliest
        assert late < 15, f"job {job.id} ran again {late:.1f}s after it could have"


def again_same_pod(status: client.V1ContainerStatus, pod: client.V1Pod) -> bool:
    """The restart happened inside the pod: the container id changed, the pod did not."""
    return str(status.container_id) != str(container_status(pod).container_id)


def test_the_kubelet_probes_a_stopped_worker_unready_then_restarts_it(
    node_cluster: NodeCluster, node_namespace: str, node_dsn: str
) -> None:
    admin = node_cluster.admin
    core = client.CoreV1Api(admin.api_client)
    pod = start_queue(node_cluster, node_namespace, node_dsn, "probed", drainTimeoutSeconds=1)
    name = pod.metadata.name
    stopped = container_pid(node_cluster, pod)
    os.kill(stopped, signal.SIGSTOP)  # alive but silent: only probes can tell
    try:

        def unready() -> bool:
            current = core.read_namespaced_pod(name, node_namespace)
            return any(
                c.type == "Ready" and c.status == "False" for c in current.status.conditions or []
            )

        wait_for("the readiness probe to take the pod out of service", unready, timeout=60)

        def restarted() -> bool:
            status = container_status(core.read_namespaced_pod(name, node_namespace))
            return status.restart_count >= 1

        wait_for("the liveness probe to have the container restarted", restarted, timeout=120)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(stopped, signal.SIGCONT)
    ready_workers(admin, node_namespace, "probed")
    events = [
        (e.source.component if e.source else "", e.reason, e.message or "")
        for e in core.list_namespaced_event(
            node_namespace, field_selector=f"involvedObject.name={name}"
        ).items
    ]
    unhealthy = [m for component, reason, m in events if reason == "Unhealthy"]
    assert any(m.startswith("Readiness probe failed") for m in unhealthy), events
    assert any(m.startswith("Liveness probe failed") for m in unhealthy), events
    assert any(reason == "Killing" and "failed liveness probe" in m for _, reason, m in events), (
        events
    )
    assert {component for component, reason, _ in events if reason == "Unhealthy"} == {"kubelet"}
