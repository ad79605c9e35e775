"""The worker pod a Queue gets: its template merged under what the operator owns."""

from __future__ import annotations

from typing import Any

from slotfleet.models.container import OPERATOR_ENV
from slotfleet.models.pod import OPERATOR_LABELS
from slotfleet.models.resource import QueueSpec
from slotfleet.operator import builders as b
from slotfleet.operator.workerpod import CONTAINER_SECURITY, worker_command
from tests.kube.testnode import expand

REF = b.QueueRef(name="emails", namespace="team-a", uid="1234-uid")

FULL: dict[str, Any] = {
    "store": {"secretRef": {"name": "db"}},
    "replicas": 2,
    "autoscaling": {"mode": "off"},
    "env": [
        {"name": "LOG_LEVEL", "value": "debug"},
        {"name": "API_TOKEN", "valueFrom": {"secretKeyRef": {"name": "api", "key": "token"}}},
        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
    ],
    "envFrom": [{"configMapRef": {"name": "settings"}, "prefix": "APP_"}],
    "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
    "volumeMounts": [{"name": "certs", "mountPath": "/etc/certs", "readOnly": True}],
    "template": {
        "metadata": {"labels": {"team": "mail"}, "annotations": {"mesh/inject": "false"}},
        "spec": {
            "imagePullSecrets": [{"name": "regcred"}],
            "nodeSelector": {"pool": "workers"},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "jobs"}],
            "affinity": {
                "podAntiAffinity": {
                    "preferredDuringSchedulingIgnoredDuringExecution": [
                        {
                            "weight": 50,
                            "podAffinityTerm": {
                                "topologyKey": "kubernetes.io/hostname",
                                "labelSelector": {"matchLabels": {"slotfleet.dev/queue": "emails"}},
                            },
                        }
                    ]
                }
            },
            "topologySpreadConstraints": [
                {
                    "maxSkew": 1,
                    "topologyKey": "topology.kubernetes.io/zone",
                    "whenUnsatisfiable": "ScheduleAnyway",
                    "labelSelector": {"matchLabels": {"slotfleet.dev/queue": "emails"}},
                }
            ],
            "priorityClassName": "batch-low",
            "volumes": [{"name": "certs", "secret": {"secretName": "certs"}}],
            "securityContext": {"runAsUser": 2000, "fsGroup": 3000},
        },
    },
    "serviceAccount": {"annotations": {"iam.gke.io/gcp-service-account": "q@p.iam"}},
    "podDisruptionBudget": {"maxUnavailable": 1},
}


def pod_of(spec: QueueSpec) -> dict[str, Any]:
    template: dict[str, Any] = b.build_deployment(REF, spec)["spec"]["template"]
    return template


def test_every_template_field_reaches_the_worker_pod() -> None:
    template = pod_of(QueueSpec.model_validate(FULL))
    given = FULL["template"]["spec"]
    pod = template["spec"]
    for key in ("imagePullSecrets", "nodeSelector", "tolerations", "affinity"):
        assert pod[key] == given[key], key
    assert pod["topologySpreadConstraints"] == given["topologySpreadConstraints"]
    assert pod["priorityClassName"] == "batch-low"
    assert pod["volumes"] == [{"name": "tmp", "emptyDir": {}}, *given["volumes"]]
    assert template["metadata"]["annotations"] == {"mesh/inject": "false"}
    assert template["metadata"]["labels"] == {"team": "mail", **b.child_labels(REF)}
    (container,) = pod["containers"]
    assert container["volumeMounts"] == [
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "certs", "mountPath": "/etc/certs", "readOnly": True},
    ]
    assert container["envFrom"] == FULL["envFrom"]
    assert container["env"][len(OPERATOR_ENV) :] == FULL["env"]
    assert container["resources"] == FULL["resources"]


def test_service_account_annotations_and_disruption_budget() -> None:
    children = b.build_children(REF, QueueSpec.model_validate(FULL), pod_monitor_available=False)
    by_kind = {c["kind"]: c for c in children}
    assert by_kind["ServiceAccount"]["metadata"]["annotations"] == {
        "iam.gke.io/gcp-service-account": "q@p.iam"
    }
    pdb = by_kind["PodDisruptionBudget"]
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["metadata"]["name"] == "emails-worker"
    assert pdb["spec"] == {
        "selector": {"matchLabels": b.selector_labels(REF)},
        "maxUnavailable": 1,
    }
    assert pdb["metadata"]["ownerReferences"][0]["uid"] == "1234-uid"
    plain = QueueSpec.model_validate({"store": {"secretRef": {"name": "db"}}})
    kinds = [c["kind"] for c in b.build_children(REF, plain, pod_monitor_available=False)]
    assert "PodDisruptionBudget" not in kinds


def test_the_security_floor_holds_under_the_spec_user() -> None:
    pod = pod_of(QueueSpec.model_validate(FULL))["spec"]
    assert pod["securityContext"] == {
        "runAsUser": 2000,
        "runAsGroup": 10001,
        "fsGroup": 3000,
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    # the container sets no user (the pod's wins) and the rest of the floor
    assert pod["containers"][0]["securityContext"] == CONTAINER_SECURITY
    assert "runAsUser" not in CONTAINER_SECURITY
    assert CONTAINER_SECURITY["allowPrivilegeEscalation"] is False
    assert CONTAINER_SECURITY["readOnlyRootFilesystem"] is True


def test_operator_env_and_labels_are_the_ones_the_models_reserve() -> None:
    """What the builders set and what the schema refuses are one list each."""
    container = pod_of(QueueSpec.model_validate(FULL))["spec"]["containers"][0]
    own = [e["name"] for e in container["env"] if "valueFrom" in e][: len(OPERATOR_ENV)]
    assert own == list(OPERATOR_ENV)
    assert set(b.child_labels(REF)) == set(OPERATOR_LABELS)


def test_every_argument_the_operator_builds_is_escaped_for_the_kubelet() -> None:
    """Regression: the kubelet expands $(VAR) in a command, and an import named
    $(SLOTFLEET_DSN) printed the DSN into the pod log. Only the operator's own
    $(POD_NAME) and $(POD_IP) may expand."""
    hostile = "$(SLOTFLEET_DSN)"
    # what the schema refuses, forced past it: the builder escapes whatever it is given
    spec = QueueSpec.model_validate({"store": {"secretRef": {"name": "db"}}})
    spec = spec.model_copy(update={"imports": [hostile, "a$b"], "queue_name": f"q{hostile}"})
    argv = worker_command("q" + hostile, "team-a/" + hostile, spec)
    env = {"SLOTFLEET_DSN": "postgresql://u:pw@db/x", "POD_NAME": "pod-1", "POD_IP": "10.0.0.7"}
    expanded = [expand(arg, env) for arg in argv]
    assert "postgresql://u:pw@db/x" not in " ".join(expanded)
    assert expanded[expanded.index("--import") + 1] == hostile
    assert expanded[-1] == "a$b"
    assert expanded[expanded.index("--queue-resource") + 1] == "team-a/" + hostile
    assert expanded[expanded.index("--worker-id") + 1] == "pod-1"
    assert expanded[expanded.index("--metrics-host") + 1] == "10.0.0.7"


def test_a_new_queue_without_replicas_starts_at_what_its_mode_wants() -> None:
    def replicas(**autoscaling: Any) -> int:
        data = {"store": {"secretRef": {"name": "db"}}, "autoscaling": autoscaling}
        return int(b.build_deployment(REF, QueueSpec.model_validate(data))["spec"]["replicas"])

    assert replicas(mode="operator", minReplicas=0) == 0  # nothing queued: no worker
    assert replicas(mode="operator", minReplicas=2) == 2
    assert replicas(mode="hpa", minReplicas=3) == 3
    assert replicas(mode="hpa", minReplicas=0) == 0  # an HPA scales from zero (1.37)
    assert replicas(mode="off") == 1
    given = {"store": {"secretRef": {"name": "db"}}, "replicas": 4, "autoscaling": {"mode": "off"}}
    assert QueueSpec.model_validate(given).replicas == 4


def test_functions_any_reaches_the_worker_command() -> None:
    base = {"store": {"secretRef": {"name": "db"}}}
    argv = worker_command("q", "ns/q", QueueSpec.model_validate({**base, "functions": "any"}))
    assert argv[argv.index("--functions") + 1] == "any"
    assert "--functions" not in worker_command("q", "ns/q", QueueSpec.model_validate(base))
