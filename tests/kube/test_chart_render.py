"""The chart as rendered by ``helm template``: RBAC for both scopes, the operator's command
line, security defaults, toggles, and values.yaml/values.schema.json staying in step.

Needs only the helm binary from tools/k8s/build.sh (no control plane); test_chart.py takes
the same chart to a real API server.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from .helm import (
    CHART,
    OPERATOR_PERMISSIONS,
    CommandError,
    Helm,
    Json,
    find,
    one,
    rules_allow,
)

pytestmark = pytest.mark.kube

NAMESPACED: dict[str, Any] = {
    "rbac": {"scope": "namespaced"},
    "operator": {"watch": {"allNamespaces": False, "namespaces": ["team-a", "team-b"]}},
}


@pytest.fixture(scope="module")
def helm(kube_bin_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return Helm.from_bin_dir(kube_bin_dir, tmp_path_factory.mktemp("helm"))


def operator_container(docs: list[Json]) -> Json:
    deployment = one(docs, "Deployment")
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def assert_grants_operator_permissions(rules: list[Json]) -> None:
    missing = [
        f"{verb} {group or 'core'}/{resource}{'/' + sub if sub else ''}"
        for group, resource, sub, verbs in OPERATOR_PERMISSIONS
        for verb in verbs
        if not rules_allow(rules, group, resource, sub, verb)
    ]
    assert not missing, f"operator RBAC lacks: {missing}"


def test_cluster_scope_renders_one_cluster_role_watching_all_namespaces(helm: Helm) -> None:
    docs = helm.template({}, release="sf", namespace="ops")
    role = one(docs, "ClusterRole", "sf-slotfleet")
    assert_grants_operator_permissions(role["rules"])
    for group, resource in (
        ("apiextensions.k8s.io", "customresourcedefinitions"),
        ("", "namespaces"),
    ):
        assert rules_allow(role["rules"], group, resource, "", "watch")
    assert not rules_allow(role["rules"], "rbac.authorization.k8s.io", "roles", "", "escalate")
    assert not rules_allow(role["rules"], "rbac.authorization.k8s.io", "roles", "", "bind")
    binding = one(docs, "ClusterRoleBinding", "sf-slotfleet")
    assert binding["roleRef"]["name"] == "sf-slotfleet"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "sf-slotfleet", "namespace": "ops"}
    ]
    # the only Role is the Lease's (leader election), in the release namespace
    assert [r["metadata"]["name"] for r in find(docs, "Role")] == ["sf-slotfleet-leader-election"]
    assert not find(docs, "RoleBinding", "sf-slotfleet")
    container = operator_container(docs)
    assert container["command"] == ["slotfleet", "operator"]
    assert container["args"] == [
        "--all-namespaces",
        "--standalone",
        "--leader-elect",
        "--lease-name=sf-slotfleet",
        "--lease-duration=15",
        "--liveness=http://$(POD_IP):8080/healthz",
        "--metrics-host=$(POD_IP)",
        "--metrics-port=8081",
    ]
    assert {"name": "metrics", "containerPort": 8081, "protocol": "TCP"} in container["ports"]


def test_namespaced_scope_renders_a_role_per_watched_namespace(helm: Helm) -> None:
    docs = helm.template(NAMESPACED, release="sf", namespace="ops")
    roles = find(docs, "Role", "sf-slotfleet")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    for role in roles:
        assert_grants_operator_permissions(role["rules"])
    bindings = find(docs, "RoleBinding", "sf-slotfleet")
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    for binding in bindings:
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": "sf-slotfleet",
        }
        assert binding["subjects"][0]["namespace"] == "ops"
    # the only cluster-scoped grant is read-only discovery for kopf
    discovery = one(docs, "ClusterRole", "sf-slotfleet-discovery")
    verbs = {verb for rule in discovery["rules"] for verb in rule["verbs"]}
    assert verbs == {"get", "list", "watch"}
    assert not find(docs, "ClusterRole", "sf-slotfleet")
    args = operator_container(docs)["args"]
    assert args[:2] == ["--namespace=team-a", "--namespace=team-b"]
    assert "--all-namespaces" not in args

    without_cluster_rbac = helm.template(
        {
            **NAMESPACED,
            "rbac": {"scope": "namespaced", "discovery": False, "aggregateToDefaultRoles": False},
        }
    )
    assert not find(without_cluster_rbac, "ClusterRole")
    assert not find(without_cluster_rbac, "ClusterRoleBinding")


def test_namespaced_scope_defaults_to_the_release_namespace(helm: Helm) -> None:
    values = {"rbac": {"scope": "namespaced"}, "operator": {"watch": {"allNamespaces": False}}}
    docs = helm.template(values, namespace="ops")
    assert [r["metadata"]["namespace"] for r in find(docs, "Role", "sf-slotfleet")] == ["ops"]
    assert operator_container(docs)["args"][0] == "--namespace=ops"


def test_namespaced_scope_refuses_to_watch_all_namespaces(helm: Helm) -> None:
    proc = helm.template_text({"rbac": {"scope": "namespaced"}}, check=False)
    assert proc.returncode != 0
    assert "operator.watch.allNamespaces=false" in proc.stderr


def test_peering_switches_standalone_off_and_grants_peering_objects(helm: Helm) -> None:
    single = {"replicas": 1, "leaderElection": {"enabled": False, "leaseDuration": 15}}
    docs = helm.template({"operator": {"peering": "slotfleet", **single}})
    args = operator_container(docs)["args"]
    assert "--peering=slotfleet" in args
    assert "--standalone" not in args
    rules = one(docs, "ClusterRole", "sf-slotfleet")["rules"]
    assert rules_allow(rules, "zalando.org", "clusterkopfpeerings", "", "patch")
    assert rules_allow(rules, "zalando.org", "kopfpeerings", "", "patch")


def test_operator_deployment_is_restricted_and_probed(helm: Helm) -> None:
    docs = helm.template({})
    deployment = one(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == one(docs, "ServiceAccount")["metadata"]["name"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = operator_container(docs)
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert {"name": "health", "containerPort": 8080, "protocol": "TCP"} in container["ports"]
    assert container["resources"]["requests"]
    assert container["resources"]["limits"]
    assert container["image"] == "ghcr.io/slotfleet/slotfleet:0.1.0"


def test_two_operator_replicas_elect_a_leader_roll_and_keep_one_through_a_drain(
    helm: Helm,
) -> None:
    docs = helm.template({}, release="sf", namespace="ops")
    deployment = one(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    container = operator_container(docs)
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in container["env"][:2]}
    assert env == {"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace"}
    pdb = one(docs, "PodDisruptionBudget", "sf-slotfleet")
    assert pdb["metadata"]["namespace"] == "ops"
    assert pdb["spec"]["minAvailable"] == 1
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert deployment["spec"]["selector"] == pdb["spec"]["selector"]
    # the Lease: in the release namespace only, and read or renewed by name
    role = one(docs, "Role", "sf-slotfleet-leader-election")
    assert role["metadata"]["namespace"] == "ops"
    assert role["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": ["sf-slotfleet"],
            "verbs": ["get", "update"],
        },
    ]
    binding = one(docs, "RoleBinding", "sf-slotfleet-leader-election")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "sf-slotfleet", "namespace": "ops"}
    ]
    cluster_role = one(docs, "ClusterRole", "sf-slotfleet")
    assert not rules_allow(cluster_role["rules"], "coordination.k8s.io", "leases", "", "update")


def test_one_operator_without_election_is_recreated_and_has_no_pdb(helm: Helm) -> None:
    values = {"operator": {"replicas": 1, "leaderElection": {"enabled": False}}}
    docs = helm.template(values, release="sf")
    deployment = one(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert not find(docs, "PodDisruptionBudget")
    assert not find(docs, "Role", "sf-slotfleet-leader-election")
    assert not any(a.startswith("--lease") for a in operator_container(docs)["args"])
    # one replica under election: a rolling update, and no PDB that could block a drain
    docs = helm.template({"operator": {"replicas": 1}}, release="sf")
    assert one(docs, "Deployment")["spec"]["strategy"]["type"] == "RollingUpdate"
    assert not find(docs, "PodDisruptionBudget")


@pytest.mark.parametrize(
    ("operator", "message"),
    [
        ({"replicas": 2, "leaderElection": {"enabled": False}}, "needs operator.leaderElection"),
        ({"peering": "slotfleet"}, "operator.peering is for one operator"),
    ],
)
def test_two_writers_are_refused(helm: Helm, operator: dict[str, Any], message: str) -> None:
    proc = helm.template_text({"operator": operator}, check=False)
    assert proc.returncode != 0
    assert message in proc.stderr


def test_queues_are_aggregated_into_the_default_user_roles(helm: Helm) -> None:
    """Namespace users bound to the built-in view/edit/admin roles see (and edit) Queues."""
    docs = helm.template({}, release="sf")
    view = one(docs, "ClusterRole", "sf-slotfleet-queues-view")
    edit = one(docs, "ClusterRole", "sf-slotfleet-queues-edit")
    aggregate = "rbac.authorization.k8s.io/aggregate-to-"
    assert {k for k, v in view["metadata"]["labels"].items() if v == "true"} == {
        f"{aggregate}view",
        f"{aggregate}edit",
        f"{aggregate}admin",
    }
    assert {k for k, v in edit["metadata"]["labels"].items() if v == "true"} == {
        f"{aggregate}edit",
        f"{aggregate}admin",
    }
    for verb in ("get", "list", "watch"):
        assert rules_allow(view["rules"], "slotfleet.dev", "queues", "", verb)
    assert not rules_allow(view["rules"], "slotfleet.dev", "queues", "", "patch")
    for verb in ("create", "patch", "delete"):
        assert rules_allow(edit["rules"], "slotfleet.dev", "queues", "", verb)
    assert rules_allow(edit["rules"], "slotfleet.dev", "queues", "scale", "patch")
    off = helm.template({"rbac": {"aggregateToDefaultRoles": False}}, release="sf")
    assert not find(off, "ClusterRole", "sf-slotfleet-queues-view")


def test_crd_template_is_kept_on_uninstall_and_toggled(helm: Helm) -> None:
    crd = one(helm.template({}), "CustomResourceDefinition", "queues.slotfleet.dev")
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert not find(helm.template({"crds": {"install": False}}), "CustomResourceDefinition")


def test_optional_monitoring_objects(helm: Helm) -> None:
    assert sorted(d["kind"] for d in helm.template({"crds": {"install": False}})) == [
        "ClusterRole",
        "ClusterRole",
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "PodDisruptionBudget",
        "Role",
        "RoleBinding",
        "ServiceAccount",
    ]
    docs = helm.template(
        {
            "metrics": {"podMonitor": {"enabled": True}},
            "grafana": {"dashboard": {"enabled": True}},
            "prometheusAdapter": {"rules": {"enabled": True}},
        }
    )
    monitor = one(docs, "PodMonitor", "sf-slotfleet-workers")
    assert monitor["spec"]["selector"] == {
        "matchLabels": {"app.kubernetes.io/name": "slotfleet-worker"}
    }
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    # the operator's Queue gauges keep their own namespace label (the Queue's)
    operator_monitor = one(docs, "PodMonitor", "sf-slotfleet-operator")
    [endpoint] = operator_monitor["spec"]["podMetricsEndpoints"]
    assert (endpoint["port"], endpoint["honorLabels"]) == ("metrics", True)
    pod_labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    selector = operator_monitor["spec"]["selector"]["matchLabels"]
    assert selector
    assert selector.items() <= pod_labels.items()
    off = {
        "metrics": {"podMonitor": {"enabled": True}},
        "operator": {"metrics": {"enabled": False}},
    }
    assert [m["metadata"]["name"] for m in find(helm.template(off), "PodMonitor")] == [
        "sf-slotfleet-workers"
    ]
    assert "--metrics-port=8081" not in operator_container(helm.template(off))["args"]
    dashboard = one(docs, "ConfigMap", "sf-slotfleet-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    exprs = [
        t["expr"]
        for p in json.loads(dashboard["data"]["slotfleet.json"])["panels"]
        for t in p.get("targets", [])
    ]
    for metric in (
        "slotfleet_slots_total",
        "slotfleet_slots_busy",
        "slotfleet_slots_free",
        "slotfleet_queue_pending",
        "slotfleet_jobs_total",
        "slotfleet_job_duration_seconds_bucket",
        "slotfleet_job_pickup_latency_seconds_bucket",
    ):
        assert any(metric in e for e in exprs), f"dashboard never shows {metric}"
    assert any("outcome" in e and "rate(slotfleet_jobs_total" in e for e in exprs)
    one(docs, "ConfigMap", "sf-slotfleet-prometheus-adapter-rules")


def test_schema_rejects_unknown_and_invalid_values(helm: Helm) -> None:
    for bad, message in (
        ({"replicaCount": 2}, "additional properties 'replicaCount' not allowed"),
        ({"operator": {"replicas": 0}}, "minimum"),
        ({"operator": {"leaderElection": {"leaseDuration": 0}}}, "minimum"),
        ({"rbac": {"scope": "everywhere"}}, "value must be one of"),
        ({"operator": {"liveness": {"port": 0}}}, "minimum"),
    ):
        proc = helm.template_text(bad, check=False)
        assert proc.returncode != 0, bad
        assert message in proc.stderr, proc.stderr


# ----------------------------------------------------------- values.yaml <-> schema


def schema_keys(schema: Json, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every chart key: properties of objects the schema closes (additionalProperties false)."""
    for name, sub in schema.get("properties", {}).items():
        path = (*prefix, name)
        yield path
        if sub.get("additionalProperties") is False:
            yield from schema_keys(sub, path)


def comment_above(lines: list[str], path: tuple[str, ...]) -> str:
    """The comment block right above ``path``'s line in values.yaml ("" if none)."""
    index = 0
    for depth, name in enumerate(path):
        pattern = re.compile(rf"^{' ' * (2 * depth)}{re.escape(name)}:")
        while not pattern.match(lines[index]):
            index += 1
            if index >= len(lines):
                raise AssertionError(f"{'.'.join(path)} is not in values.yaml")
    above = []
    for line in reversed(lines[:index]):
        if not line.strip().startswith("#"):
            break
        above.append(line.strip().lstrip("#").strip())
    return " ".join(reversed(above))


def test_every_value_is_in_the_schema_and_commented() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert schema["additionalProperties"] is False
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    lines = (CHART / "values.yaml").read_text().splitlines()
    undocumented = []
    for path in schema_keys(schema):
        if path == ("global",):
            continue
        node: Any = values
        for name in path:
            assert isinstance(node, dict), f"{'.'.join(path)}: parent is not a mapping"
            assert name in node, f"{'.'.join(path)}: no default in values.yaml"
            node = node[name]
        if not comment_above(lines, path):
            undocumented.append(".".join(path))
    assert not undocumented, f"values.yaml keys without a comment: {undocumented}"


def test_chart_metadata() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["kubeVersion"] == ">=1.30.0-0"
    assert chart["appVersion"] == "0.1.0"


def test_lint_fails_on_bad_values(helm: Helm) -> None:
    with pytest.raises(CommandError):
        helm.lint({"rbac": {"scope": "nowhere"}})


# ----------------------------------------------------------------------------- dashboard

DASHBOARD = {"dashboard": {"enabled": True, "store": {"secretRef": {"name": "jobs-db"}}}}


def dashboard_container(docs: list[Json]) -> Json:
    deployment = one(docs, "Deployment", "sf-slotfleet-dashboard")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return dict(container)


def test_the_dashboard_is_off_by_default(helm: Helm) -> None:
    docs = helm.template({}, release="sf", namespace="ops")
    assert [d["metadata"]["name"] for d in find(docs, "Deployment")] == ["sf-slotfleet"]
    assert not find(docs, "Service")


def test_the_dashboard_is_read_only_restricted_and_has_no_api_token(helm: Helm) -> None:
    docs = helm.template(DASHBOARD, release="sf", namespace="ops")
    deployment = one(docs, "Deployment", "sf-slotfleet-dashboard")
    pod = deployment["spec"]["template"]["spec"]
    container = dashboard_container(docs)
    assert container["command"] == ["slotfleet", "dashboard"]
    assert container["args"] == ["--host=0.0.0.0", "--port=8000", "--refresh=2"]
    env = {e["name"]: e for e in container["env"]}
    assert env["SLOTFLEET_DSN"]["valueFrom"] == {"secretKeyRef": {"name": "jobs-db", "key": "dsn"}}
    assert "SLOTFLEET_DASHBOARD_TOKEN" not in env
    assert pod["automountServiceAccountToken"] is False
    operator = one(docs, "Deployment", "sf-slotfleet")["spec"]["template"]["spec"]
    assert pod["securityContext"] == operator["securityContext"]
    assert container["securityContext"] == operator["containers"][0]["securityContext"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    service = one(docs, "Service", "sf-slotfleet-dashboard")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}
    ]
    operator_selector = one(docs, "Deployment", "sf-slotfleet")["spec"]["selector"]["matchLabels"]
    assert not operator_selector.items() <= labels.items()  # neither Deployment adopts the other
    assert not deployment["spec"]["selector"]["matchLabels"].items() <= (
        one(docs, "Deployment", "sf-slotfleet")["spec"]["template"]["metadata"]["labels"].items()
    )


def test_dashboard_actions_take_their_token_from_a_secret(helm: Helm) -> None:
    values = {
        "dashboard": {
            **DASHBOARD["dashboard"],
            "actions": {"enabled": True, "tokenSecretRef": {"name": "dash-token"}},
            "service": {"enabled": False},
            "extraArgs": ["--window", "1h", "--bucket", "2m"],
        }
    }
    docs = helm.template(values, release="sf", namespace="ops")
    container = dashboard_container(docs)
    assert container["args"] == [
        "--host=0.0.0.0", "--port=8000", "--refresh=2", "--enable-actions",
        "--window", "1h", "--bucket", "2m",
    ]  # fmt: skip
    env = {e["name"]: e for e in container["env"]}
    assert env["SLOTFLEET_DASHBOARD_TOKEN"]["valueFrom"] == {
        "secretKeyRef": {"name": "dash-token", "key": "token"}
    }
    assert not find(docs, "Service")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"dashboard": {"enabled": True}}, "needs dashboard.store.secretRef.name"),
        (
            {"dashboard": {**DASHBOARD["dashboard"], "actions": {"enabled": True}}},
            "needs dashboard.actions.tokenSecretRef.name",
        ),
        ({"dashboard": {"replicas": 2}}, "additional properties 'replicas' not allowed"),
        ({"dashboard": {"refreshSeconds": 0}}, "minimum"),
    ],
)
def test_dashboard_values_a_chart_cannot_serve_are_refused(
    helm: Helm, values: dict[str, Any], message: str
) -> None:
    proc = helm.template_text(values, check=False)
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr
