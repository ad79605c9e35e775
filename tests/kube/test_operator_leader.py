"""Two operator replicas on the real control plane: one leads through a Lease, a killed
leader is replaced within the lease duration, a stopped one hands over at once, and the
fleet is never sized by two writers.

The operators are real ``slotfleet operator --leader-elect`` processes (short leases:
6 s, so a renewal every 2 s and a leader giving up after 4 s; 4 s was seen lost to a
slow API server on a loaded machine); the job store is a
real PostgreSQL database. Jobs are long (60 s) and the scale-down window longer than the
test, so the backlog alone sizes the fleet: 2-slot pods, target 1.0, so N queued jobs
want ceil(N / 2) replicas, and each wave of jobs asks for one scale-up. Worker pods need
not run (``spec.replicas`` is what the operator writes; the Deployment follows it).

What the API server holds is what is checked, recorded by watches while the test runs:
every value ``spec.replicas`` took, every Lease record, and the ``Scaled`` Events, each
naming the replica that wrote it (``reportingInstance``, the Lease holder's identity).
"""

from __future__ import annotations

import asyncio
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, watch

from slotfleet.operator.election import ElectionOptions, LeaseElector
from slotfleet.operator.kube import KubeClient
from slotfleet.operator.leader import ElectionTimings

from .fixtures import KubeAdmin, api_client_for
from .operator_helpers import (
    GROUP,
    PLURAL,
    VERSION,
    OperatorProcess,
    apply_queue,
    create_secret,
    email,
    queue_manifest,
    run,
    spec_replicas,
    store_enqueue,
    wait_for,
)

pytestmark = [pytest.mark.kube, pytest.mark.timeout(180)]

LEASE = "slotfleet-operator"
LEASE_SECONDS = 6.0


class Recorder:
    """Every version of the objects a list call returns, from a watch in a thread."""

    def __init__(self, list_fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self.seen: list[tuple[float, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(list_fn, args, kwargs), daemon=True)
        self._thread.start()

    def _run(self, list_fn: Callable[..., Any], args: Any, kwargs: Any) -> None:
        version: str | None = None
        while not self._stop.is_set():
            stream = watch.Watch()  # type: ignore[no-untyped-call]
            extra = {"resource_version": version} if version else {}
            events = stream.stream(  # type: ignore[no-untyped-call]
                list_fn, *args, timeout_seconds=2, **kwargs, **extra
            )
            for event in events:
                obj = event["object"]
                if isinstance(obj, dict):
                    version = obj["metadata"]["resourceVersion"]
                else:
                    version = obj.metadata.resource_version
                self.seen.append((time.monotonic(), obj))
                if self._stop.is_set():
                    break

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def lease_holders(recorder: Recorder) -> list[tuple[float, str, int]]:
    """(time seen, holder, transitions) each time the Lease's holder changed."""
    history: list[tuple[float, str, int]] = []
    for at, lease in recorder.seen:
        if lease.metadata.name != LEASE:
            continue
        holder = lease.spec.holder_identity or ""
        if not history or history[-1][1] != holder:
            history.append((at, holder, lease.spec.lease_transitions or 0))
    return history


def replicas_history(recorder: Recorder) -> list[int]:
    values: list[int] = []
    for _, queue in recorder.seen:
        value = int(queue["spec"].get("replicas", 0))
        if not values or values[-1] != value:
            values.append(value)
    return values


@dataclass(frozen=True)
class Scaled:
    writer: str
    old: int
    new: int


def scaled_events(admin: KubeAdmin, namespace: str) -> list[Scaled]:
    events = client.CoreV1Api(admin.api_client).list_namespaced_event(namespace).items
    found = []
    for event in events:
        if event.reason not in ("Scaled", "ScaleReverted"):
            continue
        match = re.match(r"replicas (\d+) -> (\d+)", event.message or "")
        assert match, event.message
        assert event.reason == "Scaled", f"two writers fought: {event.message}"
        found.append(Scaled(str(event.reporting_instance), int(match[1]), int(match[2])))
    return found


def holder(admin: KubeAdmin, namespace: str) -> str:
    api = client.CoordinationV1Api(admin.api_client)
    try:
        lease = api.read_namespaced_lease(LEASE, namespace)
    except client.ApiException as exc:
        if exc.status == 404:
            return ""
        raise
    return str(lease.spec.holder_identity or "") if lease.spec else ""


def waiting(op: OperatorProcess) -> bool:
    return "waiting to lead" in op.log.read_text(errors="replace")


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def replicas(
    kube_admin: KubeAdmin, namespace: str, queue_crd: str, tmp_path: Path
) -> Iterator[Callable[[str], OperatorProcess]]:
    """Start operator replicas by pod name; every one is stopped (by PID) afterwards."""
    started: list[OperatorProcess] = []

    def start(pod: str) -> OperatorProcess:
        op = OperatorProcess(
            kube_admin,
            namespace,
            tmp_path / f"{pod}.log",
            extra_args=("--leader-elect", "--lease-duration", f"{LEASE_SECONDS:g}"),
            env={"POD_NAME": pod},
        )
        op.start()
        started.append(op)
        return op

    try:
        yield start
    finally:
        for op in started:
            if op.proc is not None and op.proc.poll() is None:
                op.proc.send_signal(signal.SIGCONT)  # one the test froze
            op.stop()


def test_a_killed_leader_is_replaced_and_a_stopped_one_hands_over_without_double_scaling(
    kube_admin: KubeAdmin,
    namespace: str,
    replicas: Callable[[str], OperatorProcess],
    postgres_dsn: str,
) -> None:
    name = "burst"
    create_secret(kube_admin, namespace, postgres_dsn)
    leases = Recorder(
        client.CoordinationV1Api(kube_admin.api_client).list_namespaced_lease, namespace
    )
    queues = Recorder(
        client.CustomObjectsApi(kube_admin.api_client).list_namespaced_custom_object,
        GROUP,
        VERSION,
        namespace,
        PLURAL,
    )
    ops: dict[str, OperatorProcess] = {}

    def leading(excluding: tuple[str, ...] = ("",)) -> tuple[str, OperatorProcess] | None:
        found = holder(kube_admin, namespace)
        if found in excluding:
            return None
        return found, ops[found.rpartition("_")[0]]

    try:
        for pod in ("op-1", "op-2", "op-3", "op-4"):  # together: their start-ups overlap
            ops[pod] = replicas(pod)
        a, op_a = wait_for("a leader", leading, 60, 0.1)
        manifest = queue_manifest(
            name,
            replicas=1,
            executor={"kind": "async", "concurrency": 2},
            autoscaling={
                "mode": "operator",
                "minReplicas": 1,
                "maxReplicas": 8,
                "targetUtilization": 1.0,
                "scaleDownStabilizationSeconds": 600,
            },
        )
        apply_queue(kube_admin, namespace, manifest)

        def wave(count: int, replicas_wanted: int) -> None:
            """Queue ``count`` more jobs; wait for the size they want and for its Event
            (posted in the background: the leader is stopped only once it is out)."""
            run(store_enqueue(postgres_dsn, [email(name, f"j{i}", 60.0) for i in range(count)]))
            wait_for(
                f"spec.replicas {replicas_wanted}",
                lambda: spec_replicas(kube_admin, namespace, name) == replicas_wanted,
                30,
                0.1,
            )
            wait_for(
                f"the Scaled Event to {replicas_wanted}",
                lambda: any(e.new == replicas_wanted for e in scaled_events(kube_admin, namespace)),
                10,
                0.1,
            )

        wave(4, 2)  # 4 jobs on 2-slot pods: 2 replicas, by the first leader
        for follower in ops.values():
            if follower is not op_a:
                wait_for(f"{follower.log.stem} waiting", partial(waiting, follower), 60, 0.1)

        # SIGKILL the leader mid-burst: the next wave is sized by a follower once the
        # killed leader's lease runs out
        proc = op_a.proc
        assert proc is not None
        proc.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        wave(4, 4)
        b, op_b = wait_for("a new leader", lambda: leading(("", a)), 1, 0.1)
        took_over = next(at for at, who, _ in lease_holders(leases) if who == b) - killed_at
        # a lease duration after the follower last saw a's renewal, plus one retry period
        assert took_over < LEASE_SECONDS + LEASE_SECONDS / 3 + 1.0

        # SIGTERM the leader: it stops writing, releases the Lease, another leads at once
        assert op_b.proc is not None
        op_b.proc.send_signal(signal.SIGTERM)
        stopped_at = time.monotonic()
        c, op_c = wait_for("a leader after b", lambda: leading(("", b)), LEASE_SECONDS, 0.05)
        handed_over = time.monotonic() - stopped_at
        assert op_b.proc.wait(timeout=10) == 0
        wave(2, 5)  # and the new leader sizes the fleet

        # SIGSTOP the leader (a frozen process, a paused VM): the last follower takes
        # over; when the frozen one wakes, past its deadline, it writes nothing, exits 1
        assert op_c.proc is not None
        op_c.proc.send_signal(signal.SIGSTOP)
        d, _ = wait_for("a leader after c", lambda: leading(("", c)), 2 * LEASE_SECONDS, 0.1)
        wave(2, 6)
        op_c.proc.send_signal(signal.SIGCONT)
        assert op_c.proc.wait(timeout=10) == 1
        assert "lost the Lease" in op_c.log.read_text()
    finally:
        leases.stop()
        queues.stop()

    history = lease_holders(leases)
    assert [(who, n) for _, who, n in history] == [(a, 0), (b, 1), ("", 1), (c, 2), (d, 3)]
    assert replicas_history(queues) == [1, 2, 4, 5, 6]
    events = sorted(scaled_events(kube_admin, namespace), key=lambda e: e.old)
    assert events == [Scaled(a, 1, 2), Scaled(b, 2, 4), Scaled(c, 4, 5), Scaled(d, 5, 6)]
    print(f"takeover after SIGKILL: {took_over:.1f}s; handover after SIGTERM: {handed_over:.1f}s")


def test_two_candidates_racing_for_one_lease_never_both_win(
    kube_admin: KubeAdmin, namespace: str
) -> None:
    """The API server's resourceVersion check, not luck, keeps a second winner out: two
    candidates race (each request in its own thread) for an absent Lease, then for one
    whose holder's time ran out as both see it."""

    async def race(rounds: int) -> list[list[bool]]:
        kube = KubeClient(api_client_for(kube_admin.kubeconfig))
        outcomes = []
        try:
            for n in range(rounds):
                clock = FakeClock()
                pair = [
                    LeaseElector(
                        kube,
                        ElectionOptions(namespace, f"race-{n}", ElectionTimings(1), who),
                        clock=clock,
                    )
                    for who in ("x", "y")
                ]
                first = await asyncio.gather(*(e.try_acquire_or_renew(10) for e in pair))
                outcomes.append(list(first))
                # the winner falls silent; both look, and both see its lease run out
                loser = pair[1 - first.index(True)]
                assert not await loser.try_acquire_or_renew(10)
                clock.now = 5.0
                again = await asyncio.gather(*(e.try_acquire_or_renew(10) for e in pair))
                outcomes.append(list(again))
        finally:
            kube.close()
        return outcomes

    for outcome in asyncio.run(race(5)):
        assert sorted(outcome) == [False, True], outcome
