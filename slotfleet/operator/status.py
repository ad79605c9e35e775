"""Pure builders of a Queue's ``status``: conditions, slots, backlog, cancellations.

A worker container the kubelet cannot start (an image it cannot pull or may not pull, a
container that cannot be created or keeps crashing) becomes ``Degraded`` with the
kubelet's own reason and message (:func:`worker_problem`), so ``kubectl get queue`` says
why no worker runs instead of ``WorkersStarting`` for ever.

The operator's timer gathers what it observed (the worker Deployment, the store's
figures, cancel requests, errors) and :func:`build_status` turns it into the status
document; the handler writes it only when it differs from what is there, so a quiet
queue causes no writes (and no watch events for its workers).

What this module is not: it reads no clock (``now`` is passed in as RFC 3339 text) and
does no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from slotfleet.models import QueuedJob, QueueStats
from slotfleet.models.resource import MAX_CANCELLATIONS

Json = dict[str, Any]

READY = "Ready"
STORE_REACHABLE = "StoreReachable"
DEGRADED = "Degraded"
SCALING = "Scaling"
PAUSED = "Paused"

#: Reasons of the Paused condition that mean a pause in the job store is in effect.
_STORE_PAUSE_REASONS = frozenset({"PausedInStore", "PausedBySpecAndStore"})


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class ConditionUpdate:
    """One condition as the operator sees it now."""

    type: str
    status: bool | None
    """True, False, or None for Unknown."""
    reason: str
    message: str = ""

    @property
    def status_text(self) -> str:
        return {True: "True", False: "False", None: "Unknown"}[self.status]


def set_condition(
    conditions: Sequence[Mapping[str, Any]],
    update: ConditionUpdate,
    *,
    generation: int,
    now: str,
) -> list[Json]:
    """``conditions`` with ``update`` applied; ``lastTransitionTime`` changes only when
    the status does."""
    result: list[Json] = []
    found = False
    for existing in conditions:
        if existing.get("type") != update.type:
            result.append(dict(existing))
            continue
        found = True
        changed = existing.get("status") != update.status_text
        result.append(
            _condition(
                update, generation, now if changed else existing.get("lastTransitionTime", now)
            )
        )
    if not found:
        result.append(_condition(update, generation, now))
    return result


def _condition(update: ConditionUpdate, generation: int, when: str) -> Json:
    return {
        "type": update.type,
        "status": update.status_text,
        "reason": update.reason,
        "message": update.message,
        "lastTransitionTime": when,
        "observedGeneration": generation,
    }


def remove_condition(conditions: Sequence[Mapping[str, Any]], kind: str) -> list[Json]:
    return [dict(c) for c in conditions if c.get("type") != kind]


def condition_status(conditions: Iterable[Mapping[str, Any]], kind: str) -> str | None:
    for condition in conditions:
        if condition.get("type") == kind:
            status = condition.get("status")
            return str(status) if status is not None else None
    return None


def cancellation_entries(jobs: Sequence[QueuedJob]) -> list[Json]:
    """Running jobs with a cancel request, newest request first, at most
    :data:`MAX_CANCELLATIONS`. A job that stopped running (cancelled, or finished
    before its worker saw the request) is simply not among ``jobs`` any more.

    Newest first because an entry stays while its job runs: jobs that ignore their
    cancel (a thread that never checks its token) would otherwise hold every place,
    oldest first, and starve each newer request. An older request pushed out has been
    listed already, so its worker has seen it; listing it again would change nothing
    for a job that ignores it."""
    oldest = datetime.min.replace(tzinfo=UTC)
    ordered = sorted(jobs, key=lambda j: (j.cancel_requested_at or oldest, j.id), reverse=True)
    return [
        {
            "job": int(job.id),
            "requestedAt": rfc3339(job.cancel_requested_at) if job.cancel_requested_at else "",
        }
        for job in ordered[:MAX_CANCELLATIONS]
    ]


@dataclass(frozen=True, slots=True)
class Observed:
    """Everything one reconcile tick saw, for :func:`build_status`."""

    generation: int
    """The Queue's ``metadata.generation``."""
    applied_generation: int | None
    """The generation whose children were last applied, if known."""
    spec_replicas: int
    deployment: Mapping[str, Any] | None
    selector: str
    stats: QueueStats | None
    """``None`` when the store could not be read."""
    cancellations: Sequence[QueuedJob] | None
    """``None`` when the store could not be read (the previous entries are kept)."""
    conditions: Sequence[ConditionUpdate]
    drop_conditions: Sequence[str] = ()
    desired_replicas: int | None = None
    last_scale_time: str | None = None
    pause: PauseView | None = None
    """Whether the queue is paused, and why (its condition is among ``conditions``)."""
    retiring: Sequence[Json] | None = None
    """``status.retiring`` (``slotfleet.operator.retiring``); ``None`` keeps the previous."""


@dataclass(frozen=True, slots=True)
class PauseView:
    """Whether a Queue's workers fetch nothing now, and why (see :func:`pause_view`)."""

    paused: bool
    resume_at: str
    """When the job store's pause ends by itself (RFC 3339), or ``""``."""
    condition: ConditionUpdate


def pause_view(
    spec_paused: bool, stats: QueueStats | None, previous: Mapping[str, Any], queue: str
) -> PauseView:
    """Both switches of a queue, combined as the workers combine them: it is paused when
    ``spec.paused`` is true *or* a pause in the job store (``slotfleet pause``) is in
    effect. Without the store's figures the store's part of the previous status stands."""
    if stats is not None:
        in_store = stats.paused
        resume_at = rfc3339(stats.resume_at) if stats.paused and stats.resume_at else ""
    else:
        old = [c for c in previous.get("conditions") or [] if c.get("type") == PAUSED]
        in_store = bool(old) and old[0].get("reason") in _STORE_PAUSE_REASONS
        resume_at = str(previous.get("resumeAt") or "") if in_store else ""
    until = f"until {resume_at}" if resume_at else f"until 'slotfleet resume {queue}'"
    if spec_paused and in_store:
        condition = ConditionUpdate(
            PAUSED,
            True,
            "PausedBySpecAndStore",
            f"spec.paused is true, and the queue is paused in the job store {until}",
        )
    elif spec_paused:
        condition = ConditionUpdate(PAUSED, True, "PausedBySpec", "spec.paused is true")
    elif in_store:
        condition = ConditionUpdate(
            PAUSED, True, "PausedInStore", f"paused in the job store {until}"
        )
    else:
        condition = ConditionUpdate(PAUSED, False, "NotPaused", "")
    return PauseView(spec_paused or in_store, resume_at, condition)


def build_status(previous: Mapping[str, Any], seen: Observed, *, now: str) -> Json:
    """The new ``status`` from the previous one and what was observed."""
    deployment_status = (seen.deployment or {}).get("status") or {}
    status: Json = {
        "observedGeneration": (
            seen.applied_generation
            if seen.applied_generation is not None
            else int(previous.get("observedGeneration", 0))
        ),
        "replicas": int(deployment_status.get("replicas", 0) or 0),
        "readyReplicas": int(deployment_status.get("readyReplicas", 0) or 0),
        "selector": seen.selector,
    }
    if seen.stats is not None:
        status["slots"] = {
            "total": seen.stats.slots_total,
            "busy": seen.stats.slots_busy,
            "free": seen.stats.slots_free,
        }
        status["pending"] = seen.stats.ready
    else:
        status["slots"] = dict(previous.get("slots") or {"total": 0, "busy": 0, "free": 0})
        status["pending"] = int(previous.get("pending", 0))
    status["desiredReplicas"] = (
        seen.desired_replicas
        if seen.desired_replicas is not None
        else int(previous.get("desiredReplicas", 0))
    )
    status["lastScaleTime"] = seen.last_scale_time or str(previous.get("lastScaleTime", ""))
    if seen.pause is not None:
        status["paused"] = seen.pause.paused
        status["resumeAt"] = seen.pause.resume_at
    status["cancellations"] = (
        cancellation_entries(seen.cancellations)
        if seen.cancellations is not None
        else list(previous.get("cancellations") or [])
    )
    status["retiring"] = (
        list(seen.retiring) if seen.retiring is not None else list(previous.get("retiring") or [])
    )
    conditions: list[Json] = [dict(c) for c in previous.get("conditions") or []]
    for kind in seen.drop_conditions:
        conditions = remove_condition(conditions, kind)
    for update in seen.conditions:
        conditions = set_condition(conditions, update, generation=seen.generation, now=now)
    status["conditions"] = conditions
    return status


#: Container waiting reasons (the kubelet's words) that mean the image cannot be used.
IMAGE_REASONS = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "ErrImageNeverPull",
        "InvalidImageName",
        "ImageInspectError",
        "RegistryUnavailable",
        "SignatureValidationFailed",
    }
)
#: Waiting reasons that mean a container cannot be created or keeps failing.
START_REASONS = frozenset(
    {
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
        "CrashLoopBackOff",
        "PreStartHookError",
        "PostStartHookError",
    }
)
#: Longest kubelet message quoted in a condition.
MAX_MESSAGE = 300


def _one_line(text: str) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= MAX_MESSAGE else flat[: MAX_MESSAGE - 3] + "..."


def worker_problem(pods: Sequence[Mapping[str, Any]]) -> ConditionUpdate | None:
    """``Degraded`` when a live worker pod has a container the kubelet cannot start:
    ``ImageUnusable`` for an image it cannot pull or may not pull, ``WorkersFailing`` for
    one it cannot create or that keeps crashing; the message names how many pods, the
    first of them (by name), the image and the kubelet's reason and message. ``None``
    when every container is running or on its way."""
    found: list[tuple[str, str, Mapping[str, Any], Mapping[str, Any]]] = []
    for pod in sorted(pods, key=lambda p: str((p.get("metadata") or {}).get("name", ""))):
        metadata = pod.get("metadata") or {}
        if metadata.get("deletionTimestamp"):
            continue
        status = pod.get("status") or {}
        containers = [
            *(status.get("initContainerStatuses") or []),
            *(status.get("containerStatuses") or []),
        ]
        for container in containers:
            waiting = (container.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in IMAGE_REASONS | START_REASONS:
                found.append((str(metadata.get("name", "")), waiting["reason"], container, waiting))
                break
    if not found:
        return None
    pod_name, reason, container, waiting = found[0]
    where = (
        f"worker pod {pod_name}"
        if len(found) == 1
        else (f"{len(found)} worker pods (first: {pod_name})")
    )
    detail = _one_line(waiting.get("message") or "")
    if reason in IMAGE_REASONS:
        return ConditionUpdate(
            DEGRADED,
            True,
            "ImageUnusable",
            f"{where}: image {container.get('image', '')!r} cannot be used ({reason})"
            + (f": {detail}" if detail else ""),
        )
    return ConditionUpdate(
        DEGRADED,
        True,
        "WorkersFailing",
        f"{where}: container {container.get('name', '')!r} cannot run ({reason})"
        + (f": {detail}" if detail else ""),
    )


def ready_condition(
    *,
    degraded: ConditionUpdate | None,
    store_ok: bool | None,
    ready: int,
    wanted: int,
    deployed: bool = True,
) -> ConditionUpdate:
    """Ready: not degraded, the store reachable, the worker Deployment in place
    (``deployed``) and every wanted worker ready."""
    if degraded is not None and degraded.status:
        return ConditionUpdate(READY, False, degraded.reason, degraded.message)
    if store_ok is False:
        return ConditionUpdate(READY, False, "StoreUnreachable", "the job store cannot be reached")
    if not deployed:
        return ConditionUpdate(
            READY, False, "Configuring", "the worker Deployment is not created yet"
        )
    if ready < wanted:
        return ConditionUpdate(
            READY, False, "WorkersStarting", f"{ready} of {wanted} workers ready"
        )
    if wanted == 0:
        return ConditionUpdate(READY, True, "ScaledToZero", "no workers wanted now")
    return ConditionUpdate(READY, True, "WorkersReady", f"{ready} of {wanted} workers ready")


def status_changed(previous: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Whether writing ``new`` would change anything (ignoring fields not written)."""
    return any(previous.get(key) != value for key, value in new.items())
