"""Scale-down without a race, on a real control plane: a long job is never cut.

Before pods retired first, the operator lowered ``spec.replicas`` and the ReplicaSet
controller picked the idle pods; an idle pod could still claim a job between that write
and its SIGTERM, and a job longer than the drain timeout was then handed back and run
again. This test makes that moment happen on purpose: three one-slot pods, idle after a
warm-up, shrink 3 -> 2 -> 1; the instant ``spec.replicas`` reaches 1, two long jobs (6 s;
drain timeout 2 s) arrive. The test node waits a second between a pod's deletion and its
SIGTERM, as a real kubelet takes a while to act on a deletion (its watch, the pod's sync,
preStop hooks). Without retiring, one of the two long jobs lands on the pod being removed
(the pod that stays has one slot) and is cut. Now the pod being removed has stopped
claiming and confirmed it through the job store before the drop (``status.retiring``), so
the long jobs go to the pod that stays and to one the autoscaler adds again: each runs
once.

A drain's hand-back gives the attempt back (``attempts`` stays 1), so each long job
counts its starts in files, one directory per job. The operator runs as a subprocess
(``--interval 1``), worker pods are real ``slotfleet worker`` processes watching their
Queue, the store a real PostgreSQL database.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from slotfleet.models import Job, JobState, QueuedJob

from .fixtures import KubeAdmin
from .operator_helpers import (
    OperatorProcess,
    apply_queue,
    assert_every_job_ran_once,
    create_secret,
    email,
    get_queue,
    queue_manifest,
    run,
    running_pods,
    spec_replicas,
    wait_for,
)
from .operator_helpers import store_enqueue as enqueue
from .operator_helpers import store_list as all_jobs
from .testnode import TestNode

pytestmark = [pytest.mark.kube, pytest.mark.timeout(240)]

#: Longer than the drain timeout: a pod stopped while it runs one hands it back.
LONG_JOB_SECONDS = 6.0
DRAIN_TIMEOUT_SECONDS = 2
#: Between a pod's deletion and its SIGTERM on the test node (a real kubelet's latency).
KUBELET_DELAY_SECONDS = 1.0


@pytest.fixture
def slow_kubelet(test_node: TestNode) -> Iterator[None]:
    test_node.terminate_delay = KUBELET_DELAY_SECONDS
    try:
        yield
    finally:
        test_node.terminate_delay = 0.0


def logged_sleep(queue: str, seconds: float, folder: Path) -> Job:
    """A job that sleeps ``seconds``, leaving a ``<pid>.start`` file in ``folder`` each time
    it starts (a pod's worker pid: a cut job run again elsewhere leaves two)."""
    folder.mkdir()
    return Job(
        func="tests.tasks:async_sleep_logged",
        queue=queue,
        kwargs={"seconds": seconds, "log_dir": str(folder)},
    )


def test_a_long_job_claimed_at_the_scale_down_is_never_cut(
    kube_admin: KubeAdmin,
    namespace: str,
    operator: OperatorProcess,
    test_node: TestNode,
    slow_kubelet: None,
    postgres_dsn: str,
    tmp_path: Path,
) -> None:
    name = "shrink"
    create_secret(kube_admin, namespace, postgres_dsn)
    manifest = queue_manifest(
        name,
        replicas=3,
        executor={"kind": "async", "concurrency": 1},
        autoscaling={
            "mode": "operator",
            "minReplicas": 1,
            "maxReplicas": 3,
            "targetUtilization": 1.0,
            "scaleDownStabilizationSeconds": 3,
            "idleSeconds": 600,
        },
        drainTimeoutSeconds=DRAIN_TIMEOUT_SECONDS,
        imports=["examples.tasks", "tests.tasks"],
    )
    apply_queue(kube_admin, namespace, manifest)
    # A warm-up job per pod keeps the fleet at three until each pod has claimed one: then
    # all three workers are up, idle and listening when the scale-down comes.
    warm = run(enqueue(postgres_dsn, [email(name, f"warm{i}", 3.0) for i in range(3)]))

    def warmed() -> bool:
        jobs = [j for j in run(all_jobs(postgres_dsn, name)) if j.id in {w.id for w in warm}]
        return len({j.claimed_by for j in jobs if j.claimed_by}) == 3

    wait_for("each of three pods to claim a warm-up job", warmed, 90)
    assert spec_replicas(kube_admin, namespace, name) == 3

    # Watch for the drop as closely as the API allows, noting every pod the status lists.
    retiring_seen: set[str] = set()

    def replicas_noting_retiring() -> int:
        queue = get_queue(kube_admin, namespace, name)
        retiring_seen.update(e["pod"] for e in (queue.get("status") or {}).get("retiring") or [])
        return int(queue["spec"]["replicas"])

    deadline = time.monotonic() + 60
    # (the warm-up jobs end one by one: the fleet shrinks 3 -> 2 -> 1, and the last step
    # leaves one pod with one slot for two long jobs)
    while replicas_noting_retiring() > 1:
        assert time.monotonic() < deadline, "the fleet never scaled down to one"
        time.sleep(0.05)
    # The racy moment: the pod about to go is idle, and work arrives.
    starts = [tmp_path / f"long{i}" for i in range(2)]
    long_jobs = [logged_sleep(name, LONG_JOB_SECONDS, folder) for folder in starts]
    longs = run(enqueue(postgres_dsn, long_jobs))
    dropped_at = time.monotonic()

    def all_done() -> list[QueuedJob] | None:
        replicas_noting_retiring()  # a later scale-down retires pods first too
        jobs = run(all_jobs(postgres_dsn, name))
        return jobs if all(j.is_terminal for j in jobs) else None

    jobs = wait_for("every job to end", all_done, 90, interval=0.1)
    long_ids = {j.id for j in longs}
    holders = {j.claimed_by for j in jobs if j.id in long_ids}
    stopped = {pod for _, pod in test_node.sigtermed(namespace)}
    # every job ran once: none was cut by a drain and run again
    runs = {folder.name: sorted(p.name for p in folder.glob("*.start")) for folder in starts}
    assert all(len(started) == 1 for started in runs.values()), (
        f"long jobs cut and run again: {runs}; held last by {holders}; SIGTERM to {stopped}"
    )
    assert_every_job_ran_once(jobs, len(warm) + len(longs))
    assert not holders & stopped, f"a pod holding a long job was stopped: {holders & stopped}"
    # the pods that went were the ones the status named first (and they said so in time)
    assert stopped, "the scale-down stopped no pod"
    assert stopped <= retiring_seen, (stopped, retiring_seen)
    assert not [k for k in test_node.sigkill_log if k[0] == namespace]
    print(f"long jobs done {time.monotonic() - dropped_at:.1f} s after the drop")
    assert {j.state for j in jobs} == {JobState.SUCCEEDED}
    assert len(running_pods(kube_admin, namespace, name)) >= 1
