"""Shared helpers for the operator's kube tests: the operator subprocess, Queue
manifests, Secrets, waits and small readers of the Queue and its pods.

Fixtures here (``queue_crd``, ``operator``) are re-exported by ``tests/kube/conftest.py``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from slotfleet.models import Job, JobState, QueuedJob
from slotfleet.store import open_store

from .fixtures import KubeAdmin

REPO = Path(__file__).resolve().parents[2]
CRD_FILE = REPO / "crds" / "queues.slotfleet.dev.yaml"
VENV_BIN = Path(sys.executable).parent
GROUP, VERSION, PLURAL = "slotfleet.dev", "v1alpha1", "queues"
T = TypeVar("T")


def wait_for(
    what: str, check: Callable[[], T | None], timeout: float = 40.0, interval: float = 0.3
) -> T:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except ApiException as exc:
            last = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last})")


def kubectl(
    admin: KubeAdmin, *args: str, stdin: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": str(admin.kubeconfig)}
    proc = subprocess.run(
        ["kubectl", *args], input=stdin, env=env, capture_output=True, text=True, timeout=60
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed: {proc.stderr}")
    return proc


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def queue_crd(kube_admin: KubeAdmin) -> str:
    kubectl(kube_admin, "apply", "--server-side", "--force-conflicts", "-f", str(CRD_FILE))
    ext = client.ApiextensionsV1Api(kube_admin.api_client)

    def established() -> bool:
        # polled rather than `kubectl wait`: on a loaded machine the CRD can still have no
        # status.conditions at all, which `kubectl wait` reports as an error, not a wait
        crd = ext.read_custom_resource_definition("queues.slotfleet.dev")
        conditions = (crd.status.conditions if crd.status else None) or []
        return any(c.type == "Established" and c.status == "True" for c in conditions)

    wait_for("the Queue CRD to be established", established, 60)
    return "queues.slotfleet.dev"


class OperatorProcess:
    """``slotfleet operator`` as a subprocess, stopped (or killed) by PID."""

    def __init__(
        self,
        admin: KubeAdmin,
        namespace: str,
        log: Path,
        interval: float | None = 1.0,
        metrics_port: int | None = None,
        extra_args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.admin = admin
        self.namespace = namespace
        self.log = log
        self.interval = interval
        """``--interval``; ``None`` runs with the operator's default (what users get)."""
        self.metrics_port = metrics_port
        """``--metrics-port`` on 127.0.0.1 (the Queue gauges); ``None``: not served."""
        self.extra_args = extra_args
        """More flags (e.g. ``--leader-elect``)."""
        self.env = env or {}
        """More environment (e.g. ``POD_NAME``)."""
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "KUBECONFIG": str(self.admin.kubeconfig), "PYTHONPATH": str(REPO)}
        env.pop("POD_NAMESPACE", None)
        env.update(self.env)
        argv = [sys.executable, "-m", "slotfleet.cli.main", "operator", "--standalone"]
        argv += ["--namespace", self.namespace, "--verbose"]
        if self.interval is not None:
            argv += ["--interval", f"{self.interval:g}"]
        if self.metrics_port is not None:
            argv += ["--metrics-host", "127.0.0.1", "--metrics-port", str(self.metrics_port)]
        argv += self.extra_args
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                argv,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=REPO,
            )

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-6000:] if self.log.exists() else ""


@pytest.fixture
def operator(
    kube_admin: KubeAdmin, namespace: str, queue_crd: str, tmp_path: Path
) -> Iterator[OperatorProcess]:
    op = OperatorProcess(kube_admin, namespace, tmp_path / "operator.log")
    op.start()
    try:
        yield op
    finally:
        op.stop()
        if os.environ.get("SLOTFLEET_SHOW_OPERATOR_LOG") == "1":
            print(op.tail())


def custom(admin: KubeAdmin) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(admin.api_client)


def get_queue(admin: KubeAdmin, namespace: str, name: str) -> dict[str, Any]:
    found = custom(admin).get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    assert isinstance(found, dict)
    return found


def queue_manifest(name: str, secret: str = "db", **spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "imports": ["examples.tasks"],
        "store": {"secretRef": {"name": secret, "key": "dsn"}},
        "executor": {"kind": "async", "concurrency": 4},
        "autoscaling": {"mode": "off"},
        "replicas": 1,
        "drainTimeoutSeconds": 5,
        "pollingInterval": 0.2,
        # the test node runs commands from the test venv; task code comes from the repo
        "env": [
            {"name": "PATH", "value": f"{VENV_BIN}:{os.environ.get('PATH', '')}"},
            {"name": "PYTHONPATH", "value": str(REPO)},
        ],
    }
    base.update(spec)
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Queue",
        "metadata": {"name": name},
        "spec": base,
    }


def create_secret(admin: KubeAdmin, namespace: str, dsn: str, name: str = "db") -> None:
    body = client.V1Secret(metadata=client.V1ObjectMeta(name=name), string_data={"dsn": dsn})
    core = client.CoreV1Api(admin.api_client)
    try:
        core.create_namespaced_secret(namespace, body)
    except ApiException as exc:
        if exc.status != 409:
            raise
        core.replace_namespaced_secret(name, namespace, body)


def apply_queue(admin: KubeAdmin, namespace: str, manifest: dict[str, Any]) -> None:
    kubectl(admin, "apply", "-n", namespace, "-f", "-", stdin=json.dumps(manifest))


def condition(queue: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for cond in (queue.get("status") or {}).get("conditions") or []:
        if cond["type"] == kind:
            found: dict[str, Any] = cond
            return found
    return None


def owned_children(admin: KubeAdmin, namespace: str, queue_name: str) -> dict[str, list[Any]]:
    selector = f"slotfleet.dev/queue={queue_name}"
    core = client.CoreV1Api(admin.api_client)
    rbac = client.RbacAuthorizationV1Api(admin.api_client)
    apps = client.AppsV1Api(admin.api_client)
    return {
        "ServiceAccount": core.list_namespaced_service_account(
            namespace, label_selector=selector
        ).items,
        "Role": rbac.list_namespaced_role(namespace, label_selector=selector).items,
        "RoleBinding": rbac.list_namespaced_role_binding(namespace, label_selector=selector).items,
        "Deployment": apps.list_namespaced_deployment(namespace, label_selector=selector).items,
        "Service": core.list_namespaced_service(namespace, label_selector=selector).items,
    }


def running_pods(admin: KubeAdmin, namespace: str, queue_name: str) -> list[Any]:
    pods = (
        client.CoreV1Api(admin.api_client)
        .list_namespaced_pod(namespace, label_selector=f"slotfleet.dev/queue={queue_name}")
        .items
    )
    return [
        p
        for p in pods
        if p.status is not None
        and p.status.phase == "Running"
        and p.metadata is not None
        and p.metadata.deletion_timestamp is None
    ]


def run(coro: Any) -> Any:
    return asyncio.run(coro)


# ------------------------------------------------------------------ the job store


def email(queue: str, to: str, seconds: float) -> Job:
    """An ``examples.tasks:send_email`` job that takes ``seconds``."""
    return Job(func="examples.tasks:send_email", queue=queue, kwargs={"to": to, "seconds": seconds})


async def store_enqueue(dsn: str, jobs: list[Job]) -> list[QueuedJob]:
    store = open_store(dsn)
    await store.open()
    try:
        return await store.enqueue(jobs)
    finally:
        await store.close()


async def store_list(dsn: str, queue: str) -> list[QueuedJob]:
    store = open_store(dsn)
    await store.open()
    try:
        return await store.list_jobs(queue=queue, limit=1000)
    finally:
        await store.close()


# ------------------------------------------------------------------ fleets and jobs


def spec_replicas(admin: KubeAdmin, namespace: str, name: str) -> int:
    return int(get_queue(admin, namespace, name)["spec"].get("replicas", 0))


def assert_every_job_ran_once(jobs: list[QueuedJob], expected: int) -> None:
    """Every job ``succeeded`` with ``attempts == 1``: a job cut short by a scale-down
    (handed back by a drain, or killed) would show ``attempts == 2`` or another state."""
    assert len(jobs) == expected
    bad = [(j.id, j.state.value, j.attempts, j.errors) for j in jobs]
    bad = [b for b in bad if b[1] != "succeeded" or b[2] != 1]
    assert not bad, f"jobs not succeeded exactly once: {bad}"


def spread_long_jobs(
    dsn: str,
    queue: str,
    *,
    long_job: Callable[[str], Job],
    slots_per_pod: int,
    filler_seconds: float = 6.0,
    most: int = 6,
) -> tuple[dict[int, str], set[int]]:
    """Start long jobs, one at a time, until they sit on more pods than their slots need
    (say two jobs on two 2-slot pods): the case where sizing by ``ceil(busy / slots)``
    alone would let a scale-down stop a pod that runs a job. Which idle worker claims a
    job is a race, so after each long job short fillers are queued until the pod holding
    it is full: the next long job cannot land there.

    ``long_job(name)`` makes each long job. Returns the long jobs' holders (job id -> pod,
    the worker id being the pod name) and the fillers' ids."""
    holders: dict[int, str] = {}
    fillers: set[int] = set()

    def running_on(pod: str) -> int:
        jobs = run(store_list(dsn, queue))
        return sum(1 for j in jobs if j.state is JobState.RUNNING and j.lease_owner == pod)

    def start(new: Job, to: str) -> tuple[int, str]:
        (job,) = run(store_enqueue(dsn, [new]))

        def owner() -> str | None:
            found = {j.id: j for j in run(store_list(dsn, queue))}[job.id]
            return found.lease_owner if found.state is JobState.RUNNING else None

        return job.id, wait_for(f"job {to} to start", owner, 30, interval=0.1)

    while len(set(holders.values())) <= -(-len(holders) // slots_per_pod):
        assert len(holders) < most, f"long jobs did not spread over the pods: {holders}"
        to = f"long{len(holders)}"
        job_id, holders[job_id] = start(long_job(to), to)
        for n in range(8):
            if running_on(holders[job_id]) >= slots_per_pod:
                break
            to = f"filler{len(holders)}-{n}"
            fillers.add(start(email(queue, to, filler_seconds), to)[0])
        else:
            raise AssertionError(f"eight fillers never filled {holders[job_id]}")
    return holders, fillers


class QueueVersions:
    """Every version of one Queue the API server hands a watch, recorded in a thread (a
    status field may hold a value for less time than a poll takes to see it)."""

    def __init__(self, admin: KubeAdmin, namespace: str, name: str) -> None:
        self.admin, self.namespace, self.name = admin, namespace, name
        self.versions: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> QueueVersions:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        api = custom(self.admin)
        while not self._stop.is_set():
            stream = watch.Watch().stream(  # type: ignore[no-untyped-call]
                api.list_namespaced_custom_object, GROUP, VERSION, self.namespace, PLURAL,
                field_selector=f"metadata.name={self.name}", timeout_seconds=2,
            )  # fmt: skip
            for event in stream:
                self.versions.append(event["object"])
                if self._stop.is_set():
                    break

    def cancellations(self) -> set[int]:
        """Job ids any recorded version listed in ``status.cancellations``."""
        return {
            int(c["job"])
            for v in list(self.versions)
            for c in (v.get("status") or {}).get("cancellations") or []
        }
