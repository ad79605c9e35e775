"""The operator's ``Degraded`` condition for worker containers the kubelet cannot start
(``slotfleet.operator.status.worker_problem``), from pod documents as the API returns them.
The real kubelet's reasons are checked on a real node in ``tests/node``."""

from __future__ import annotations

from typing import Any

import pytest

from slotfleet.operator import status as st


def pod(name: str, waiting: dict[str, str] | None = None, **extra: Any) -> dict[str, Any]:
    state = {"waiting": waiting} if waiting else {"running": {"startedAt": "2026-01-01T00:00:00Z"}}
    return {
        "metadata": {"name": name, **extra},
        "status": {
            "containerStatuses": [
                {"name": "worker", "image": "registry.example/tasks:1", "state": state}
            ]
        },
    }


def test_running_and_starting_workers_are_no_problem() -> None:
    pods = [
        pod("q-worker-a"),
        pod("q-worker-b", {"reason": "ContainerCreating"}),
        {"metadata": {"name": "q-worker-c"}, "status": {}},
    ]
    assert st.worker_problem(pods) is None


@pytest.mark.parametrize(
    "reason", ["ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull", "InvalidImageName"]
)
def test_an_image_the_kubelet_cannot_use_is_image_unusable(reason: str) -> None:
    found = st.worker_problem(
        [pod("q-worker-a"), pod("q-worker-b", {"reason": reason, "message": "no\nsuch image"})]
    )
    assert found == st.ConditionUpdate(
        st.DEGRADED,
        True,
        "ImageUnusable",
        f"worker pod q-worker-b: image 'registry.example/tasks:1' cannot be used ({reason}): "
        "no such image",
    )


def test_a_crashing_container_is_workers_failing_and_counts_the_pods() -> None:
    pods = [
        pod("q-worker-b", {"reason": "CrashLoopBackOff", "message": "back-off 10s"}),
        pod("q-worker-a", {"reason": "CrashLoopBackOff"}),
    ]
    found = st.worker_problem(pods)
    assert found is not None
    assert (found.reason, found.status) == ("WorkersFailing", True)
    assert found.message == (
        "2 worker pods (first: q-worker-a): container 'worker' cannot run (CrashLoopBackOff)"
    )


def test_a_terminating_pod_is_not_reported() -> None:
    doomed = pod("q-worker-a", {"reason": "ErrImagePull"}, deletionTimestamp="2026-01-01T00:00:00Z")
    assert st.worker_problem([doomed]) is None


def test_a_long_kubelet_message_is_cut_to_one_short_line() -> None:
    found = st.worker_problem([pod("p", {"reason": "ErrImagePull", "message": "x\n" * 400})])
    assert found is not None
    assert "\n" not in found.message
    assert found.message.endswith("...")
    assert len(found.message) < st.MAX_MESSAGE + 100


def test_ready_is_false_with_the_workers_reason() -> None:
    problem = st.worker_problem([pod("p", {"reason": "ErrImageNeverPull"})])
    ready = st.ready_condition(degraded=problem, store_ok=True, ready=0, wanted=1)
    assert (ready.status, ready.reason) == (False, "ImageUnusable")
