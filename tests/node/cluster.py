# The kubernetes client marks every model field Optional; these tests read fields the API
# server and the kubelet always set for a running pod.
# mypy: disable-error-code="union-attr, arg-type"
"""A whole cluster on the real node, for the ``node`` tier and ``bench/autoscale.py --node
real``: the images, the node's binaries, a control plane bound to the node's bridge
gateway, the node, and PostgreSQL listening on the gateway too (pods reach it there, with
a password, as they would reach a database Service).

:func:`start_cluster` starts everything in order and stops what it started when a step
fails; :func:`stop_cluster` deletes every workload (so the kubelet tears its pods down
through the runtime and CNI), stops the node and the control plane by PID, and returns
whatever the host revert could not undo or found changed.

What this module is not: a fixture (``tests/node/conftest.py`` wraps it) and not a place
for assertions.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.fixtures.postgres import PostgresServer, _server_user, find_bindir
from tests.kube.controlplane import ControlPlane, ensure_binaries
from tests.kube.fixtures import KubeAdmin, api_client_for
from tests.kube.helm import CHART, CRD_FILE, Helm, kubectl

from .configs import GATEWAY, KUBERNETES_SERVICE_IP, NODE_NAME, POD_CIDR
from .realnode import (
    NodeError,
    NodeImages,
    RealNode,
    build_images,
    build_node_binaries,
)

#: Controllers beyond the stand-in tier's: the node-lifecycle controller lifts the
#: kubelet's ``not-ready`` taint (the scheduler waits for that), the mirroring controller
#: keeps EndpointSlices of selector-less Services.
NODE_CONTROLLERS = ("node-lifecycle-controller", "endpointslicemirroring")
#: The API server reaches the kubelet (logs, exec) at the Node's address, not its name.
NODE_APISERVER_ARGS = ("--kubelet-preferred-address-types=InternalIP",)
SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
#: Role the worker pods and the operator use in PostgreSQL (password auth on the bridge).
DB_ROLE = "slotfleet"


@dataclass
class NodeDatabase:
    """PostgreSQL on loopback and the gateway; pods log in as :data:`DB_ROLE`."""

    server: PostgresServer
    password: str

    def create(self) -> str:
        """A fresh database owned by the role; its DSN as pods (and the host) use it."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.server.dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" OWNER {DB_ROLE} TEMPLATE template0')
        return f"postgresql://{DB_ROLE}:{self.password}@{GATEWAY}:{self.server.port}/{name}"


@dataclass
class NodeCluster:
    work: Path
    images: NodeImages
    node: RealNode
    control_plane: ControlPlane
    admin: KubeAdmin
    database: NodeDatabase
    helm: Helm
    timings: dict[str, float] = field(default_factory=dict)


def start_database() -> NodeDatabase:
    # a directory of its own: the server runs as an unprivileged user, who must reach it
    root = Path(tempfile.mkdtemp(prefix="slotfleet-node-pg-"))
    server = PostgresServer(find_bindir(), root, _server_user(), listen=f"127.0.0.1,{GATEWAY}")
    server.init()
    with (server.data / "pg_hba.conf").open("a") as hba:
        hba.write(f"host all {DB_ROLE} {POD_CIDR} scram-sha-256\n")
    server.start()
    password = secrets.token_hex(12)
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {DB_ROLE} LOGIN PASSWORD '{password}'")
    return NodeDatabase(server, password)


def stop_database(database: NodeDatabase) -> None:
    database.server.stop()
    shutil.rmtree(database.server.root, ignore_errors=True)


def start_cluster(work: Path) -> NodeCluster:
    """Images, binaries, node (prepared first: the bridge), control plane, node daemons,
    PostgreSQL, and the Queue CRD; waits until the Node is Ready and the ``kubernetes``
    Service has its endpoint."""
    timings: dict[str, float] = {}
    started = time.monotonic()
    images = build_images(work / "build")
    node_bin = build_node_binaries(work / "build")
    timings["builds"] = time.monotonic() - started
    node = RealNode(work_dir=work / "node", node_bin=node_bin, images=images)
    cp = ControlPlane(
        bin_dir=ensure_binaries(),
        work_dir=work / "control-plane",
        address=GATEWAY,
        extra_controllers=NODE_CONTROLLERS,
        extra_apiserver_args=NODE_APISERVER_ARGS,
    )
    database: NodeDatabase | None = None
    try:
        node.prepare()
        mark = time.monotonic()
        cp.start()
        timings["control_plane"] = time.monotonic() - mark
        node.start(cp)
        timings["node_started"] = time.monotonic() - mark
        admin = KubeAdmin(
            kubeconfig=cp.admin_kubeconfig,
            api_client=api_client_for(cp.admin_kubeconfig),
            server=cp.server,
            ca_file=cp.ca_file,
        )
        wait_node_ready(admin, node)
        timings["node_ready"] = time.monotonic() - mark
        database = start_database()
        kubectl(admin.kubeconfig, "apply", "--server-side", "-f", str(CRD_FILE))
        kubectl(
            admin.kubeconfig,
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/queues.slotfleet.dev",
        )
        helm = Helm.from_bin_dir(cp.bin_dir, work / "helm").bound_to(admin.kubeconfig)
        timings["total"] = time.monotonic() - started
        return NodeCluster(work, images, node, cp, admin, database, helm, timings)
    except BaseException:
        if database is not None:
            stop_database(database)
        node.stop()
        cp.stop()
        raise


def wait_node_ready(admin: KubeAdmin, node: RealNode, timeout: float = 120.0) -> None:
    core = client.CoreV1Api(admin.api_client)
    discovery = client.DiscoveryV1Api(admin.api_client)
    deadline = time.monotonic() + timeout
    state = "no Node yet"
    while time.monotonic() < deadline:
        for name, proc in node.processes.items():
            if not proc.alive():
                raise NodeError(f"{name} exited:\n{proc.tail(40)}")
        with contextlib.suppress(ApiException):
            found = core.read_node(NODE_NAME)
            ready = [c for c in (found.status.conditions or []) if c.type == "Ready"]
            taints = [t.key for t in (found.spec.taints or [])]
            slices = discovery.list_namespaced_endpoint_slice(
                "default", label_selector="kubernetes.io/service-name=kubernetes"
            ).items
            endpoint = any(e.addresses == [GATEWAY] for s in slices for e in s.endpoints or [])
            state = f"ready={[c.status for c in ready]} taints={taints} endpoint={endpoint}"
            if ready and ready[0].status == "True" and not taints and endpoint:
                return
        time.sleep(0.5)
    raise NodeError(
        f"the real node was not ready in {timeout:.0f}s ({state}; the kubernetes Service "
        f"is {KUBERNETES_SERVICE_IP}):\n{node.log_tails()}"
    )


def delete_workloads(admin: KubeAdmin, timeout: float = 90.0) -> list[str]:
    """Delete every non-system namespace and every pod, and wait until the kubelet has
    torn the pods down (so sandboxes, network namespaces and mounts go the normal way)."""
    core = client.CoreV1Api(admin.api_client)
    with contextlib.suppress(ApiException):
        for ns in core.list_namespace().items:
            name = str(ns.metadata.name)
            if name not in SYSTEM_NAMESPACES:
                with contextlib.suppress(ApiException):
                    core.delete_namespace(name)
    deadline = time.monotonic() + timeout
    left: list[str] = []
    shortened: set[str] = set()
    while time.monotonic() < deadline:
        try:
            pods = core.list_pod_for_all_namespaces().items
        except ApiException as exc:
            return [f"listing pods: {exc.reason}"]
        left = [f"{p.metadata.namespace}/{p.metadata.name}" for p in pods]
        if not left:
            return []
        for pod in pods:  # a shorter grace than the pod's own is allowed, even mid-way
            key = f"{pod.metadata.namespace}/{pod.metadata.name}"
            if key not in shortened:
                shortened.add(key)
                with contextlib.suppress(ApiException):
                    core.delete_namespaced_pod(
                        pod.metadata.name, pod.metadata.namespace, grace_period_seconds=2
                    )
        time.sleep(1)
    return [f"pods the kubelet did not remove in {timeout:.0f}s: {left}"]


def stop_cluster(cluster: NodeCluster, keep: bool = False) -> list[str]:
    """Tear down in reverse; the problems found (empty: the host is as it was)."""
    problems = delete_workloads(cluster.admin)
    stop_database(cluster.database)
    ledger = cluster.node.ledger
    problems += cluster.node.stop()
    cluster.control_plane.stop()
    if ledger is not None:
        problems += [f"after teardown: {d}" for d in ledger.differences()]
    if not keep:
        shutil.rmtree(cluster.work, ignore_errors=True)
    return problems


@dataclass(frozen=True)
class OperatorRelease:
    """The chart installed with the operator as a pod from the built image."""

    release: str
    namespace: str
    pod: str
    """The operator pod that holds the leader Lease."""
    image: str
    install_seconds: float
    standby: str = ""
    """The other replica, waiting to lead."""


def install_operator(
    cluster: NodeCluster, namespace: str = "slotfleet-system", release: str = "sf"
) -> OperatorRelease:
    """``helm install`` of charts/slotfleet with its defaults but the image: the operator
    runs from the built image and watches every namespace; waits until it is Ready."""
    repository, _, tag = cluster.images.slotfleet.rpartition(":")
    values = {
        "image": {"repository": repository, "tag": tag, "pullPolicy": "IfNotPresent"},
        "crds": {"install": False},
        "operator": {"extraArgs": ["--verbose"]},
    }
    started = time.monotonic()
    cluster.helm.run(
        "install", release, str(CHART), "--namespace", namespace, "--create-namespace",
        "-f", str(cluster.helm.values_file(values)), "--wait", "--timeout", "180s",
    )  # fmt: skip
    seconds = time.monotonic() - started
    pods = (
        client.CoreV1Api(cluster.admin.api_client)
        .list_namespaced_pod(namespace, label_selector=f"app.kubernetes.io/instance={release}")
        .items
    )
    if len(pods) != 2:  # the chart's default: two replicas under leader election
        raise NodeError(f"expected two operator pods, found {len(pods)}")
    leases = client.CoordinationV1Api(cluster.admin.api_client)
    deadline = time.monotonic() + 60
    while True:  # the pod holding the Lease is the one that operates
        with contextlib.suppress(ApiException):
            lease = leases.read_namespaced_lease(f"{release}-slotfleet", namespace)
            holder = str(lease.spec.holder_identity or "").rpartition("_")[0]
            if holder in {p.metadata.name for p in pods}:
                break
        if time.monotonic() > deadline:
            raise NodeError("no operator pod took the leader Lease within 60s")
        time.sleep(0.5)
    standby = next(str(p.metadata.name) for p in pods if p.metadata.name != holder)
    return OperatorRelease(
        release, namespace, holder, cluster.images.slotfleet, seconds, standby=standby
    )


def uninstall_operator(cluster: NodeCluster, release: OperatorRelease) -> None:
    cluster.helm.run(
        "uninstall", release.release, "--namespace", release.namespace, "--wait", check=False
    )
