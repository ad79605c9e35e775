"""The operator shows a Queue's pause, on a real control plane with a real PostgreSQL.

A queue is paused by its Queue's ``spec.paused``, by a pause in the job store
(``slotfleet pause``, ``App.pause``), or by both; its workers fetch only when neither is
in effect. The operator reports which in ``status.paused``, ``status.resumeAt``, the
``Paused`` condition and the ``Paused`` printer column, and does not scale a fleet up for
a backlog no worker would take.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from slotfleet.app import App
from slotfleet.models import QueuePause

from .fixtures import KubeAdmin
from .operator_helpers import (
    GROUP,
    PLURAL,
    VERSION,
    OperatorProcess,
    apply_queue,
    condition,
    create_secret,
    custom,
    email,
    get_queue,
    kubectl,
    queue_manifest,
    run,
    store_enqueue,
    wait_for,
)

pytestmark = [pytest.mark.kube, pytest.mark.timeout(180)]

UNTIL = datetime(2999, 1, 1, tzinfo=UTC)


async def _pause(dsn: str, queue: str) -> QueuePause:
    async with App(dsn) as app:
        return await app.pause(queue, until=UNTIL)


async def _resume(dsn: str, queue: str) -> bool:
    async with App(dsn) as app:
        return await app.resume(queue)


def patch_paused(admin: KubeAdmin, namespace: str, name: str, paused: bool) -> None:
    custom(admin).patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, name, {"spec": {"paused": paused}}
    )


def pause_state(admin: KubeAdmin, namespace: str, name: str) -> tuple[Any, Any, Any]:
    queue = get_queue(admin, namespace, name)
    status = queue.get("status") or {}
    cond = condition(queue, "Paused") or {}
    return status.get("paused"), status.get("resumeAt"), cond.get("reason")


def test_status_shows_the_spec_and_the_store_pause_and_a_paused_backlog_scales_nothing(
    kube_admin: KubeAdmin,
    namespace: str,
    operator: OperatorProcess,
    postgres_dsn: str,
) -> None:
    name = "pausing"
    create_secret(kube_admin, namespace, postgres_dsn)
    run(_pause(postgres_dsn, name))
    run(store_enqueue(postgres_dsn, [email(name, f"x{i}", 0.01) for i in range(3)]))
    scaling = {"mode": "operator", "minReplicas": 0, "maxReplicas": 2, "idleSeconds": 5}
    apply_queue(kube_admin, namespace, queue_manifest(name, replicas=0, autoscaling=scaling))

    def state(expected: tuple[Any, Any, Any]) -> bool:
        return pause_state(kube_admin, namespace, name) == expected

    wait_for(
        "the store's pause in the status",
        lambda: state((True, "2999-01-01T00:00:00Z", "PausedInStore")),
    )
    queue = get_queue(kube_admin, namespace, name)
    assert queue["status"]["pending"] == 3, "the backlog is shown"
    assert queue["status"]["desiredReplicas"] == 0, "but it is no demand while paused"
    assert queue["spec"]["replicas"] == 0
    out = kubectl(kube_admin, "get", "queues", "-n", namespace).stdout.splitlines()
    header, row = out[0].split(), out[1].split()
    assert dict(zip(header, row, strict=True))["PAUSED"] == "true"

    patch_paused(kube_admin, namespace, name, True)
    wait_for("both pauses", lambda: state((True, "2999-01-01T00:00:00Z", "PausedBySpecAndStore")))
    assert run(_resume(postgres_dsn, name)) is True
    wait_for("the spec's pause alone", lambda: state((True, "", "PausedBySpec")))
    assert get_queue(kube_admin, namespace, name)["spec"]["replicas"] == 0

    patch_paused(kube_admin, namespace, name, False)
    wait_for("no pause", lambda: state((False, "", "NotPaused")))
    wait_for(
        "the backlog to count again (scale from zero)",
        lambda: get_queue(kube_admin, namespace, name)["spec"]["replicas"] >= 1,
    )
