"""The chart against a real API server: lint, server-side dry run, install and reconcile.

* ``helm lint --strict`` is clean for the value sets users start from;
* the prometheus-adapter rules are exactly the expressions docs/operations.md explains, parse
  as PromQL, and never hand an HPA raw free slots (the inversion);
* ``helm template | kubectl apply --dry-run=server`` is accepted by the API server (strict
  field validation) for both RBAC scopes;
* ``helm install`` brings up the operator: the test node runs its pod as a local process
  with the chart's ServiceAccount token (so it acts with exactly the chart's RBAC), and a
  Queue gets its worker Deployment.

Evaluating the rules in a real Prometheus is a later, separate test.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from slotfleet.app import App
from slotfleet.models import Job

from .diagnose import namespace_report
from .fixtures import KubeAdmin
from .helm import (
    CHART,
    CRD_FILE,
    OPERATOR_PERMISSIONS,
    REPO_ROOT,
    CommandError,
    Helm,
    kubectl,
    one,
)
from .operator_helpers import wait_for
from .testnode import TestNode

pytestmark = pytest.mark.kube

DOCS = REPO_ROOT / "docs" / "operations.md"
ALL_TOGGLES: dict[str, Any] = {
    "metrics": {"podMonitor": {"enabled": True}},
    "grafana": {"dashboard": {"enabled": True}},
    "prometheusAdapter": {"rules": {"enabled": True}},
    "dashboard": {
        "enabled": True,
        "store": {"secretRef": {"name": "dash-store"}},
        "actions": {"enabled": True, "tokenSecretRef": {"name": "dash-token"}},
    },
}


def watching(namespace: str, scope: str) -> dict[str, Any]:
    return {
        "rbac": {"scope": scope},
        "operator": {"watch": {"allNamespaces": False, "namespaces": [namespace]}},
    }


@pytest.fixture(scope="module")
def helm(kube_bin_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return Helm.from_bin_dir(kube_bin_dir, tmp_path_factory.mktemp("helm"))


# ------------------------------------------------------------------------ lint


@pytest.mark.parametrize(
    "values",
    [{}, watching("team-a", "namespaced"), ALL_TOGGLES, {"crds": {"install": False}}],
    ids=["defaults", "namespaced", "all-toggles", "no-crds"],
)
def test_helm_lint_is_clean(helm: Helm, values: dict[str, Any]) -> None:
    proc = helm.lint(values, strict=True)
    output = proc.stdout + proc.stderr
    assert "0 chart(s) failed" in output
    assert "[WARNING]" not in output, output
    assert "[ERROR]" not in output, output


# ------------------------------------------------------ prometheus-adapter rules


def normalized(text: str) -> str:
    return " ".join(text.split())


def adapter_config(helm: Helm) -> dict[str, Any]:
    docs = helm.template({"prometheusAdapter": {"rules": {"enabled": True}}})
    config = one(docs, "ConfigMap", "sf-slotfleet-prometheus-adapter-rules")
    return dict(yaml.safe_load(config["data"]["config.yaml"]))


def test_adapter_rules_expose_rising_metrics_named_as_documented(helm: Helm) -> None:
    config = adapter_config(helm)
    [ratio] = config["rules"]
    demand, busy_pods = config["externalRules"]
    assert ratio["name"] == {
        "matches": "^slotfleet_slots_total$",
        "as": "slotfleet_slots_busy_ratio",
    }
    assert ratio["resources"]["overrides"] == {
        "namespace": {"resource": "namespace"},
        "pod": {"resource": "pod"},
    }
    assert ratio["seriesQuery"].startswith("slotfleet_slots_total{")
    # the external metrics are listed from the operator's gauges, which exist for every
    # Queue it watches: with zero workers too (an HPA scaling from zero needs them)
    assert demand["name"] == {
        "matches": "^slotfleet_queue_pending$",
        "as": "slotfleet_queue_demand",
    }
    assert demand["seriesQuery"].startswith("slotfleet_queue_pending{")
    assert busy_pods["name"]["as"] == "slotfleet_queue_busy_pods"
    assert busy_pods["seriesQuery"].startswith("slotfleet_queue_busy_pods{")
    for rule in (demand, busy_pods):
        assert rule["resources"]["overrides"] == {"namespace": {"resource": "namespace"}}
    docs = normalized(DOCS.read_text())
    for rule in (ratio, demand, busy_pods):
        assert normalized(rule["metricsQuery"]) in docs, (
            f"{rule['name']['as']}: the chart's metricsQuery differs from docs/operations.md"
        )
    # what the operator's HPA asks for is what the rules provide
    from slotfleet.operator import hpa

    assert ratio["name"]["as"] == hpa.RATIO_METRIC
    assert demand["name"]["as"] == hpa.DEMAND_METRIC
    assert busy_pods["name"]["as"] == hpa.BUSY_PODS_METRIC


def substitute_adapter_placeholders(query: str) -> str:
    """prometheus-adapter's Go-template placeholders, as it fills them for one request."""
    return query.replace("<<.LabelMatchers>>", 'namespace="ns",pod=~"w-1|w-2"').replace(
        "<<.GroupBy>>", "pod"
    )


def test_adapter_rule_expressions_parse_and_invert_free_slots(helm: Helm) -> None:
    promql = pytest.importorskip("promql_parser", reason="pip install promql-parser")
    config = adapter_config(helm)
    for rule in (*config["rules"], *config["externalRules"]):
        query = rule["metricsQuery"]
        assert query.count("(") == query.count(")")
        selectors = re.findall(r"(slotfleet_[a-z_]+)\{([^}]*)\}", query)
        assert selectors
        assert all(m == "<<.LabelMatchers>>" for _, m in selectors), (
            "every selector must take the adapter's label matchers"
        )
        assert {name for name, _ in selectors} <= {
            "slotfleet_slots_total",
            "slotfleet_slots_free",
            "slotfleet_queue_pending",
            "slotfleet_queue_busy_pods",
        }
        tree = promql.parse(substitute_adapter_placeholders(query))
        # the inversion: free slots only ever appear as `total - free` (busy slots)
        subtractions = 0
        for node in walk(tree):
            if type(node).__name__ == "BinaryExpr" and str(node.op) == "-":
                lhs, rhs = node.lhs, node.rhs
                if getattr(rhs, "name", None) == "slotfleet_slots_free":
                    assert getattr(lhs, "name", None) == "slotfleet_slots_total"
                    subtractions += 1
        frees = sum(1 for n in walk(tree) if getattr(n, "name", None) == "slotfleet_slots_free")
        assert frees == subtractions, f"{rule['name']['as']}: free slots used raw"
        slot_metrics = {name for name, _ in selectors} & {"slotfleet_slots_total"}
        assert subtractions >= 1 or not slot_metrics, f"{rule['name']['as']}: no busy slots"
    ratio = promql.parse(substitute_adapter_placeholders(config["rules"][0]["metricsQuery"]))
    assert str(ratio.op) == "/"
    assert "clamp_min" in str(ratio.rhs)


def walk(node: Any) -> Iterator[Any]:
    yield node
    for attr in ("lhs", "rhs", "expr", "args", "param"):
        child = getattr(node, attr, None)
        if child is None or isinstance(child, str | int | float):
            continue
        children = child if isinstance(child, list | tuple) else [child]
        for sub in children:
            yield from walk(sub)


# --------------------------------------------------------- server-side dry run


@pytest.mark.parametrize("scope", ["cluster", "namespaced"])
def test_rendered_chart_passes_server_side_dry_run(
    helm: Helm, kube_admin: KubeAdmin, namespace: str, scope: str
) -> None:
    # the PodMonitor needs the Prometheus Operator's CRDs, which this cluster does not have
    values = {
        **watching(namespace, scope),
        "grafana": ALL_TOGGLES["grafana"],
        "prometheusAdapter": ALL_TOGGLES["prometheusAdapter"],
        "dashboard": ALL_TOGGLES["dashboard"],
    }
    rendered = helm.template_text(values, release=f"dry-{scope}", namespace=namespace).stdout
    assert rendered.index("kind: CustomResourceDefinition") < rendered.index("kind: Deployment")
    proc = kubectl(kube_admin.kubeconfig, "apply", "--dry-run=server", "-f", "-", stdin=rendered)
    applied = [line for line in proc.stdout.splitlines() if "(server dry run)" in line]
    kinds = [doc["kind"] for doc in yaml.safe_load_all(rendered) if doc]
    assert len(applied) == len(kinds), proc.stdout
    assert "customresourcedefinition.apiextensions.k8s.io/queues.slotfleet.dev" in proc.stdout


# ------------------------------------------------------------- helm install


@pytest.fixture
def node_runs_this_venv(test_node: TestNode) -> Iterator[TestNode]:
    """The test node starts `slotfleet ...` from PATH: make it this interpreter's script."""
    path = test_node.base_env.get("PATH", "")
    if shutil.which("slotfleet", path=path) is None:
        test_node.base_env["PATH"] = f"{Path(sys.executable).parent}:{path}"
    yield test_node
    test_node.base_env["PATH"] = path


LEASES = "coordination.k8s.io"


def can(
    kube_admin: KubeAdmin,
    user: str,
    namespace: str,
    group: str,
    resource: str,
    subresource: str,
    verb: str,
    *,
    name: str | None = None,
) -> bool:
    review = client.V1SubjectAccessReview(
        spec=client.V1SubjectAccessReviewSpec(
            user=user,
            groups=[
                "system:serviceaccounts",
                f"system:serviceaccounts:{user.split(':')[2]}",
                "system:authenticated",
            ],
            resource_attributes=client.V1ResourceAttributes(
                namespace=namespace,
                group=group,
                resource=resource,
                subresource=subresource,
                verb=verb,
                name=name,
            ),
        )
    )
    result = client.AuthorizationV1Api(kube_admin.api_client).create_subject_access_review(review)
    assert result.status is not None
    return bool(result.status.allowed)


def apply_crd(kube_admin: KubeAdmin) -> None:
    """The generated CRD, applied outside helm (so every release can use crds.install=false
    without fighting over ownership of the cluster-scoped object)."""
    kubectl(
        kube_admin.kubeconfig,
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=slotfleet-tests",
        "-f",
        str(CRD_FILE),
    )
    kubectl(
        kube_admin.kubeconfig,
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/queues.slotfleet.dev",
    )


def delete_queue(custom: client.CustomObjectsApi, namespace: str, name: str) -> None:
    """Delete the Queue while its operator still runs (it owns the finalizer); strip the
    finalizers if the operator cannot, so the namespace can go."""
    args = ("slotfleet.dev", "v1alpha1", namespace, "queues", name)
    try:
        custom.delete_namespaced_custom_object(*args)
    except ApiException as exc:
        if exc.status == 404:
            return
        raise
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            custom.get_namespaced_custom_object(*args)
        except ApiException as exc:
            if exc.status == 404:
                return
            raise
        time.sleep(0.5)
    custom.patch_namespaced_custom_object(*args, {"metadata": {"finalizers": None}})


@pytest.mark.slow
@pytest.mark.parametrize("scope", ["cluster", "namespaced"])
def test_helm_install_runs_the_operator_which_reconciles_a_queue(
    helm: Helm,
    kube_admin: KubeAdmin,
    namespace: str,
    node_runs_this_venv: TestNode,
    tmp_path: Path,
    scope: str,
) -> None:
    node = node_runs_this_venv
    apply_crd(kube_admin)
    release = f"sf-{scope[:4]}-{uuid.uuid4().hex[:5]}"
    fullname = f"{release}-slotfleet"
    values = {
        **watching(namespace, scope),
        "crds": {"install": False},
        # pods of the test node share one network namespace: bind the pod's own address
        "operator": {
            **watching(namespace, scope)["operator"],
            "liveness": {"host": "$(POD_IP)", "port": 8080},
            "metrics": {"enabled": True, "host": "$(POD_IP)", "port": 8081},
        },
    }
    bound = helm.bound_to(kube_admin.kubeconfig)
    core = client.CoreV1Api(kube_admin.api_client)
    apps = client.AppsV1Api(kube_admin.api_client)
    custom = client.CustomObjectsApi(kube_admin.api_client)
    try:
        bound.run(
            "install",
            release,
            str(CHART),
            "--namespace",
            namespace,
            "-f",
            str(bound.values_file(values)),
            "--wait",
            "--timeout",
            "240s",
        )
    except CommandError as exc:
        report = namespace_report(kube_admin.api_client, namespace, node)
        raise AssertionError(f"{exc}\n{report}") from None
    try:
        # the chart's RBAC, as the API server's authorizer sees the operator's identity
        user = f"system:serviceaccount:{namespace}:{fullname}"
        denied = [
            f"{verb} {group}/{resource}/{sub}"
            for group, resource, sub, verbs in OPERATOR_PERMISSIONS
            for verb in verbs
            if not can(kube_admin, user, namespace, group, resource, sub, verb)
        ]
        assert not denied, f"the operator's ServiceAccount may not: {denied}"
        assert can(kube_admin, user, "default", "apps", "deployments", "", "create") is (
            scope == "cluster"
        )

        # leader election: its Lease, by name, in the release namespace only
        for verb in ("get", "update"):
            assert can(kube_admin, user, namespace, LEASES, "leases", "", verb, name=fullname)
            assert not can(kube_admin, user, namespace, LEASES, "leases", "", verb, name="x")
        assert can(kube_admin, user, namespace, LEASES, "leases", "", "create")
        assert not can(kube_admin, user, "default", LEASES, "leases", "", "create")

        # two replicas (the default): one holds the Lease and runs the operator, the other
        # waits and answers its liveness probe
        pods = core.list_namespaced_pod(
            namespace, label_selector=f"app.kubernetes.io/instance={release}"
        ).items
        assert len(pods) == 2
        names = sorted(str(p.metadata and p.metadata.name) for p in pods)
        assert all(p.spec is not None and p.spec.service_account_name == fullname for p in pods)
        for name in names:
            assert wait_for("the operator processes", partial(node.pids, namespace, name), 90)
        coordination = client.CoordinationV1Api(kube_admin.api_client)

        def leader_pod() -> str | None:
            lease = coordination.read_namespaced_lease(fullname, namespace)
            holder = str((lease.spec and lease.spec.holder_identity) or "")
            return holder.rpartition("_")[0] or None

        pod_name = wait_for("a leader", leader_pod, 60)
        assert pod_name in names
        # the standby answers where the leader serves: a live scrape target, no samples
        (standby,) = set(names) - {pod_name}
        standby_metrics = f"http://{node.pod_ip(namespace, standby)}:8081/metrics"
        wait_for("the standby's /metrics", lambda: "# standby" in scrape(standby_metrics), 30)
        assert "slotfleet_queue" not in scrape(standby_metrics)

        secret = client.V1Secret(
            metadata=client.V1ObjectMeta(name="chartq-store"),
            string_data={"dsn": f"sqlite:///{tmp_path / 'chartq.db'}"},
        )
        core.create_namespaced_secret(namespace, secret)
        queue = {
            "apiVersion": "slotfleet.dev/v1alpha1",
            "kind": "Queue",
            "metadata": {"name": "chartq"},
            "spec": {
                "store": {"secretRef": {"name": "chartq-store"}},
                "replicas": 0,
                "autoscaling": {"mode": "off"},
            },
        }
        custom.create_namespaced_custom_object(
            "slotfleet.dev", "v1alpha1", namespace, "queues", queue
        )

        def owned_deployments() -> list[str]:
            """Deployments whose controller is the Queue (named after it by the operator)."""
            return [
                str(d.metadata.name)
                for d in apps.list_namespaced_deployment(namespace).items
                if d.metadata is not None
                and any(
                    (o.kind, o.name, o.controller) == ("Queue", "chartq", True)
                    for o in d.metadata.owner_references or []
                )
            ]

        [worker_deployment] = wait_for("the Queue's Deployment", owned_deployments, timeout=120)
        assert worker_deployment.startswith("chartq")

        # the operator exports the backlog it reads from the store (replicas 0: it stays)
        asyncio.run(enqueue_noops(f"sqlite:///{tmp_path / 'chartq.db'}", "chartq", 3))
        url = f"http://{node.pod_ip(namespace, pod_name)}:8081/metrics"
        pending = (
            f'slotfleet_queue_pending{{namespace="{namespace}",queue="chartq",resource="chartq"}}'
        )
        wait_for(
            "the operator's /metrics to show 3 pending jobs",
            lambda: f"{pending} 3.0" in scrape(url),
            timeout=60,
        )
        log = node.log_path(namespace, pod_name, "operator").read_text(errors="replace")
        refusals = [
            line
            for line in log.splitlines()
            if "Forbidden" in line or "Not enough permissions" in line or " 403" in line
        ]
        assert not refusals, "the operator was refused by RBAC:\n" + "\n".join(refusals[:10])
        for name in names:
            restarts = pod_restarts(core, namespace, name)
            assert restarts == 0, f"operator pod {name} restarted {restarts} time(s)"
    finally:
        delete_queue(custom, namespace, "chartq")
        bound.run("uninstall", release, "--namespace", namespace, "--wait", check=False)


@pytest.mark.slow
def test_helm_install_serves_the_dashboard_read_only_over_the_store(
    helm: Helm,
    kube_admin: KubeAdmin,
    namespace: str,
    node_runs_this_venv: TestNode,
    tmp_path: Path,
) -> None:
    """dashboard.enabled: the pod runs `slotfleet dashboard` with the DSN from its Secret
    and no API token, turns ready once the store answers, shows the store's queues, and
    refuses actions (read-only by default)."""
    node = node_runs_this_venv
    apply_crd(kube_admin)
    release = f"sf-dash-{uuid.uuid4().hex[:5]}"
    dsn = f"sqlite:///{tmp_path / 'dash.db'}"
    asyncio.run(enqueue_noops(dsn, "chartdash", 3))
    core = client.CoreV1Api(kube_admin.api_client)
    core.create_namespaced_secret(
        namespace,
        client.V1Secret(metadata=client.V1ObjectMeta(name="dash-store"), string_data={"dsn": dsn}),
    )
    values = {
        **watching(namespace, "cluster"),
        "crds": {"install": False},
        "operator": {
            **watching(namespace, "cluster")["operator"],
            "liveness": {"host": "$(POD_IP)", "port": 8080},
            "metrics": {"enabled": False},
        },
        "dashboard": {
            "enabled": True,
            "store": {"secretRef": {"name": "dash-store"}},
            "host": "$(POD_IP)",  # the test node's pods share one network namespace
        },
    }
    bound = helm.bound_to(kube_admin.kubeconfig)
    try:
        try:
            bound.run(
                "install", release, str(CHART), "--namespace", namespace,
                "-f", str(bound.values_file(values)), "--wait", "--timeout", "180s",
            )  # fmt: skip
        except CommandError as exc:
            report = namespace_report(kube_admin.api_client, namespace, node)
            raise AssertionError(f"{exc}\n{report}") from None
        [pod] = core.list_namespaced_pod(
            namespace,
            label_selector=f"app.kubernetes.io/instance={release},"
            "app.kubernetes.io/component=dashboard",
        ).items
        assert pod.spec is not None
        assert pod.spec.automount_service_account_token is False
        name = str(pod.metadata and pod.metadata.name)
        base = f"http://{node.pod_ip(namespace, name)}:8000"
        overview = json.loads(scrape(base + "/api/overview"))
        [queue] = overview["queues"]
        assert (queue["queue"], queue["ready"]) == ("chartdash", 3)
        assert "chartdash" in scrape(base + "/")
        request = urllib.request.Request(base + "/api/purge", data=b"{}", method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=5)
        assert refused.value.code == 403
        assert "actions are off" in json.loads(refused.value.read())["error"]
        assert pod_restarts(core, namespace, name) == 0
    finally:
        bound.run("uninstall", release, "--namespace", namespace, "--wait", check=False)


async def enqueue_noops(dsn: str, queue: str, count: int) -> None:
    async with App(dsn) as app:
        job = Job(func="tests.tasks:add", queue=queue, kwargs={"a": 1, "b": 2})
        await app.enqueue_many([job] * count)


def scrape(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return str(response.read().decode())
    except OSError:
        return ""


def pod_restarts(core: client.CoreV1Api, namespace: str, name: str) -> int:
    pod = core.read_namespaced_pod(name, namespace)
    statuses = (pod.status.container_statuses if pod.status else None) or []
    return sum(int(s.restart_count or 0) for s in statuses)
