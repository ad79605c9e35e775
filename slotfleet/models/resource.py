"""The ``Queue`` custom resource (``slotfleet.dev/v1alpha1``) as pydantic models.

These models are the one source of truth for the CRD: ``slotfleet crds`` turns them into
the structural OpenAPI schema in ``crds/`` and the chart, and CI fails when the files
drift. Field docstrings become the schema's descriptions, so ``kubectl explain queue.spec``
shows them. Cross-field rules that the API server can check are written as CEL
(``x-kubernetes-validations``) beside the model they constrain; what it cannot check
(a Secret that does not exist, an unreachable database) the operator reports as
conditions.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    model_validator,
)
from pydantic.alias_generators import to_camel

from slotfleet.models.container import EnvFromSource, EnvVar, Resources, VolumeMount
from slotfleet.models.pod import DisruptionBudget, PodTemplate, ServiceAccountSpec
from slotfleet.models.queues import (
    Concurrency,
    ExecutorKind,
    FunctionPolicy,
    PollingInterval,
    RateLimit,
)
from slotfleet.models.rules import (
    ImageRef,
    KeyName,
    ModuleName,
    ObjectName,
    OwnedFields,
    SpecModel,
    cel,
    cel_extra,
)

GROUP = "slotfleet.dev"
VERSION = "v1alpha1"
KIND = "Queue"
PLURAL = "queues"
SINGULAR = "queue"
SHORT_NAMES = ("sfq",)


# Cross-field rules, written once: as CEL for the API server (x-kubernetes-validations)
# and checked again by the models' validators for what runs without an API server
# (``slotfleet fleet -f queue.yaml``), with the same message.
MIN_LE_MAX = cel(
    "self.minReplicas <= self.maxReplicas",
    "autoscaling.minReplicas must not exceed autoscaling.maxReplicas",
)
REPLICAS_LE_MAX = cel(
    "!has(self.replicas) || !has(self.autoscaling) || "
    "self.autoscaling.mode != 'operator' || "
    "self.replicas <= self.autoscaling.maxReplicas",
    "replicas must not exceed autoscaling.maxReplicas",
)
#: YAML 1.1 (kubectl's and PyYAML's) reads an unquoted ``off`` (or ``on``) as a boolean.
#: The models say so. The API server cannot: its type check ("must be of type string")
#: runs before, and blocks, every CEL rule, and CEL cannot see a field without a type
#: (docs/decisions.md), so the schema keeps the enum and the examples quote "off".
MODE_QUOTED_MESSAGE = (
    'autoscaling.mode must be a string: quote it, as in mode: "off" (YAML reads an '
    "unquoted off or on as a boolean)"
)
#: Container fields a user may try on the Queue's spec: the operator owns the container.
OWNED_SPEC_FIELDS = OwnedFields(
    {
        "command": "workers run slotfleet worker with this Queue's settings; name your task "
        "modules in imports and set executor, env and the rest of the spec",
        "args": "workers run slotfleet worker with this Queue's settings; name your task "
        "modules in imports and set executor, env and the rest of the spec",
        "livenessProbe": "it probes the worker's /healthz on metricsPort",
        "readinessProbe": "it probes the worker's /readyz on metricsPort",
        "securityContext": "workers never run as root, drop every capability and have a "
        "read-only root; set their user and groups in template.spec.securityContext",
    }
)
VOLUME_MOUNTS_EXIST = cel(
    "!has(self.volumeMounts) || self.volumeMounts.all(m, has(self.template) && "
    "has(self.template.spec) && has(self.template.spec.volumes) && "
    "self.template.spec.volumes.exists(v, v.name == m.name))",
    "volumeMounts: every name must be a volume of template.spec.volumes",
    field_path=".volumeMounts",
)


#: ``retentionSeconds``: how often the operator (or a local fleet) deletes a queue's old
#: finished jobs (``slotfleet.control.Retention``).
RETENTION_CHECK_SECONDS = 60.0

#: Most entries in a Queue's ``status.cancellations``: the status is one object in etcd,
#: read by every worker pod of the Queue on each change.
MAX_CANCELLATIONS = 100
#: Pods one round of a scale-down retires at most (``status.retiring``); a larger step
#: goes in rounds, so the status stays small.
MAX_RETIRING = 100


class SecretKeyRef(SpecModel):
    """A key of a Secret in the Queue's namespace."""

    name: ObjectName
    """Name of the Secret."""
    key: KeyName = "dsn"
    """Key within the Secret whose value is used."""


class StoreSpec(SpecModel):
    """Where the queue's jobs live. The DSN is only ever read from a Secret."""

    secret_ref: SecretKeyRef = Field()
    """Secret key holding the DSN, for example postgresql://user:pass@host:5432/db."""


class ExecutorSpec(SpecModel):
    """How each worker runs jobs."""

    kind: ExecutorKind = ExecutorKind.ASYNC
    """async (coroutines), threads (a thread pool) or processes (a pool of child processes)."""
    concurrency: Concurrency = 10
    """Slots per worker pod: jobs one pod runs at once."""


class AutoscalingMode(StrEnum):
    OPERATOR = "operator"
    HPA = "hpa"
    OFF = "off"


def _quoted_mode(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError(MODE_QUOTED_MESSAGE)
    return value


class AutoscalingSpec(SpecModel):
    """How the fleet follows demand. Desired pods =
    ceil((busy + ready pending) / (concurrency * targetUtilization)), clamped."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [MIN_LE_MAX],
        }
    )

    mode: Annotated[AutoscalingMode, BeforeValidator(_quoted_mode)] = AutoscalingMode.OPERATOR
    """operator: the operator sizes the fleet; hpa: an HPA does, on the queue's demand,
    busy pods and busy-slot ratio (needs prometheus-adapter); off: spec.replicas is left
    to you (kubectl scale). Quote off in YAML ("off"): unquoted it reads as false."""
    min_replicas: Annotated[int, Field(ge=0, le=1000)] = 0
    """Fewest worker pods. 0 allows scale to zero: after idleSeconds in operator mode,
    after scaleDownStabilizationSeconds in hpa mode (Kubernetes >= 1.37, or the
    HPAScaleToZero feature gate)."""
    max_replicas: Annotated[int, Field(ge=1, le=1000)] = 10
    """Most worker pods."""
    target_utilization: Annotated[float, Field(gt=0, le=1)] = 0.8
    """Fraction of slots meant to be busy; lower keeps headroom for bursts."""
    scale_down_stabilization_seconds: Annotated[int, Field(ge=0, le=3600)] = 60
    """Scale down only to the highest desire seen within this window (no flapping)."""
    idle_seconds: Annotated[int, Field(ge=0, le=86_400)] = 300
    """Operator mode with minReplicas 0: seconds with nothing pending or running before
    scaling to zero."""
    max_scale_up_step: Annotated[int, Field(ge=1, le=1000)] | None = None
    """Most pods added in one step; unset means no limit."""
    max_scale_down_step: Annotated[int, Field(ge=1, le=1000)] | None = None
    """Most pods removed in one step; unset means no limit."""

    @model_validator(mode="after")
    def _cross_field(self) -> AutoscalingSpec:
        if self.min_replicas > self.max_replicas:
            raise ValueError(MIN_LE_MAX["message"])
        return self


def initial_replicas(scaling: AutoscalingSpec) -> int:
    """Workers a Queue starts with when its spec does not say: ``minReplicas`` when an
    autoscaler (the operator's or an HPA) sizes it, so an idle new queue starts no
    worker; one with ``mode: off``."""
    return 1 if scaling.mode is AutoscalingMode.OFF else scaling.min_replicas


def _initial_replicas(data: dict[str, Any]) -> int:
    scaling = data.get("autoscaling")
    return initial_replicas(scaling) if isinstance(scaling, AutoscalingSpec) else 1


class QueueSpec(SpecModel):
    """The desired state of a queue's worker fleet."""

    model_config = ConfigDict(
        json_schema_extra=cel_extra(REPLICAS_LE_MAX, VOLUME_MOUNTS_EXIST, *OWNED_SPEC_FIELDS.cel())
    )

    image: ImageRef = "ghcr.io/slotfleet/slotfleet:0.1.0"
    """Container image of the worker pods: the slotfleet image plus your task code, e.g.
    an image built FROM it (see examples/Dockerfile)."""
    image_pull_policy: Annotated[
        Literal["Always", "IfNotPresent", "Never"], Field(alias="imagePullPolicy")
    ] = "IfNotPresent"
    """Always, IfNotPresent or Never."""
    imports: list[ModuleName] = Field(default_factory=list, max_length=64)
    """Python modules the worker imports at start (your task modules, e.g. myapp.tasks)."""
    functions: FunctionPolicy = FunctionPolicy.REGISTERED
    """Which functions the workers run: registered (only functions decorated with @job,
    the default) or any (any importable callable a job names, as Chancy does)."""
    queue_name: (
        Annotated[
            str,
            Field(
                min_length=1,
                max_length=63,
                pattern=r"^[a-z0-9]([-a-z0-9_.]*[a-z0-9])?$",
            ),
        ]
        | None
    ) = None
    """Name of the queue jobs are enqueued to; defaults to the resource's name."""
    executor: ExecutorSpec = Field(default_factory=ExecutorSpec)
    """Executor kind and slots per pod."""
    store: StoreSpec
    """The job store shared by the fleet."""
    autoscaling: AutoscalingSpec = Field(default_factory=AutoscalingSpec)
    """How the fleet follows demand."""
    replicas: Annotated[int, Field(ge=0, le=1000)] = Field(default_factory=_initial_replicas)
    """Worker pods wanted; the /scale subresource target (kubectl scale, an HPA or the
    operator). Unset, the operator sets it: minReplicas when an autoscaler sizes the
    fleet (a new idle queue starts no worker), 1 with autoscaling.mode off."""
    env: list[EnvVar] = Field(
        default_factory=list,
        max_length=256,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    """Environment variables of the worker container (value, or valueFrom a Secret,
    ConfigMap or pod field), after the operator's own."""
    env_from: list[EnvFromSource] = Field(default_factory=list, max_length=32)
    """Secrets or ConfigMaps whose keys become environment variables (env wins)."""
    resources: Resources | None = None
    """Requests and limits of the worker container, as in a pod spec."""
    volume_mounts: list[VolumeMount] = Field(default_factory=list, max_length=32)
    """Volumes of template.spec.volumes mounted into the worker container."""
    template: PodTemplate | None = None
    """Pod labels, annotations and pod-level settings (scheduling, pull secrets, volumes,
    security context) merged onto the worker pod the operator builds."""
    service_account: ServiceAccountSpec | None = None
    """The worker ServiceAccount's annotations (cloud workload identity)."""
    pod_disruption_budget: DisruptionBudget | None = None
    """A PodDisruptionBudget over the worker pods; unset: none."""
    polling_interval: PollingInterval = 1.0
    """Seconds between fetches when nothing wakes a worker earlier."""
    rate_limit: RateLimit | None = Field(default=None)
    """Job starts allowed per window across the whole fleet."""
    paused: bool = False
    """Stop fetching new jobs; running jobs finish. Separate from a pause in the job store
    (slotfleet pause): the workers fetch only when neither is in effect."""
    drain_timeout_seconds: Annotated[int, Field(ge=1, le=86_400)] = 60
    """Seconds a stopping worker lets running jobs finish before handing them back."""
    retention_seconds: Annotated[int, Field(ge=1, le=315_360_000)] | None = None
    """Delete the queue's finished jobs (succeeded, failed, cancelled) this many seconds
    after they finished; the operator (or ``slotfleet fleet``) checks about once a
    minute. Unset: kept until ``slotfleet purge``."""
    lease_seconds: Annotated[int, Field(ge=2, le=3600)] = 15
    """Seconds a running job's lease lasts. Heartbeats renew it (every third of it, at
    most every 10 s); a worker that dies without draining (killed, node lost) has its
    jobs run again about this long after its last heartbeat."""
    metrics_port: Annotated[int, Field(ge=1024, le=65535)] = 9464
    """Container port of the workers' /metrics, /healthz and /readyz."""
    metrics_service: bool = Field(default=True)
    """Create a headless Service selecting the worker pods' metrics port."""
    pod_monitor: bool = Field(default=False)
    """Create a Prometheus Operator PodMonitor (needs its CRD installed)."""

    # Typed (a CEL rule cannot see an untyped field), present only to be refused.
    command: list[str] | None = Field(default=None, max_length=64)
    """Refused: the operator sets the worker's command."""
    args: list[str] | None = Field(default=None, max_length=64)
    """Refused: the operator sets the worker's arguments."""
    liveness_probe: dict[str, Any] | None = None
    """Refused: the operator sets the probes."""
    readiness_probe: dict[str, Any] | None = None
    """Refused: the operator sets the probes."""
    security_context: dict[str, Any] | None = None
    """Refused: the operator's floor; see template.spec.securityContext."""

    @model_validator(mode="after")
    def _cross_field(self) -> QueueSpec:
        OWNED_SPEC_FIELDS.check(self)
        scaling = self.autoscaling
        if scaling.mode is AutoscalingMode.OPERATOR and self.replicas > scaling.max_replicas:
            raise ValueError(REPLICAS_LE_MAX["message"])
        volumes = self.template.spec.volumes or [] if self.template else []
        names = {volume.name for volume in volumes}
        if any(mount.name not in names for mount in self.volume_mounts):
            raise ValueError(VOLUME_MOUNTS_EXIST["message"])
        return self

    def effective_queue_name(self, resource_name: str) -> str:
        return self.queue_name or resource_name


class Condition(BaseModel):
    """A standard Kubernetes condition."""

    model_config = ConfigDict(
        populate_by_name=True, use_attribute_docstrings=True, alias_generator=to_camel
    )

    type: str
    """Ready, StoreReachable, Degraded, Scaling or Paused."""
    status: str
    """True, False or Unknown."""
    reason: str = ""
    """One CamelCase word."""
    message: str = ""
    """What happened, for a person."""
    last_transition_time: str = Field(default="")
    """When status last changed (RFC 3339)."""
    observed_generation: int = Field(default=0)
    """The spec generation this condition is about."""


class SlotsStatus(BaseModel):
    """Slots of the fleet's live workers, from their heartbeats."""

    model_config = ConfigDict(
        populate_by_name=True, use_attribute_docstrings=True, alias_generator=to_camel
    )

    total: int = 0
    """All slots."""
    busy: int = 0
    """Slots running a job."""
    free: int = 0
    """Slots idle."""


class CancellationEntry(BaseModel):
    """A running job whose cancellation was requested; its worker stops it."""

    model_config = ConfigDict(
        populate_by_name=True, use_attribute_docstrings=True, alias_generator=to_camel
    )

    job: int
    """Job id."""
    requested_at: str = Field(default="")
    """When the cancel was requested (RFC 3339)."""


class RetiringPod(BaseModel):
    """A worker pod chosen for removal: it claims no new job, and ``spec.replicas`` drops
    once it has confirmed that through the job store (docs/operations.md, "Scale-down")."""

    model_config = ConfigDict(
        populate_by_name=True, use_attribute_docstrings=True, alias_generator=to_camel
    )

    pod: str
    """The pod's name (its worker id)."""
    since: str
    """When the operator marked it (RFC 3339, microseconds); its worker echoes this text in
    its heartbeat to confirm that it claims nothing more."""
    final: bool = False
    """``spec.replicas`` no longer counts it: the pod goes (the operator deletes it if the
    ReplicaSet controller did not), and its mark stays until the pod is gone, whatever
    the fleet wants meanwhile."""


class QueueStatus(BaseModel):
    """What the operator observed."""

    model_config = ConfigDict(
        populate_by_name=True, use_attribute_docstrings=True, alias_generator=to_camel
    )

    observed_generation: int = Field(default=0)
    """The spec generation last reconciled."""
    replicas: int = 0
    """Worker pods that exist (the /scale status)."""
    ready_replicas: int = Field(default=0)
    """Worker pods ready."""
    selector: str = ""
    """Label selector of the worker pods (for /scale and HPAs)."""
    slots: SlotsStatus = Field(default_factory=SlotsStatus)
    """Slots across live workers."""
    pending: int = 0
    """Jobs ready to run and waiting for a slot."""
    desired_replicas: int = Field(default=0)
    """What the autoscaler last asked for."""
    last_scale_time: str = Field(default="")
    """When the autoscaler last changed replicas (RFC 3339)."""
    paused: bool = False
    """Whether the workers fetch nothing now: spec.paused, a pause in the job store
    (slotfleet pause), or both (the Paused condition says which)."""
    resume_at: str = Field(default="")
    """When the job store's pause ends by itself (RFC 3339); empty when it has no end
    time or none is in effect."""
    cancellations: list[CancellationEntry] = Field(
        default_factory=list, max_length=MAX_CANCELLATIONS
    )
    """Running jobs to cancel: the newest requests, at most ``MAX_CANCELLATIONS``."""
    retiring: list[RetiringPod] = Field(default_factory=list, max_length=MAX_RETIRING)
    """Worker pods chosen for the next scale-down (``autoscaling.mode: operator``): they
    stop claiming jobs first, and the fleet shrinks once they have confirmed."""
    conditions: list[Condition] = Field(default_factory=list)
    """Ready, StoreReachable, Degraded, Scaling, Paused."""
