"""The worker pod template of a Queue's Deployment: a pure builder, no I/O.

The operator owns the worker container (its command, image, probes, the env it sets and
its security context) and the floor of the pod's security context; the Queue adds its
``spec.env``/``envFrom``/``resources``/``volumeMounts`` to the container and merges
``spec.template`` onto the pod (labels, annotations, scheduling, pull secrets, volumes,
user and groups). The models refuse a spec that tries to set what the operator owns
(``slotfleet.models.pod``, ``slotfleet.models.container``), and here the operator's
values are applied last anyway, so nothing a spec says can lower the floor.

Every argument the operator writes into the container's command is escaped for the
kubelet, which expands ``$(VAR)`` in commands (``$$`` is a literal ``$``): only the
operator's own ``$(POD_NAME)`` and ``$(POD_IP)`` are meant to be expanded.

What this module is not: it builds no other child (``builders``) and reads no cluster.
"""

from __future__ import annotations

from typing import Any

from slotfleet.control import worker_args
from slotfleet.models.container import OPERATOR_ENV, TMP_PATH, TMP_VOLUME
from slotfleet.models.resource import QueueSpec

Json = dict[str, Any]

#: Name of the worker's metrics/health container port.
METRICS_PORT_NAME = "metrics"
#: Extra seconds of grace after the drain timeout, for the worker to hand jobs back.
GRACE_MARGIN_SECONDS = 10
WORKER_UID = 10001

#: The container's security context: not the spec's to change.
CONTAINER_SECURITY: Json = {
    "runAsNonRoot": True,
    "readOnlyRootFilesystem": True,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def literal(text: str) -> str:
    """``text`` as a command argument the kubelet leaves as it is (``$`` -> ``$$``)."""
    return text.replace("$", "$$")


def worker_command(queue_name: str, resource: str, spec: QueueSpec) -> list[str]:
    """The worker container's command for queue ``queue_name`` of Queue ``resource``
    (``NS/NAME``): :func:`slotfleet.control.worker_args`, as a local fleet writes it,
    with the spec's text escaped. Only ``$(POD_NAME)`` and ``$(POD_IP)`` are left for
    the kubelet."""
    args = worker_args(
        spec,
        queue_name,
        worker_id="$(POD_NAME)",
        metrics_host="$(POD_IP)",
        metrics_port=spec.metrics_port,
        queue_resource=resource,
        escape=literal,
    )
    return ["slotfleet", *args]


def worker_env(spec: QueueSpec) -> list[Json]:
    """The DSN from the Secret and the pod's identity from the downward API
    (:data:`OPERATOR_ENV`), then the spec's own (whose names cannot be those)."""

    def field(path: str) -> Json:
        return {"fieldRef": {"apiVersion": "v1", "fieldPath": path}}

    secret = spec.store.secret_ref
    own: dict[str, Json] = {
        "SLOTFLEET_DSN": {"secretKeyRef": {"name": secret.name, "key": secret.key}},
        "POD_NAME": field("metadata.name"),
        "POD_NAMESPACE": field("metadata.namespace"),
        "POD_IP": field("status.podIP"),
    }
    env: list[Json] = [{"name": name, "valueFrom": own[name]} for name in OPERATOR_ENV]
    env += [
        e.model_dump(by_alias=True, exclude_none=True)
        for e in spec.env
        if e.name not in own  # refused by the models already; never let one through
    ]
    return env


def _probe(path: str, period: int, failures: int) -> Json:
    return {
        "httpGet": {"path": path, "port": METRICS_PORT_NAME},
        "periodSeconds": period,
        "timeoutSeconds": 3,
        "failureThreshold": failures,
    }


def _dump_list(items: list[Any] | None) -> list[Json]:
    return [item.model_dump(by_alias=True, exclude_none=True) for item in items or []]


def worker_container(queue_name: str, resource: str, spec: QueueSpec) -> Json:
    """The one container of a worker pod."""
    container: Json = {
        "name": "worker",
        "image": spec.image,
        "imagePullPolicy": spec.image_pull_policy,
        "command": worker_command(queue_name, resource, spec),
        "env": worker_env(spec),
        "ports": [
            {"name": METRICS_PORT_NAME, "containerPort": spec.metrics_port, "protocol": "TCP"}
        ],
        "readinessProbe": _probe("/readyz", period=5, failures=2),
        "livenessProbe": {**_probe("/healthz", period=10, failures=3), "initialDelaySeconds": 10},
        "securityContext": dict(CONTAINER_SECURITY),
        # the root filesystem is read-only; Python and process pools want a writable /tmp
        "volumeMounts": [
            {"name": TMP_VOLUME, "mountPath": TMP_PATH},
            *_dump_list(spec.volume_mounts),
        ],
    }
    if spec.env_from:
        container["envFrom"] = _dump_list(spec.env_from)
    if spec.resources is not None:
        resources = spec.resources.model_dump(by_alias=True, exclude_none=True)
        if resources:
            container["resources"] = resources
    return container


def _pod_security(spec: QueueSpec) -> Json:
    """The spec's user and groups on top of the image's, under the operator's floor."""
    security: Json = {"runAsUser": WORKER_UID, "runAsGroup": WORKER_UID, "fsGroup": WORKER_UID}
    given = spec.template.spec.security_context if spec.template else None
    if given is not None:
        security.update(given.model_dump(by_alias=True, exclude_none=True))
    security.update({"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}})
    return security


def worker_pod_template(
    queue_name: str,
    resource: str,
    spec: QueueSpec,
    *,
    service_account: str,
    labels: dict[str, str],
) -> Json:
    """The Deployment's pod template: the spec's template merged under the operator's
    pod (``labels`` are the operator's and win over the spec's)."""
    template = spec.template
    overrides = template.spec if template else None
    pod: Json = {
        "serviceAccountName": service_account,
        "automountServiceAccountToken": True,
        "terminationGracePeriodSeconds": spec.drain_timeout_seconds + GRACE_MARGIN_SECONDS,
        "securityContext": _pod_security(spec),
        "containers": [worker_container(queue_name, resource, spec)],
        "volumes": [{"name": TMP_VOLUME, "emptyDir": {}}],
    }
    metadata: Json = {"labels": {**((template and template.metadata.labels) or {}), **labels}}
    annotations = template.metadata.annotations if template else None
    if annotations:
        metadata["annotations"] = dict(annotations)
    if overrides is not None:
        given = overrides.model_dump(
            by_alias=True,
            exclude_none=True,
            include={
                "image_pull_secrets",
                "node_selector",
                "tolerations",
                "affinity",
                "topology_spread_constraints",
                "priority_class_name",
            },
        )
        pod.update(given)
        pod["volumes"] += _dump_list(overrides.volumes)
    return {"metadata": metadata, "spec": pod}
