"""What a Queue may say about its worker pods, in the shapes Kubernetes users know.

The operator builds the worker pod (``slotfleet.operator.builders``); a Queue adds to it
``spec.template``, a subset of a PodTemplateSpec (``metadata.labels``/``annotations``;
``spec.imagePullSecrets``, ``nodeSelector``, ``tolerations``, ``affinity``,
``topologySpreadConstraints``, ``priorityClassName``, ``volumes``, ``securityContext``)
merged onto that pod, ``spec.serviceAccount.annotations`` (workload identity) and
``spec.podDisruptionBudget``. The worker container's own settings (env, envFrom,
resources, volumeMounts) are in ``slotfleet.models.container``.

What the operator owns wins, and a spec that tries to set it is refused by the schema
(and by these models, for ``slotfleet fleet -f``) with a message naming the field, never
dropped: the worker container (``template.spec.containers``: command, args, image,
probes, its security context), the pod labels it selects by (:data:`OPERATOR_LABELS`),
the deletion-cost annotation, the ServiceAccount, the grace period, host namespaces, the
``tmp`` volume and the security floor (never root).

Deep Kubernetes types whose every field this project would otherwise have to copy
(``affinity``, a volume's source, a spread constraint's selector) are kept as given
(``x-kubernetes-preserve-unknown-fields``): the API server validates them when the
operator creates the Deployment, and a refusal there becomes the Queue's ``Degraded``
condition with the server's message.

What this module is not: it builds no manifest and knows no API server.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, ConfigDict, Field, field_validator, model_validator

from slotfleet.models.container import TMP_PATH, TMP_VOLUME
from slotfleet.models.rules import (
    LabelValue,
    ObjectName,
    OwnedFields,
    SpecModel,
    VolumeName,
    cel,
    cel_extra,
    cel_list,
)

#: Pod labels the operator sets (the first two select the worker pods).
OPERATOR_LABELS = (
    "app.kubernetes.io/name",
    "slotfleet.dev/queue",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/managed-by",
)
#: The annotation the operator keeps at each pod's busy slots (idle pods go first).
DELETION_COST_ANNOTATION = "controller.kubernetes.io/pod-deletion-cost"
#: Labels, annotations and selectors: at most this many entries each.
MAX_ENTRIES = 64


# ------------------------------------------------------------------ volumes


_NOT_TMP_VOLUME = cel(
    f"self.name != '{TMP_VOLUME}'",
    f"the volume name {TMP_VOLUME} is the operator's (the writable {TMP_PATH})",
    field_path=".name",
)


class Volume(SpecModel):
    """A pod volume: its name and one source (secret, configMap,
    persistentVolumeClaim, emptyDir, csi, ...), as in a pod spec. The
    API server checks the source when the operator creates the Deployment."""

    model_config = ConfigDict(extra="allow", json_schema_extra=cel_extra(_NOT_TMP_VOLUME))

    name: VolumeName
    """Name of the volume, as volumeMounts refer to it."""

    @field_validator("name")
    @classmethod
    def _not_tmp(cls, name: str) -> str:
        if name == TMP_VOLUME:
            raise ValueError(_NOT_TMP_VOLUME["message"])
        return name


# ------------------------------------------------------------------ scheduling


_EXISTS_NO_VALUE = cel(
    "!has(self.operator) || self.operator != 'Exists' || !has(self.value) || self.value == ''",
    "a toleration with operator Exists has no value",
)


class Toleration(SpecModel):
    """A taint the worker pods tolerate, as in a pod spec."""

    model_config = ConfigDict(json_schema_extra=cel_extra(_EXISTS_NO_VALUE))

    key: Annotated[str, Field(max_length=317)] | None = None
    """Taint key; empty with operator Exists tolerates every taint."""
    operator: Literal["Exists", "Equal"] | None = None
    """Equal (default) or Exists."""
    value: LabelValue | None = None
    """Taint value for operator Equal."""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    """Which effect is tolerated; empty means all."""
    toleration_seconds: int | None = None
    """NoExecute only: how long the pod stays once tainted."""

    @model_validator(mode="after")
    def _exists_no_value(self) -> Toleration:
        if self.operator == "Exists" and self.value:
            raise ValueError(_EXISTS_NO_VALUE["message"])
        return self


class SpreadConstraint(SpecModel):
    """A topologySpreadConstraint, as in a pod spec (its labelSelector selects the
    workers by matchLabels slotfleet.dev/queue: the Queue's name)."""

    model_config = ConfigDict(extra="allow")

    max_skew: Annotated[int, Field(ge=1)]
    """Most the pod count may differ between two topology domains."""
    topology_key: Annotated[str, Field(min_length=1, max_length=317)]
    """Node label whose values are the domains, e.g. topology.kubernetes.io/zone."""
    when_unsatisfiable: Literal["DoNotSchedule", "ScheduleAnyway"]
    """What the scheduler does when the constraint cannot be met."""


class PodSecurity(SpecModel):
    """The pod security context a Queue may set. The operator's floor always holds:
    runAsNonRoot, seccomp RuntimeDefault, and a container that drops every capability,
    cannot escalate and has a read-only root."""

    model_config = ConfigDict(
        json_schema_extra=cel_extra(
            cel(
                "!has(self.runAsNonRoot) || self.runAsNonRoot",
                "workers never run as root: runAsNonRoot cannot be false",
                field_path=".runAsNonRoot",
            )
        )
    )

    run_as_non_root: bool | None = None
    """Always true for workers (the operator sets it)."""
    run_as_user: Annotated[int, Field(ge=1, le=2_147_483_647)] | None = None
    """User id of the worker processes (default 10001, the image's user); never 0."""
    run_as_group: Annotated[int, Field(ge=0, le=2_147_483_647)] | None = None
    """Group id of the worker processes (default 10001)."""
    fs_group: Annotated[int, Field(ge=0, le=2_147_483_647)] | None = None
    """Group that owns mounted volumes (default 10001)."""
    supplemental_groups: list[Annotated[int, Field(ge=0, le=2_147_483_647)]] | None = Field(
        default=None, max_length=32
    )
    """More groups of the worker processes."""
    fs_group_change_policy: Literal["OnRootMismatch", "Always"] | None = None
    """When volume ownership is changed to fsGroup."""

    @field_validator("run_as_non_root")
    @classmethod
    def _never_root(cls, value: bool | None) -> bool | None:
        if value is False:
            raise ValueError("workers never run as root: runAsNonRoot cannot be false")
        return value


# ------------------------------------------------------------------ the template


class PullSecret(SpecModel):
    """A Secret of type kubernetes.io/dockerconfigjson in the Queue's namespace."""

    name: ObjectName
    """Its name."""


#: template.spec fields the operator owns: present in the schema only to be refused with
#: a message (an unknown field would be pruned without a word by non-strict clients).
OWNED_POD_FIELDS = OwnedFields(
    {
        "containers": "set env, envFrom, resources and volumeMounts on the Queue's spec; "
        "command, image, probes and the container's security context are the operator's",
        "initContainers": "the worker pod has no init containers",
        "serviceAccountName": "the worker ServiceAccount <queue>-worker; annotate it with "
        "spec.serviceAccount.annotations",
        "automountServiceAccountToken": "workers read their own Queue with it",
        "terminationGracePeriodSeconds": "it follows spec.drainTimeoutSeconds",
        "hostNetwork": "workers never share the node's network",
        "hostPID": "workers never share the node's processes",
        "hostIPC": "workers never share the node's IPC",
    }
)


class PodSpecOverrides(SpecModel):
    """Pod-level settings merged onto the worker pod the operator builds."""

    model_config = ConfigDict(json_schema_extra=cel_extra(*OWNED_POD_FIELDS.cel()))

    image_pull_secrets: list[PullSecret] | None = Field(default=None, max_length=16)
    """Secrets for pulling a private task image, e.g. [{name: regcred}]."""
    node_selector: dict[str, LabelValue] | None = Field(default=None, max_length=MAX_ENTRIES)
    """Node labels the worker pods require."""
    tolerations: list[Toleration] | None = Field(default=None, max_length=32)
    """Taints the worker pods tolerate."""
    affinity: dict[str, Any] | None = None
    """Node and pod (anti-)affinity, as in a pod spec (checked by the API server)."""
    topology_spread_constraints: list[SpreadConstraint] | None = Field(default=None, max_length=8)
    """How worker pods spread over zones or nodes."""
    priority_class_name: ObjectName | None = None
    """PriorityClass of the worker pods."""
    volumes: list[Volume] | None = Field(default=None, max_length=32)
    """Extra volumes; mount them with spec.volumeMounts."""
    security_context: PodSecurity | None = None
    """User, group and fsGroup of the worker pods (never root)."""

    # Typed (a CEL rule cannot see an untyped field), present only to be refused.
    containers: list[dict[str, Any]] | None = None
    """Refused: the operator builds the worker container."""
    init_containers: list[dict[str, Any]] | None = None
    """Refused: the worker pod has no init containers."""
    service_account_name: str | None = None
    """Refused: the operator's worker ServiceAccount."""
    automount_service_account_token: bool | None = None
    """Refused: workers need their token."""
    termination_grace_period_seconds: int | None = None
    """Refused: set spec.drainTimeoutSeconds."""
    host_network: bool | None = None
    """Refused."""
    host_pid: Annotated[bool | None, Field(alias="hostPID")] = None
    """Refused."""
    host_ipc: Annotated[bool | None, Field(alias="hostIPC")] = None
    """Refused."""

    @model_validator(mode="after")
    def _owned(self) -> PodSpecOverrides:
        OWNED_POD_FIELDS.check(self)
        return self


_OWNED_LABELS = cel(
    f"!{cel_list(OPERATOR_LABELS)}.exists(k, k in self)",
    "labels " + ", ".join(OPERATOR_LABELS) + " are set by the operator (they select the "
    "worker pods)",
)
_OWNED_ANNOTATIONS = cel(
    f"!('{DELETION_COST_ANNOTATION}' in self)",
    f"the annotation {DELETION_COST_ANNOTATION} is set by the operator (busy pods go last)",
)


def _labels_not_owned(labels: dict[str, str] | None) -> dict[str, str] | None:
    if labels and any(key in labels for key in OPERATOR_LABELS):
        raise ValueError(_OWNED_LABELS["message"])
    return labels


def _annotations_not_owned(annotations: dict[str, str] | None) -> dict[str, str] | None:
    if annotations and DELETION_COST_ANNOTATION in annotations:
        raise ValueError(_OWNED_ANNOTATIONS["message"])
    return annotations


Annotations = dict[str, Annotated[str, Field(max_length=65_536)]]


class PodMetadata(SpecModel):
    """Labels and annotations added to every worker pod."""

    labels: Annotated[
        dict[str, LabelValue] | None,
        Field(max_length=MAX_ENTRIES, json_schema_extra=cel_extra(_OWNED_LABELS)),
        AfterValidator(_labels_not_owned),
    ] = None
    """Extra pod labels (the operator's own win and cannot be set)."""
    annotations: Annotated[
        Annotations | None,
        Field(max_length=MAX_ENTRIES, json_schema_extra=cel_extra(_OWNED_ANNOTATIONS)),
        AfterValidator(_annotations_not_owned),
    ] = None
    """Extra pod annotations, e.g. for a service mesh or log shipper."""


class PodTemplate(SpecModel):
    """A subset of a PodTemplateSpec, merged onto the worker pod the operator builds."""

    metadata: PodMetadata = Field(default_factory=PodMetadata)
    """Labels and annotations of the worker pods."""
    spec: PodSpecOverrides = Field(default_factory=PodSpecOverrides)
    """Pod-level settings: scheduling, pull secrets, volumes, security context."""


class ServiceAccountSpec(SpecModel):
    """The worker ServiceAccount (<queue>-worker) the operator creates."""

    annotations: Annotations | None = Field(default=None, max_length=MAX_ENTRIES)
    """Annotations, e.g. eks.amazonaws.com/role-arn or iam.gke.io/gcp-service-account for
    cloud workload identity."""


def _int_or_percent(value: int | str) -> int | str:
    if isinstance(value, int):
        if value < 0:
            raise ValueError(_INT_OR_PERCENT["message"])
        return value
    if not value.endswith("%") or not value[:-1].isdigit() or not value[:-1].isascii():
        raise ValueError(_INT_OR_PERCENT["message"])
    return value


_INT_OR_PERCENT = cel(
    "type(self) == int ? self >= 0 : self.matches('^[0-9]+%$')",
    "must be a number of pods (0 or more) or a percentage such as 25%",
)
IntOrPercent = Annotated[
    int | str,
    Field(json_schema_extra={"x-kubernetes-int-or-string": True, **cel_extra(_INT_OR_PERCENT)}),
    AfterValidator(_int_or_percent),
]

_ONE_BUDGET = cel(
    "has(self.minAvailable) != has(self.maxUnavailable)",
    "podDisruptionBudget sets exactly one of minAvailable, maxUnavailable",
)


class DisruptionBudget(SpecModel):
    """A PodDisruptionBudget over the worker pods: how many a voluntary disruption
    (node drain, cluster upgrade) may evict at once. Evicted workers drain like any
    stopped worker; the budget keeps capacity while they do."""

    model_config = ConfigDict(json_schema_extra=cel_extra(_ONE_BUDGET))

    min_available: IntOrPercent | None = None
    """Pods (or a percentage) that must stay up."""
    max_unavailable: IntOrPercent | None = None
    """Pods (or a percentage) that may be down at once, e.g. 1."""

    @model_validator(mode="after")
    def _one(self) -> DisruptionBudget:
        if (self.min_available is None) == (self.max_unavailable is None):
            raise ValueError(_ONE_BUDGET["message"])
        return self
