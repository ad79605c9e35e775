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
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from slotfleet.models import Job, QueuedJob
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
    kubectl(
        kube_admin,
        "wait",
        "--for=condition=Established",
        "--timeout=30s",
        "crd/queues.slotfleet.dev",
    )
    return "queues.slotfleet.dev"


class OperatorProcess:
    """``slotfleet operator`` as a subprocess, stopped (or killed) by PID."""

    def __init__(
        self, admin: KubeAdmin, namespace: str, log: Path, interval: float | None = 1.0
    ) -> None:
        self.admin = admin
        self.namespace = namespace
        self.log = log
        self.interval = interval
        """``--interval``; ``None`` runs with the operator's default (what users get)."""
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "KUBECONFIG": str(self.admin.kubeconfig), "PYTHONPATH": str(REPO)}
        env.pop("POD_NAMESPACE", None)
        argv = [sys.executable, "-m", "slotfleet.cli.main", "operator", "--standalone"]
        argv += ["--namespace", self.namespace, "--verbose"]
        if self.interval is not None:
            argv += ["--interval", f"{self.interval:g}"]
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
