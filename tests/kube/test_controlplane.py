# The kubernetes client's stubs want model objects for bodies and mark every model field
# Optional; these tests pass plain dicts (which the client accepts) and read fields that the
# API server always sets.
# mypy: disable-error-code="arg-type, union-attr, index, no-any-return"
"""The kube tier's own tests: the real control plane and the process-backed test node."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from .controlplane import ControlPlane
from .fixtures import KubeAdmin, api_client_for
from .operator_helpers import wait_for
from .testnode import TestNode

pytestmark = pytest.mark.kube

HERE = Path(__file__).parent
CRD_FILE = HERE / "fixtures" / "widget-crd.yaml"
CHART_DIR = HERE / "fixtures" / "chart"


# ------------------------------------------------------------------------- basics


def test_server_version_is_stamped(kube_admin: KubeAdmin, control_plane: ControlPlane) -> None:
    info = client.VersionApi(kube_admin.api_client).get_code()
    assert info.git_version.startswith("v1."), info
    assert info.major == "1"
    assert info.git_version == f"v1.{info.minor}.{info.git_version.split('.')[2]}"
    stamp = (control_plane.bin_dir / ".stamp").read_text()
    assert f"kubernetes={info.git_version}" in stamp


def test_api_server_publishes_the_front_proxy_ca_for_aggregated_apis(
    kube_admin: KubeAdmin, control_plane: ControlPlane
) -> None:
    """An aggregated API server (prometheus-adapter) trusts request headers only from a
    client certificate signed by the CA the API server publishes here."""
    published = client.CoreV1Api(kube_admin.api_client).read_namespaced_config_map(
        "extension-apiserver-authentication", "kube-system"
    )
    data = published.data or {}
    front_proxy_ca = (control_plane.pki_dir / "front-proxy-ca.crt").read_text()
    assert data["requestheader-client-ca-file"].strip() == front_proxy_ca.strip()
    assert data["requestheader-allowed-names"] == '["front-proxy-client"]'
    assert data["requestheader-username-headers"] == '["X-Remote-User"]'


# ------------------------------------------------------------------------- CRDs


@pytest.fixture(scope="module")
def widget_crd(kube_admin: KubeAdmin) -> str:
    ext = client.ApiextensionsV1Api(kube_admin.api_client)
    body = yaml.safe_load(CRD_FILE.read_text())
    try:
        ext.create_custom_resource_definition(body)
    except ApiException as exc:
        if exc.status != 409:
            raise

    def established() -> bool:
        crd = ext.read_custom_resource_definition(body["metadata"]["name"])
        conditions = crd.status.conditions or []
        return any(c.type == "Established" and c.status == "True" for c in conditions)

    wait_for("CRD established", established)
    return str(body["metadata"]["name"])


def widget(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "test.slotfleet.dev/v1",
        "kind": "Widget",
        "metadata": {"name": name},
        "spec": spec,
    }


def test_crd_structural_schema_and_cel_rule(
    kube_admin: KubeAdmin, widget_crd: str, namespace: str
) -> None:
    custom = client.CustomObjectsApi(kube_admin.api_client)

    def create(body: dict[str, Any]) -> Any:
        return custom.create_namespaced_custom_object(
            "test.slotfleet.dev", "v1", namespace, "widgets", body
        )

    created = wait_for(
        "a valid Widget to be accepted",
        lambda: create(widget("ok", {"minReplicas": 1, "maxReplicas": 3})),
    )
    assert created["spec"]["maxReplicas"] == 3

    with pytest.raises(ApiException) as wrong_type:
        create(widget("wrong-type", {"minReplicas": "one", "maxReplicas": 3}))
    assert wrong_type.value.status == 422
    message = json.loads(wrong_type.value.body)["message"]
    assert "spec.minReplicas" in message, message
    assert "must be of type integer" in message, message

    with pytest.raises(ApiException) as cel:
        create(widget("inverted", {"minReplicas": 5, "maxReplicas": 2}))
    assert cel.value.status == 422
    message = json.loads(cel.value.body)["message"]
    assert "minReplicas must not exceed maxReplicas" in message, message


# ------------------------------------------------------------------------- workloads

HTTP_SERVER = r"""
import http.server, os, signal, sys
name = os.environ["POD_NAME"]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"{name} {os.environ['POD_NAMESPACE']} {os.environ['GREETING']}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
def term(signum, frame):
    print("got SIGTERM", flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, term)
server = http.server.HTTPServer((os.environ["POD_IP"], 8080), H)
print("serving on", os.environ["POD_IP"], flush=True)
server.serve_forever()
"""


def http_deployment(name: str, replicas: int) -> dict[str, Any]:
    field = {"fieldRef": {"fieldPath": ""}}
    env = []
    for var, path in (
        ("POD_IP", "status.podIP"),
        ("POD_NAME", "metadata.name"),
        ("POD_NAMESPACE", "metadata.namespace"),
    ):
        env.append(
            {"name": var, "valueFrom": {"fieldRef": {**field["fieldRef"], "fieldPath": path}}}
        )
    env.append(
        {
            "name": "GREETING",
            "valueFrom": {"configMapKeyRef": {"name": "web-settings", "key": "greeting"}},
        }
    )
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "terminationGracePeriodSeconds": 5,
                    "containers": [
                        {
                            "name": "web",
                            "image": "ignored.invalid/web:1",
                            "command": [sys.executable, "-c", HTTP_SERVER],
                            "env": env,
                            "ports": [{"name": "http", "containerPort": 8080}],
                            "readinessProbe": {
                                "httpGet": {"path": "/", "port": "http"},
                                "periodSeconds": 1,
                            },
                        }
                    ],
                },
            },
        },
    }


def running_pods(core: client.CoreV1Api, namespace: str, app: str) -> list[client.V1Pod]:
    pods = core.list_namespaced_pod(namespace, label_selector=f"app={app}").items
    return [p for p in pods if p.metadata.deletion_timestamp is None]


def test_deployment_runs_pods_as_processes_and_scales_down_by_deletion_cost(
    kube_admin: KubeAdmin, test_node: TestNode, namespace: str
) -> None:
    core = client.CoreV1Api(kube_admin.api_client)
    apps = client.AppsV1Api(kube_admin.api_client)
    core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "web-settings"}, "data": {"greeting": "hi"}}
    )
    apps.create_namespaced_deployment(namespace, http_deployment("web", 3))

    def all_ready() -> bool:
        dep = apps.read_namespaced_deployment("web", namespace)
        return (dep.status.ready_replicas or 0) == 3

    wait_for("3 ready replicas", all_ready, timeout=60)
    rs = apps.list_namespaced_replica_set(namespace).items
    assert len(rs) == 1
    assert rs[0].metadata.owner_references[0].name == "web"
    pods = running_pods(core, namespace, "web")
    assert len(pods) == 3
    ips = {p.status.pod_ip for p in pods}
    assert len(ips) == 3
    assert all(ip.startswith("127.0.") for ip in ips)
    for pod in pods:
        assert pod.spec.node_name == test_node.name
        assert pod.metadata.owner_references[0].uid == rs[0].metadata.uid
        url = f"http://{pod.status.pod_ip}:8080/"
        with urllib.request.urlopen(url, timeout=5) as resp:
            assert resp.read().decode() == f"{pod.metadata.name} {namespace} hi"
        assert len(test_node.pids(namespace, pod.metadata.name)) == 1

    # lowest deletion cost goes first: "cheap" and "middle" are removed, "dear" stays
    cheap, middle, dear = sorted(pods, key=lambda p: str(p.metadata.name))
    for pod, cost in ((cheap, "-100"), (middle, "0"), (dear, "100")):
        core.patch_namespaced_pod(
            pod.metadata.name,
            namespace,
            {"metadata": {"annotations": {"controller.kubernetes.io/pod-deletion-cost": cost}}},
        )
    pids = {p.metadata.name: test_node.pids(namespace, p.metadata.name)[0] for p in pods}
    apps.patch_namespaced_deployment_scale("web", namespace, {"spec": {"replicas": 1}})

    removed = {cheap.metadata.name, middle.metadata.name}
    wait_for(
        "two pods to get SIGTERM",
        lambda: {n for _, n in test_node.sigtermed(namespace)} == removed,
        timeout=30,
    )
    wait_for(
        "removed pods to be gone",
        lambda: (
            [
                p.metadata.name
                for p in core.list_namespaced_pod(namespace, label_selector="app=web").items
            ]
            == [dear.metadata.name]
        ),
        timeout=30,
    )
    for name in removed:
        assert not pid_alive(pids[name]), name
        assert test_node.exit_codes[(namespace, name)] == [0]  # the SIGTERM handler ran
        log = test_node.log_path(namespace, name, "web").read_text()
        assert "got SIGTERM" in log
    assert pid_alive(pids[dear.metadata.name])
    assert test_node.pids(namespace, dear.metadata.name) == [pids[dear.metadata.name]]
    time.sleep(0.5)
    assert {n for _, n in test_node.sigtermed(namespace)} == removed


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is not alive; the node reaps its children, so this is brief
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_status_reports_reach_the_api_server_in_order(
    kube_admin: KubeAdmin, control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    """A status computed early ("not ready", sent as the pod starts) never lands last.

    Two threads report a pod's status as it starts: the one that starts the pod and the one
    that runs its container. On a loaded machine the first one's "not ready" reached the
    API server after the container's "Ready"; nothing reports again for a pod without a
    readiness probe, so the pod stayed not ready for good and ``helm install --wait`` timed
    out in CI. Here the starting thread's report is slowed down on purpose, on a node of
    this test's own.
    """
    node = TestNode(
        api_client_for(kube_admin.kubeconfig),
        server=control_plane.server,
        ca_file=control_plane.ca_file,
        name="slow-status-node",
        work_dir=tmp_path / "node",
    )
    send = node.core.patch_namespaced_pod_status

    def slow_from_start_pod(name: str, ns: str, body: Any, **kwargs: Any) -> Any:
        if any(frame.function == "_start_pod" for frame in inspect.stack()):
            time.sleep(1.5)
        return send(name, ns, body, **kwargs)

    node.core.patch_namespaced_pod_status = slow_from_start_pod  # type: ignore[method-assign,assignment]
    core = client.CoreV1Api(kube_admin.api_client)
    node.start()
    try:
        core.create_namespaced_pod(
            namespace,
            {
                "metadata": {"name": "sleeper"},
                "spec": {
                    "nodeName": node.name,
                    "containers": [
                        {
                            "name": "main",
                            "image": "x",
                            "command": [sys.executable, "-c", "import time; time.sleep(120)"],
                        }
                    ],
                },
            },
        )

        def ready() -> bool:
            pod = core.read_namespaced_pod("sleeper", namespace)
            return any(
                c.type == "Ready" and c.status == "True" for c in pod.status.conditions or []
            )

        wait_for("the pod to be Ready", ready, timeout=30)
        time.sleep(2.5)  # longer than the slowed report takes to land
        pod = core.read_namespaced_pod("sleeper", namespace)
        assert pod.status.phase == "Running"
        assert ready(), f"a stale status overwrote Ready: {pod.status.conditions}"
    finally:
        node.stop()
        core.delete_namespaced_pod("sleeper", namespace, grace_period_seconds=0)
        core.delete_node(node.name)


def test_restart_policy_always_restarts_and_counts(
    kube_admin: KubeAdmin, test_node: TestNode, namespace: str
) -> None:
    core = client.CoreV1Api(kube_admin.api_client)
    core.create_namespaced_pod(
        namespace,
        {
            "metadata": {"name": "flaky"},
            "spec": {
                "restartPolicy": "Always",
                "containers": [
                    {
                        "name": "main",
                        "image": "x",
                        "command": [sys.executable, "-c", "raise SystemExit(3)"],
                    }
                ],
            },
        },
    )

    def restarted() -> bool:
        pod = core.read_namespaced_pod("flaky", namespace)
        statuses = pod.status.container_statuses or []
        return bool(statuses) and statuses[0].restart_count >= 2

    wait_for("two restarts", restarted, timeout=30)
    assert test_node.exit_codes[(namespace, "flaky")][:2] == [3, 3]
    pod = core.read_namespaced_pod("flaky", namespace)
    last = pod.status.container_statuses[0].last_state.terminated
    assert last is not None
    assert last.exit_code == 3


# ------------------------------------------------------------------------- garbage collection


def test_owner_reference_garbage_collection(kube_admin: KubeAdmin, namespace: str) -> None:
    core = client.CoreV1Api(kube_admin.api_client)
    parent = core.create_namespaced_config_map(namespace, {"metadata": {"name": "parent"}})
    core.create_namespaced_config_map(
        namespace,
        {
            "metadata": {
                "name": "child",
                "ownerReferences": [
                    {
                        "apiVersion": "v1",
                        "kind": "ConfigMap",
                        "name": "parent",
                        "uid": parent.metadata.uid,
                    }
                ],
            }
        },
    )
    core.delete_namespaced_config_map("parent", namespace)

    def child_gone() -> bool:
        try:
            core.read_namespaced_config_map("child", namespace)
        except ApiException as exc:
            return exc.status == 404
        return False

    wait_for("the garbage collector to delete the child", child_gone, timeout=60)


# ------------------------------------------------------------------------- RBAC


def test_rbac_denies_ordinary_user_until_role_binding(
    kube_admin: KubeAdmin, control_plane: ControlPlane, namespace: str
) -> None:
    alice = client.CoreV1Api(api_client_for(control_plane.alice_kubeconfig))
    with pytest.raises(ApiException) as denied:
        alice.list_namespaced_config_map(namespace)
    assert denied.value.status == 403
    message = json.loads(denied.value.body)["message"]
    assert 'User "alice" cannot list resource "configmaps"' in message, message

    rbac = client.RbacAuthorizationV1Api(kube_admin.api_client)
    rbac.create_namespaced_role(
        namespace,
        {
            "metadata": {"name": "cm-reader"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}],
        },
    )
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": "alice-reads"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "cm-reader",
            },
            "subjects": [
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice"}
            ],
        },
    )
    wait_for("alice to be allowed", lambda: alice.list_namespaced_config_map(namespace), timeout=10)
    with pytest.raises(ApiException) as still_denied:
        alice.create_namespaced_config_map(namespace, {"metadata": {"name": "nope"}})
    assert still_denied.value.status == 403


IN_POD_CHECK = r"""
import json, os
from kubernetes import client, config
config.load_kube_config()
core = client.CoreV1Api()
ns = os.environ["POD_NAMESPACE"]
result = {"env": {k: os.environ.get(k) for k in
          ("POD_NAMESPACE", "SA", "NODE", "TOKEN_FROM_SECRET", "MODE", "FROM_CM_PREFIXED",
           "EXPANDED")}}
result["whoami"] = client.AuthenticationV1Api().create_self_subject_review(
    {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
).status.user_info.username
result["configmaps"] = sorted(c.metadata.name for c in core.list_namespaced_config_map(ns).items)
try:
    core.list_namespaced_secret(ns)
    result["secrets"] = "allowed"
except client.ApiException as exc:
    result["secrets"] = exc.status
print(json.dumps(result), flush=True)
"""


def test_pod_acts_with_its_service_account_rbac(
    kube_admin: KubeAdmin, test_node: TestNode, namespace: str
) -> None:
    core = client.CoreV1Api(kube_admin.api_client)
    rbac = client.RbacAuthorizationV1Api(kube_admin.api_client)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "reader"}})
    rbac.create_namespaced_role(
        namespace,
        {
            "metadata": {"name": "reader"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}],
        },
    )
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": "reader"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"},
            "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": namespace}],
        },
    )
    core.create_namespaced_secret(
        namespace, {"metadata": {"name": "creds"}, "stringData": {"token": "s3cret"}}
    )
    core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "settings"}, "data": {"mode": "fast", "PREFIXED": "yes"}}
    )
    core.create_namespaced_pod(
        namespace,
        {
            "metadata": {"name": "checker"},
            "spec": {
                "serviceAccountName": "reader",
                "restartPolicy": "Never",
                "containers": [
                    {
                        "name": "check",
                        "image": "x",
                        "command": [sys.executable, "-c", IN_POD_CHECK],
                        "envFrom": [{"configMapRef": {"name": "settings"}, "prefix": "FROM_CM_"}],
                        "env": [
                            {
                                "name": "POD_NAMESPACE",
                                "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
                            },
                            {
                                "name": "SA",
                                "valueFrom": {"fieldRef": {"fieldPath": "spec.serviceAccountName"}},
                            },
                            {
                                "name": "NODE",
                                "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}},
                            },
                            {
                                "name": "TOKEN_FROM_SECRET",
                                "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}},
                            },
                            {
                                "name": "MODE",
                                "valueFrom": {
                                    "configMapKeyRef": {"name": "settings", "key": "mode"}
                                },
                            },
                            {"name": "EXPANDED", "value": "$(MODE)-$(SA)"},
                        ],
                    }
                ],
            },
        },
    )

    def finished() -> str | None:
        phase = core.read_namespaced_pod("checker", namespace).status.phase
        return phase if phase in ("Succeeded", "Failed") else None

    phase = wait_for("the checker pod to finish", finished, timeout=60)
    log = test_node.log_path(namespace, "checker", "check").read_text()
    assert phase == "Succeeded", log
    result = json.loads(log.strip().splitlines()[-1])
    assert result["whoami"] == f"system:serviceaccount:{namespace}:reader"
    assert result["configmaps"] == ["kube-root-ca.crt", "settings"] or result["configmaps"] == [
        "settings"
    ]
    assert result["secrets"] == 403
    assert result["env"] == {
        "POD_NAMESPACE": namespace,
        "SA": "reader",
        "NODE": test_node.name,
        "TOKEN_FROM_SECRET": "s3cret",
        "MODE": "fast",
        "FROM_CM_PREFIXED": "yes",
        "EXPANDED": "fast-reader",
    }


# ------------------------------------------------------------------------- helm


def helm(control_plane: ControlPlane, *args: str, home: Path) -> str:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "KUBECONFIG": str(control_plane.admin_kubeconfig),
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
    }
    proc = subprocess.run(
        [str(control_plane.bin_dir / "helm"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, f"helm {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_helm_template_and_install(
    kube_admin: KubeAdmin, control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    server = client.VersionApi(kube_admin.api_client).get_code().git_version
    # helm template does not ask the cluster: give it the server's version for kubeVersion
    rendered = list(
        yaml.safe_load_all(
            helm(
                control_plane,
                "template",
                "demo",
                str(CHART_DIR),
                "--namespace",
                namespace,
                "--kube-version",
                server,
                home=tmp_path,
            )
        )
    )
    kinds = sorted(doc["kind"] for doc in rendered if doc)
    assert kinds == ["ConfigMap", "Role", "RoleBinding", "ServiceAccount"]

    helm(
        control_plane,
        "install",
        "demo",
        str(CHART_DIR),
        "--namespace",
        namespace,
        "--set",
        "greeting=howdy",
        "--wait",
        "--timeout",
        "60s",
        home=tmp_path,
    )
    core = client.CoreV1Api(kube_admin.api_client)
    cm = core.read_namespaced_config_map("demo-settings", namespace)
    assert cm.data == {"greeting": "howdy", "kubeVersion": server}
    assert core.read_namespaced_service_account("demo-worker", namespace)
    releases = json.loads(
        helm(control_plane, "list", "--namespace", namespace, "-o", "json", home=tmp_path)
    )
    assert [(r["name"], r["status"]) for r in releases] == [("demo", "deployed")]
