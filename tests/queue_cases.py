"""Invalid Queue specs, each with the message both checkers must give.

One table for two tests: ``tests/unit/test_queue_validation.py`` runs it through the
pydantic models (what ``slotfleet fleet -f`` uses) and ``tests/kube/test_queue_validation.py``
through the real API server with the generated CRD. A rule written once in
``slotfleet/models/rules.py`` as CEL and Python must refuse the same specs with the same
words; where the two checkers word a plain schema error differently (bounds, types), a
case names each checker's words.

The issue's examples come first: manifests the API server used to accept, whose every
pod was then refused (an image with a scheme), or that printed the DSN (an import named
$(SLOTFLEET_DSN)), or lost an env entry without a word.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Case:
    name: str
    patch: dict[str, Any]
    """Merged into a valid spec (dicts merge; anything else replaces)."""
    message: str
    """What both checkers say (a substring of their output)."""
    api_message: str | None = None
    """What the API server says instead, where its wording differs."""

    @property
    def api(self) -> str:
        return self.api_message or self.message


IMAGE = "image must be a reference such as registry.example.com/team/tasks:1.0"
MODULE = "must be a Python module name such as myapp.tasks"
OBJECT_NAME = "must be a Kubernetes object name"
KEY = "must be a Secret or ConfigMap key"
OWNED_ENV = "is set by the operator and cannot be overridden"


def pod(**spec: Any) -> dict[str, Any]:
    return {"template": {"spec": spec}}


CASES: tuple[Case, ...] = (
    Case("image-trailing-space", {"image": "ghcr.io/acme/tasks:1.0 "}, IMAGE),
    Case("image-scheme", {"image": "https://ghcr.io/acme/tasks:1.0"}, IMAGE),
    Case("image-uppercase", {"image": "ghcr.io/Acme/tasks"}, IMAGE),
    Case("import-path", {"imports": ["../../etc/passwd"]}, MODULE),
    Case("import-var", {"imports": ["$(SLOTFLEET_DSN)"]}, MODULE),
    Case("secret-name", {"store": {"secretRef": {"name": "DB_Secret"}}}, OBJECT_NAME),
    Case("secret-key", {"store": {"secretRef": {"name": "db", "key": "my dsn"}}}, KEY),
    Case(
        "requests-over-limits",
        {"resources": {"requests": {"memory": "2Gi"}, "limits": {"memory": "1Gi"}}},
        "every request must be at most its limit",
    ),
    Case("negative-quantity", {"resources": {"requests": {"cpu": "-1"}}}, "must not be negative"),
    Case("not-a-quantity", {"resources": {"limits": {"cpu": "lots"}}}, "must be a quantity"),
    Case(
        "env-dsn", {"env": [{"name": "SLOTFLEET_DSN", "value": "x"}]}, f"SLOTFLEET_DSN {OWNED_ENV}"
    ),
    # ---------------------------------------------------------------- env
    Case("env-pod-name", {"env": [{"name": "POD_NAME", "value": "x"}]}, f"POD_NAME {OWNED_ENV}"),
    Case(
        "env-name",
        {"env": [{"name": "1 bad", "value": "x"}]},
        "must be an environment variable name",
    ),
    Case(
        "env-value-size",
        {"env": [{"name": "BIG", "value": "x" * 32_769}]},
        "at most 32768 characters",
        api_message="may not be more than 32768 bytes",
    ),
    Case(
        "env-value-and-source",
        {
            "env": [
                {
                    "name": "A",
                    "value": "x",
                    "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}},
                }
            ]
        },
        "either value or valueFrom, not both",
    ),
    Case(
        "env-two-sources",
        {
            "env": [
                {
                    "name": "A",
                    "valueFrom": {
                        "secretKeyRef": {"name": "s", "key": "k"},
                        "configMapKeyRef": {"name": "c", "key": "k"},
                    },
                }
            ]
        },
        "valueFrom must name exactly one of",
    ),
    Case(
        "env-secret-key",
        {"env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "s", "key": "a b"}}}]},
        KEY,
    ),
    Case("env-from-neither", {"envFrom": [{"prefix": "X_"}]}, "name exactly one of secretRef"),
    # ---------------------------------------------------------------- what the operator owns
    Case(
        "template-containers",
        pod(containers=[{"name": "worker", "command": ["sh"]}]),
        "containers is set by the operator",
    ),
    Case(
        "template-service-account",
        pod(serviceAccountName="admin"),
        "serviceAccountName is set by the operator",
    ),
    Case("spec-command", {"command": ["sh", "-c", "env"]}, "command is set by the operator"),
    Case(
        "spec-security-context",
        {"securityContext": {"privileged": True}},
        "securityContext is set by the operator: workers never run as root",
    ),
    Case("template-host-network", pod(hostNetwork=True), "hostNetwork is set by the operator"),
    Case(
        "template-grace",
        pod(terminationGracePeriodSeconds=1),
        "terminationGracePeriodSeconds is set by the operator",
    ),
    Case(
        "run-as-root",
        pod(securityContext={"runAsNonRoot": False}),
        "workers never run as root",
    ),
    Case(
        "uid-zero",
        pod(securityContext={"runAsUser": 0}),
        "greater than or equal to 1",
    ),
    Case(
        "owned-label",
        {"template": {"metadata": {"labels": {"slotfleet.dev/queue": "other"}}}},
        "are set by the operator (they select the worker pods)",
    ),
    Case(
        "owned-annotation",
        {
            "template": {
                "metadata": {"annotations": {"controller.kubernetes.io/pod-deletion-cost": "9"}}
            }
        },
        "pod-deletion-cost is set by the operator",
    ),
    Case(
        "tmp-volume",
        pod(volumes=[{"name": "tmp", "emptyDir": {}}]),
        "the volume name tmp is the operator's",
    ),
    Case(
        "tmp-mount",
        {
            "volumeMounts": [{"name": "data", "mountPath": "/tmp"}],
            **pod(volumes=[{"name": "data", "emptyDir": {}}]),
        },
        "/tmp is the operator's writable scratch volume",
    ),
    # ---------------------------------------------------------------- the pod template
    Case(
        "mount-without-volume",
        {"volumeMounts": [{"name": "data", "mountPath": "/data"}]},
        "every name must be a volume of template.spec.volumes",
    ),
    Case(
        "pull-secret-name",
        pod(imagePullSecrets=[{"name": "Reg Cred"}]),
        OBJECT_NAME,
    ),
    Case(
        "toleration-exists-value",
        pod(tolerations=[{"key": "k", "operator": "Exists", "value": "v"}]),
        "a toleration with operator Exists has no value",
    ),
    Case("priority-class", pod(priorityClassName="Batch_Low"), OBJECT_NAME),
    Case(
        "budget-both",
        {"podDisruptionBudget": {"minAvailable": 1, "maxUnavailable": 1}},
        "sets exactly one of minAvailable, maxUnavailable",
    ),
    Case(
        "budget-percent",
        {"podDisruptionBudget": {"maxUnavailable": "half"}},
        "a number of pods (0 or more) or a percentage such as 25%",
    ),
    # ---------------------------------------------------------------- YAML's booleans
    Case(
        "mode-unquoted-off",
        {"autoscaling": {"mode": False}},
        'quote it, as in mode: "off"',
        # the API server's type check runs before, and blocks, every CEL rule
        api_message='spec.autoscaling.mode: Invalid value: "boolean"',
    ),
)


def merged(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``patch`` merged in (nested dicts merge, other values replace)."""
    out = dict(base)
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out
