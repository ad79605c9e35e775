"""The operator and its workers under faults a user will meet, on a real control plane.

The operator runs as a subprocess (``--interval 1``); worker pods are real ``slotfleet
worker`` processes started by the test node; the job store is a real PostgreSQL database.

* the shipped example (``examples/queue.yaml``) applied as it is, jobs enqueued with the
  CLI, and ``kubectl get queues`` showing live numbers;
* ``spec.paused``: the worker stops fetching but finishes what it runs, and is not killed;
* the database unreachable for a while (a TCP forwarder between the Secret's DSN and the
  server is cut, then restored): ``StoreReachable`` goes False and back to True by itself;
* a worker pod deleted by hand: the Deployment replaces it and its job runs again there.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from slotfleet.models import Job, JobId, JobState, QueuedJob
from slotfleet.store import open_store
from tests.fixtures.tcp_forwarder import TcpForwarder

from ..fixtures.postgres import PostgresServer
from .diagnose import namespace_report
from .fixtures import KubeAdmin
from .operator_helpers import (
    GROUP,
    PLURAL,
    REPO,
    VENV_BIN,
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
    running_pods,
    wait_for,
)
from .operator_helpers import (
    store_enqueue as _enqueue,
)
from .operator_helpers import (
    store_list as _list,
)
from .testnode import TestNode

pytestmark = [pytest.mark.kube, pytest.mark.timeout(180)]

EXAMPLE_QUEUE = REPO / "examples" / "queue.yaml"
EXAMPLE_SECRET = REPO / "examples" / "secret.yaml"


# ------------------------------------------------------------------ small helpers


async def _get_many(dsn: str, ids: list[int]) -> list[QueuedJob]:
    store = open_store(dsn)
    await store.open()
    try:
        found = [await store.get(JobId(i)) for i in ids]
    finally:
        await store.close()
    assert all(j is not None for j in found), "a job vanished from the store"
    return [j for j in found if j is not None]


def enqueue(dsn: str, jobs: list[Job]) -> list[int]:
    return [j.id for j in run(_enqueue(dsn, jobs))]


def jobs_by_id(dsn: str, ids: list[int]) -> list[QueuedJob]:
    found: list[QueuedJob] = run(_get_many(dsn, ids))
    return found


def all_succeeded(dsn: str, ids: list[int]) -> list[QueuedJob] | None:
    jobs = jobs_by_id(dsn, ids)
    return jobs if all(j.state is JobState.SUCCEEDED for j in jobs) else None


def summary(jobs: list[QueuedJob]) -> list[tuple[int, str, int, str | None]]:
    return [(j.id, j.state.value, j.attempts, j.lease_owner) for j in jobs]


def queue_rows(admin: KubeAdmin, namespace: str) -> dict[str, dict[str, str]]:
    """``kubectl get queues`` as printed, one dict (column -> cell) per Queue."""
    lines = kubectl(admin, "get", "queues", "-n", namespace).stdout.splitlines()
    if not lines:
        return {}
    header = lines[0].split()
    rows = {}
    for line in lines[1:]:
        cells = line.split()
        assert len(cells) == len(header), f"unexpected kubectl output: {lines}"
        rows[cells[0]] = dict(zip(header, cells, strict=True))
    return rows


def pod_restarts(admin: KubeAdmin, namespace: str, queue: str) -> dict[str, tuple[str, int]]:
    """Every pod of the queue: phase and the worker container's restartCount."""
    pods = (
        client.CoreV1Api(admin.api_client)
        .list_namespaced_pod(namespace, label_selector=f"slotfleet.dev/queue={queue}")
        .items
    )
    found: dict[str, tuple[str, int]] = {}
    for pod in pods:
        statuses = pod.status.container_statuses or []  # type: ignore[union-attr]
        restarts = sum(int(c.restart_count) for c in statuses)
        found[str(pod.metadata.name)] = (str(pod.status.phase), restarts)  # type: ignore[union-attr]
    return found


def patch_paused(admin: KubeAdmin, namespace: str, name: str, paused: bool) -> None:
    custom(admin).patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, name, {"spec": {"paused": paused}}
    )


def store_reachable(admin: KubeAdmin, namespace: str, name: str) -> dict[str, Any] | None:
    return condition(get_queue(admin, namespace, name), "StoreReachable")


# ------------------------------------------------------------------ the shipped example


@pytest.fixture
def image_env(test_node: TestNode, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the image would provide to the example's pods (which set no ``env``): the
    ``slotfleet`` console script on PATH and the repo (``examples.tasks``) importable."""
    monkeypatch.setitem(
        test_node.base_env, "PATH", f"{VENV_BIN}:{test_node.base_env.get('PATH', '')}"
    )
    monkeypatch.setitem(test_node.base_env, "PYTHONPATH", str(REPO))


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "slotfleet.cli.main", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, f"slotfleet {' '.join(args)} failed: {proc.stderr}"
    return proc


def test_example_queue_yaml_runs_jobs_enqueued_with_the_cli(
    kube_admin: KubeAdmin,
    namespace: str,
    operator: OperatorProcess,
    test_node: TestNode,
    image_env: None,
    postgres_dsn: str,
    tmp_path: Path,
) -> None:
    queue_doc = yaml.safe_load(EXAMPLE_QUEUE.read_text())
    secret_doc = yaml.safe_load(EXAMPLE_SECRET.read_text())
    name = queue_doc["metadata"]["name"]
    queue = queue_doc["spec"].get("queueName") or name
    secret_ref = queue_doc["spec"]["store"]["secretRef"]
    # examples/secret.yaml with the real DSN: same name and key, only the value differs
    assert (secret_doc["metadata"]["name"], list(secret_doc["stringData"])) == (
        secret_ref["name"],
        [secret_ref["key"]],
    )
    secret_doc["stringData"][secret_ref["key"]] = postgres_dsn
    secret_file = tmp_path / "secret.yaml"
    secret_file.write_text(yaml.safe_dump(secret_doc))
    kubectl(kube_admin, "apply", "-n", namespace, "-f", str(secret_file))
    kubectl(kube_admin, "apply", "-n", namespace, "-f", str(EXAMPLE_QUEUE))

    wait_for(
        "StoreReachable=True",
        lambda: (c := store_reachable(kube_admin, namespace, name)) and c["status"] == "True",
        60,
    )
    # five quick emails and one that takes a while, so the table shows a busy slot
    quick = cli(
        "enqueue", "examples.tasks:send_email", "to=ada@example.com",
        "--queue", queue, "--dsn", postgres_dsn, "--count", "5",
    )  # fmt: skip
    slow = cli(
        "enqueue", "examples.tasks:send_email", "to=bob@example.com", "seconds=15",
        "--queue", queue, "--dsn", postgres_dsn,
    )  # fmt: skip
    assert len(quick.stdout.split()) == 5
    assert len(slow.stdout.split()) == 1

    started = time.monotonic()

    def row_with(**cells: str) -> dict[str, str] | None:
        row = queue_rows(kube_admin, namespace).get(name)
        return row if row and all(row[k] == v for k, v in cells.items()) else None

    busy_row = wait_for(
        "kubectl get queues to show a busy slot on a ready pod",
        lambda: row_with(BUSY="1", READY="1"),
        90,
    )
    assert busy_row["REPLICAS"] == "1"  # ceil((busy + pending) / (20 * 0.8)) == 1
    assert busy_row["FREE"] == "19"
    assert busy_row["MODE"] == "operator"

    jobs = wait_for(
        "all six jobs succeeded",
        lambda: (
            (js := run(_list(postgres_dsn, queue)))
            and all(j.state is JobState.SUCCEEDED for j in js)
            and js
        ),
        60,
    )
    assert len(jobs) == 6
    assert all(j.attempts == 1 for j in jobs), summary(jobs)
    idle_row = wait_for("kubectl get queues to show an idle fleet", lambda: row_with(BUSY="0"), 30)
    assert (idle_row["REPLICAS"], idle_row["READY"], idle_row["FREE"], idle_row["PENDING"]) == (
        "1",
        "1",
        "20",
        "0",
    )
    print(f"example queue: jobs done {time.monotonic() - started:.1f}s after enqueue")


# ------------------------------------------------------------------ paused


def test_paused_queue_stops_fetching_but_finishes_running_jobs(
    kube_admin: KubeAdmin,
    namespace: str,
    operator: OperatorProcess,
    test_node: TestNode,
    postgres_dsn: str,
) -> None:
    name = "pausable"
    create_secret(kube_admin, namespace, postgres_dsn)
    apply_queue(kube_admin, namespace, queue_manifest(name, replicas=1))
    (pod,) = wait_for("the worker pod", lambda: running_pods(kube_admin, namespace, name), 60)
    pod_name = pod.metadata.name

    (long_id,) = enqueue(postgres_dsn, [email(name, "long", 10.0)])
    wait_for(
        "the long job running",
        lambda: jobs_by_id(postgres_dsn, [long_id])[0].state is JobState.RUNNING,
        60,
    )
    patch_paused(kube_admin, namespace, name, True)
    time.sleep(2.0)  # the worker's watch delivers the change well within this
    later = enqueue(postgres_dsn, [email(name, f"later{i}", 0.05) for i in range(3)])

    # for six seconds: the new jobs stay pending, the long one keeps running on its pod
    deadline = time.monotonic() + 6.0
    while time.monotonic() < deadline:
        states = summary(jobs_by_id(postgres_dsn, [long_id, *later]))
        assert [s[1] for s in states[1:]] == ["pending"] * 3, states
        time.sleep(0.5)
    long_job = wait_for(
        "the running job to finish while paused",
        lambda: all_succeeded(postgres_dsn, [long_id]),
        30,
    )[0]
    assert long_job.attempts == 1, summary([long_job])
    time.sleep(2.0)
    states = summary(jobs_by_id(postgres_dsn, later))
    assert [s[1] for s in states] == ["pending"] * 3, states
    assert [p.metadata.name for p in running_pods(kube_admin, namespace, name)] == [pod_name]
    assert test_node.sigtermed(namespace) == []
    assert pod_restarts(kube_admin, namespace, name)[pod_name] == ("Running", 0)

    patch_paused(kube_admin, namespace, name, False)
    done = wait_for(
        "the later jobs after unpausing", lambda: all_succeeded(postgres_dsn, later), 30
    )
    assert all(j.attempts == 1 for j in done), summary(done)


# ------------------------------------------------------------------ store unreachable


def test_store_unreachable_for_a_while_sets_condition_and_recovers(
    kube_admin: KubeAdmin,
    namespace: str,
    operator: OperatorProcess,
    test_node: TestNode,
    postgres_server: PostgresServer,
    postgres_dsn: str,
) -> None:
    name = "flaky"
    direct_port = f":{postgres_server.port}/"
    assert direct_port in postgres_dsn
    forwarder = TcpForwarder(postgres_server.port)
    forwarder.start()
    try:
        create_secret(
            kube_admin, namespace, postgres_dsn.replace(direct_port, f":{forwarder.port}/")
        )
        apply_queue(kube_admin, namespace, queue_manifest(name, replicas=1))
        (pod,) = wait_for("the worker pod", lambda: running_pods(kube_admin, namespace, name), 60)
        wait_for(
            "StoreReachable=True",
            lambda: (c := store_reachable(kube_admin, namespace, name)) and c["status"] == "True",
            60,
        )
        before = enqueue(postgres_dsn, [email(name, f"before{i}", 0.05) for i in range(3)])
        wait_for("jobs before the cut", lambda: all_succeeded(postgres_dsn, before), 30)
        # one job still running when the cut comes: its completion is written afterwards
        (across,) = enqueue(postgres_dsn, [email(name, "across", 3.0)])
        wait_for(
            "the job across the cut running",
            lambda: jobs_by_id(postgres_dsn, [across])[0].state is JobState.RUNNING,
            30,
        )
        assert forwarder.live_connections > 0

        cut_at = time.monotonic()
        dropped = forwarder.cut()
        down = wait_for(
            "StoreReachable=False",
            lambda: (
                (c := store_reachable(kube_admin, namespace, name)) and c["status"] == "False" and c
            ),
            30,
        )
        seen_after = time.monotonic() - cut_at
        assert down["message"], down
        assert "\n" not in down["message"], down
        during = enqueue(postgres_dsn, [email(name, f"during{i}", 0.05) for i in range(2)])
        time.sleep(max(0.0, 8.0 - (time.monotonic() - cut_at)))  # about 8 s without a store
        still_down = store_reachable(kube_admin, namespace, name)
        assert still_down is not None
        assert still_down["status"] == "False", still_down

        forwarder.restore()
        restored_at = time.monotonic()
        wait_for(
            "StoreReachable=True again",
            lambda: (c := store_reachable(kube_admin, namespace, name)) and c["status"] == "True",
            60,
        )
        recovered_after = time.monotonic() - restored_at
        after = enqueue(postgres_dsn, [email(name, f"after{i}", 0.05) for i in range(3)])
        ids = [*before, across, *during, *after]
        try:
            done = wait_for("every job", lambda: all_succeeded(postgres_dsn, ids), 60)
        except AssertionError as exc:
            jobs = jobs_by_id(postgres_dsn, ids)
            report = namespace_report(kube_admin.api_client, namespace, test_node)
            stuck = [(*summary([j])[0], [e.error for e in j.errors]) for j in jobs]
            raise AssertionError(f"{exc}\njobs: {stuck}\n{report}") from None
        assert all(j.attempts == 1 for j in done), summary(done)

        restarts = pod_restarts(kube_admin, namespace, name)
        print(
            f"store cut: {dropped} connections dropped, StoreReachable=False after "
            f"{seen_after:.1f}s ({down['reason']}: {down['message']}), True again "
            f"{recovered_after:.1f}s after restore; pods {restarts}"
        )
        assert restarts == {pod.metadata.name: ("Running", 0)}, restarts
    finally:
        forwarder.stop()


# ------------------------------------------------------------------ pod deleted by hand


def test_worker_pod_deleted_by_hand_is_replaced_and_its_job_recovered(
    kube_admin: KubeAdmin,
    namespace: str,
    operator: OperatorProcess,
    test_node: TestNode,
    postgres_dsn: str,
) -> None:
    name = "victim"
    create_secret(kube_admin, namespace, postgres_dsn)
    # a SIGTERMed pod hands its running job back after 2 s (attempt not counted)
    apply_queue(kube_admin, namespace, queue_manifest(name, replicas=1, drainTimeoutSeconds=2))
    (first,) = wait_for("the worker pod", lambda: running_pods(kube_admin, namespace, name), 60)
    first_name = first.metadata.name

    (long_id,) = enqueue(postgres_dsn, [email(name, "long", 20.0)])

    def long_job_running() -> QueuedJob | None:
        job = jobs_by_id(postgres_dsn, [long_id])[0]
        return job if job.state is JobState.RUNNING else None

    running = wait_for("the long job running on the first pod", long_job_running, 60)
    assert running.lease_owner == first_name
    quick = enqueue(postgres_dsn, [email(name, f"q{i}", 0.05) for i in range(3)])
    wait_for("quick jobs", lambda: all_succeeded(postgres_dsn, quick), 30)

    deleted_at = time.monotonic()
    kubectl(kube_admin, "delete", "pod", first_name, "-n", namespace, "--wait=false")

    replacement = wait_for(
        "a replacement pod running",
        lambda: [
            p for p in running_pods(kube_admin, namespace, name) if p.metadata.name != first_name
        ],
        60,
    )
    second_name = replacement[0].metadata.name
    owners: set[str | None] = set()

    def finished_on_the_new_pod() -> QueuedJob | None:
        job = jobs_by_id(postgres_dsn, [long_id])[0]
        if job.state is JobState.RUNNING:
            owners.add(job.lease_owner)
        return job if job.is_terminal else None

    final = wait_for("the long job to end", finished_on_the_new_pod, 90, interval=0.5)
    elapsed = time.monotonic() - deleted_at
    print(
        f"pod deleted: replacement {second_name}; job owners while running {owners}; "
        f"{final.state.value} attempts={final.attempts} after {elapsed:.1f}s; "
        f"errors={[e.error for e in final.errors]}; sigkilled={test_node.sigkill_log}"
    )
    assert final.state is JobState.SUCCEEDED, summary([final])
    assert final.attempts <= 2, summary([final])
    assert second_name in owners, owners
    assert (namespace, first_name) in test_node.sigtermed(namespace)
    every = run(_list(postgres_dsn, name))
    assert len(every) == 4
    assert all(j.state is JobState.SUCCEEDED for j in every), summary(every)
