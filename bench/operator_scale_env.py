"""The cluster ``bench/operator_scale.py`` measures in, started by PID and stopped in
reverse order: one PostgreSQL (``bench/pg.py``), the test tier's real control plane
(etcd, kube-apiserver, kube-controller-manager from ``tests/kube/controlplane.py``; no
node: idle Queues at zero want no pods), the Queue CRD, and ``slotfleet operator`` as a
user runs it.

The operator runs as the Helm chart's ServiceAccount with the chart's own RBAC (rendered
by ``helm template``, applied as they are) and the chart's default flags
(:func:`operator_argv`), from a kubeconfig holding a token of that ServiceAccount. A
FlowSchema matching only that ServiceAccount (priority level ``workload-low``, where the
built-in ``service-accounts`` schema puts every ServiceAccount of a real cluster) lets
the API server count the operator's requests apart from everyone else's:
:meth:`BenchCluster.operator_requests`.

What this module is not: it creates no Queue and measures nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from kubernetes import client

from bench import pg as pgmod
from bench.apiserver_metrics import MetricsError, counter_sum
from tests.kube.controlplane import ControlPlane, ensure_binaries, free_port, write_kubeconfig
from tests.kube.fixtures import KubeAdmin, api_client_for
from tests.kube.operator_helpers import CRD_FILE, REPO, create_secret, kubectl

#: Where the chart is installed (the operator's ServiceAccount lives here).
OPERATOR_NAMESPACE = "slotfleet-system"
#: The chart's release name; its ServiceAccount and ClusterRole are named after it.
RELEASE = "slotfleet"
#: Where the Queues are created.
QUEUE_NAMESPACE = "bench-queues"
FLOW_SCHEMA = "slotfleet-operator-bench"
#: The operator's priority level: the one the built-in ``service-accounts`` FlowSchema
#: gives every ServiceAccount.
PRIORITY_LEVEL = "workload-low"
DISPATCHED = "apiserver_flowcontrol_dispatched_requests_total"
REJECTED = "apiserver_flowcontrol_rejected_requests_total"
WAIT = "apiserver_flowcontrol_request_wait_duration_seconds"


def operator_argv(liveness_port: int, metrics_port: int) -> list[str]:
    """``slotfleet operator`` with the chart's default flags (``slotfleet.operatorArgs``
    in charts/slotfleet/templates/_helpers.tpl: every namespace, standalone, liveness and
    ``/metrics`` served), on loopback instead of the pod's address. Adapt here when the
    operator's flags change (leader election, ...)."""
    return [
        sys.executable,
        "-m",
        "slotfleet.cli.main",
        "operator",
        "--all-namespaces",
        "--standalone",
        f"--liveness=http://127.0.0.1:{liveness_port}/healthz",
        "--metrics-host=127.0.0.1",
        f"--metrics-port={metrics_port}",
    ]


class OperatorRun:
    """One ``slotfleet operator`` process, by PID."""

    def __init__(self, kubeconfig: Path, log: Path) -> None:
        self.liveness_port = free_port()
        self.metrics_port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}
        env.pop("POD_NAMESPACE", None)
        env.update(KUBECONFIG=str(kubeconfig), PYTHONPATH=str(REPO))
        self.started = time.monotonic()
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                operator_argv(self.liveness_port, self.metrics_port),
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=REPO,
            )
        self.log = log

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_live(self, timeout: float = 60.0) -> float:
        """Wait until kopf's liveness endpoint answers; seconds since the spawn."""
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.liveness_port}/healthz"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the operator exited ({self.proc.returncode}):\n{self.tail()}")
            try:
                with urllib.request.urlopen(url, timeout=1) as resp:
                    if resp.status == 200:
                        return time.monotonic() - self.started
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.05)
        raise RuntimeError(f"the operator's liveness endpoint never answered:\n{self.tail()}")

    def stop(self) -> None:
        """SIGTERM by PID, SIGKILL after 20 s."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def tail(self, lines: int = 30) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


class BenchCluster:
    """PostgreSQL + the control plane + the chart's RBAC, for one size of the bench."""

    def __init__(self) -> None:
        self.work = Path(tempfile.mkdtemp(prefix="slotfleet-bench-opscale-"))
        self.pg: pgmod.Postgres | None = None
        self.cp: ControlPlane | None = None
        self.admin: KubeAdmin | None = None
        self.operator_kubeconfig = self.work / "operator.kubeconfig"

    def start(self) -> KubeAdmin:
        self.pg = pgmod.start()
        self.cp = ControlPlane(bin_dir=ensure_binaries(), work_dir=self.work / "kube")
        self.cp.start()
        admin = self.admin = KubeAdmin(
            kubeconfig=self.cp.admin_kubeconfig,
            api_client=api_client_for(self.cp.admin_kubeconfig),
            server=self.cp.server,
            ca_file=self.cp.ca_file,
        )
        kubectl(admin, "apply", "--server-side", "--force-conflicts", "-f", str(CRD_FILE))
        wait_established(admin, "queues.slotfleet.dev")
        core = client.CoreV1Api(admin.api_client)
        for ns in (OPERATOR_NAMESPACE, QUEUE_NAMESPACE):
            core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
        self._install_rbac(admin)
        create_secret(admin, QUEUE_NAMESPACE, self.pg.dsn)
        return admin

    def _install_rbac(self, admin: KubeAdmin) -> None:
        """The chart's ServiceAccount, ClusterRole and binding; a token for it; the
        FlowSchema that counts its requests."""
        assert self.cp is not None
        rendered = subprocess.run(
            [
                str(self.cp.bin_dir / "helm"),
                "template",
                RELEASE,
                str(REPO / "charts" / "slotfleet"),
                "--namespace",
                OPERATOR_NAMESPACE,
                "--show-only",
                "templates/serviceaccount.yaml",
                "--show-only",
                "templates/rbac.yaml",
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        kubectl(admin, "apply", "-f", "-", stdin=rendered)
        kubectl(admin, "apply", "-f", "-", stdin=json.dumps(flow_schema()))
        token = kubectl(
            admin, "create", "token", RELEASE, "-n", OPERATOR_NAMESPACE, "--duration=48h"
        ).stdout.strip()
        write_kubeconfig(self.operator_kubeconfig, self.cp.server, self.cp.ca_file, RELEASE, token)

    def start_operator(self, label: str) -> OperatorRun:
        return OperatorRun(self.operator_kubeconfig, self.work / f"operator-{label}.log")

    @property
    def dsn(self) -> str:
        assert self.pg is not None
        return self.pg.dsn

    def metrics_text(self) -> str:
        """The API server's ``/metrics`` (read as admin: not counted as the operator's)."""
        assert self.cp is not None
        context = ssl.create_default_context(cafile=str(self.cp.ca_file))
        request = urllib.request.Request(
            f"{self.cp.server}/metrics",
            headers={"Authorization": f"Bearer {self.cp.admin_token}"},
        )
        with urllib.request.urlopen(request, context=context, timeout=30) as resp:
            return str(resp.read().decode())

    def operator_requests(self) -> dict[str, float]:
        """Counters of the operator's FlowSchema so far: requests dispatched and
        rejected, and the seconds (and number) of their waits in APF's queues."""
        text = self.metrics_text()
        labels = {"flow_schema": FLOW_SCHEMA}
        counters = {
            "dispatched": DISPATCHED,
            "rejected": REJECTED,
            "wait_sum": WAIT + "_sum",
            "wait_count": WAIT + "_count",
        }
        found: dict[str, float] = {}
        for key, name in counters.items():
            try:
                found[key] = counter_sum(text, name, labels)
            except MetricsError:  # not incremented yet
                found[key] = 0.0
        return found

    def stop(self) -> None:
        if self.cp is not None:
            self.cp.stop()
        if self.pg is not None:
            pgmod.stop(self.pg)
        shutil.rmtree(self.work, ignore_errors=True)


def wait_established(admin: KubeAdmin, name: str, timeout: float = 60.0) -> None:
    """Poll the CRD until ``Established`` (``kubectl wait`` fails outright when it looks
    before the API server has written any condition)."""
    api = client.ApiextensionsV1Api(admin.api_client)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        crd = api.read_custom_resource_definition(name)
        conditions = (crd.status and crd.status.conditions) or []
        if any(c.type == "Established" and c.status == "True" for c in conditions):
            return
        time.sleep(0.2)
    raise RuntimeError(f"CRD {name} not Established within {timeout:g} s")


def flow_schema() -> dict[str, Any]:
    """A FlowSchema for the operator's ServiceAccount alone, every request it makes."""
    return {
        "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
        "kind": "FlowSchema",
        "metadata": {"name": FLOW_SCHEMA},
        "spec": {
            # before the built-in service-accounts schema (9000), after the system ones
            "matchingPrecedence": 8000,
            "priorityLevelConfiguration": {"name": PRIORITY_LEVEL},
            "distinguisherMethod": {"type": "ByUser"},
            "rules": [
                {
                    "subjects": [
                        {
                            "kind": "ServiceAccount",
                            "serviceAccount": {"name": RELEASE, "namespace": OPERATOR_NAMESPACE},
                        }
                    ],
                    "resourceRules": [
                        {
                            "verbs": ["*"],
                            "apiGroups": ["*"],
                            "resources": ["*"],
                            "clusterScope": True,
                            "namespaces": ["*"],
                        }
                    ],
                    "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
                }
            ],
        },
    }
