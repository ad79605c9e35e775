"""The fleet-control core: the sizer, the tick over a port, the argv writer, retention."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest

from slotfleet.control import QueueView, Retention, Sizer, size_fleet, worker_args
from slotfleet.fleet.manifest import parse_queue_manifest
from slotfleet.fleet.runner import worker_command
from slotfleet.models import QueueStats, WorkerHeartbeat
from slotfleet.models.resource import QueueSpec
from slotfleet.operator.workerpod import worker_command as pod_command
from slotfleet.scaling import Decision
from slotfleet.store import purge_in_batches


def spec(**autoscaling: Any) -> QueueSpec:
    return QueueSpec.model_validate(
        {
            "image": "img",
            "store": {"secretRef": {"name": "db"}},
            "executor": {"kind": "async", "concurrency": 10},
            "autoscaling": {
                "mode": "operator",
                "maxReplicas": 10,
                "targetUtilization": 1.0,
                **autoscaling,
            },
            "replicas": 2,
        }
    )


def test_the_sizer_keeps_state_and_resets_it_when_the_settings_change() -> None:
    sizer = Sizer()
    s = spec(scaleDownStabilizationSeconds=60)
    busy = QueueStats(queue="q", ready=35)
    d, _ = sizer.decide(s, busy, at=0, size=0, busy_members=0, paused=False)
    sizer.remember(d, overridden=False, held=False)
    assert d.replicas == 4
    d, _ = sizer.decide(s, QueueStats(queue="q", ready=5), at=10, size=4, busy_members=0,
                        paused=False)  # fmt: skip
    assert d.replicas == 4  # held by the stabilization window
    assert sizer.state.last_active == 10
    d, _ = sizer.decide(spec(scaleDownStabilizationSeconds=0), QueueStats(queue="q", ready=5),
                        at=11, size=4, busy_members=0, paused=False)  # fmt: skip
    assert d.replicas == 1  # new settings: the old window is gone
    assert sizer.state.last_active == 11


def test_busy_is_the_larger_of_running_jobs_and_heartbeat_slots() -> None:
    s = spec(targetUtilization=1.0)
    for stats in (QueueStats(queue="q", running=25), QueueStats(queue="q", slots_busy=25)):
        d, _ = Sizer().decide(s, stats, at=0, size=0, busy_members=0, paused=False)
        assert d.replicas == 3, stats


def test_a_paused_queue_s_backlog_is_no_demand() -> None:
    d, _ = Sizer().decide(spec(), QueueStats(queue="q", ready=50), at=0, size=0,
                          busy_members=0, paused=True)  # fmt: skip
    assert d.replicas == 0


def test_an_outside_size_is_reported_as_overridden_and_the_sizers_own_is_used() -> None:
    sizer = Sizer()
    stats = QueueStats(queue="q", ready=35)
    d, overridden = sizer.decide(spec(), stats, at=0, size=0, busy_members=0, paused=False)
    sizer.remember(d, overridden=overridden, held=False)
    assert (d.replicas, overridden) == (4, False)
    d, overridden = sizer.decide(spec(), stats, at=1, size=9, busy_members=0, paused=False)
    assert (d.replicas, overridden) == (4, True)


def test_mode_off_is_the_fixed_size() -> None:
    s = spec(mode="off")
    d, _ = Sizer().decide(s, QueueStats(queue="q", ready=99), at=0, size=5, busy_members=0,
                          paused=False)  # fmt: skip
    assert d == Decision(2, "fixed: autoscaling is off", 2)


@dataclass
class Port:
    current: int
    ids: list[str]
    settled: bool = True
    marks: list[dict[str, int]] = field(default_factory=list)
    resized: list[int] = field(default_factory=list)
    retiring: bool = False
    """Hold every scale-down, as members not yet retired would."""
    retired: list[int] = field(default_factory=list)

    def size(self) -> int:
        return self.current

    def members(self) -> list[str]:
        return self.ids

    async def mark(self, busy: Mapping[str, int]) -> bool:
        self.marks.append(dict(busy))
        return self.settled

    def retire(self, decision: Decision) -> Decision:
        self.retired.append(decision.replicas)
        if self.retiring and decision.replicas < self.current:
            return Decision(self.current, "holding: retiring", decision.desired)
        return decision

    async def resize(
        self, decision: Decision, busy: Mapping[str, int], *, overridden: bool
    ) -> Decision:
        self.resized.append(decision.replicas)
        self.current = decision.replicas
        return decision


def view(**stats: Any) -> QueueView:
    beats = [WorkerHeartbeat(worker_id="a", queues={"q": (10, 3)})]
    return QueueView("q", QueueStats(queue="q", **stats), [], beats, {"b": 1})


async def test_the_tick_marks_busy_members_then_resizes() -> None:
    port = Port(1, ["a", "b"])
    d = await size_fleet(port, Sizer(), spec(), view(ready=40, running=4), at=0,
                         paused=False, hpa_sizes=True)  # fmt: skip
    assert port.marks == [{"a": 3, "b": 1}]
    assert d is not None
    assert port.resized == [d.replicas]
    assert d.replicas == 5


async def test_a_scale_down_waits_a_tick_while_marks_change() -> None:
    port = Port(4, ["a", "b", "c", "d"], settled=False)
    sizer = Sizer(last=Decision(4, "", 4))
    d = await size_fleet(port, sizer, spec(scaleDownStabilizationSeconds=0), view(running=4),
                         at=0, paused=False, hpa_sizes=True)  # fmt: skip
    assert d is not None
    assert d.replicas == 4
    assert d.reason.startswith("holding: marking")
    assert port.resized == []
    port.settled = True
    d = await size_fleet(port, sizer, spec(scaleDownStabilizationSeconds=0), view(running=4),
                         at=1, paused=False, hpa_sizes=True)  # fmt: skip
    assert d is not None
    assert port.resized == [2]


async def test_the_port_sees_the_wanted_size_before_any_hold_and_may_hold_it() -> None:
    """The port's members must be chosen (and retire) while the marks settle, so it sees
    the sizer's scale-down even on a tick the mark hold holds, and its own hold wins."""
    port = Port(4, ["a", "b", "c", "d"], settled=False, retiring=True)
    sizer = Sizer(last=Decision(4, "", 4))
    d = await size_fleet(port, sizer, spec(scaleDownStabilizationSeconds=0), view(running=4),
                         at=0, paused=False, hpa_sizes=True)  # fmt: skip
    assert d is not None
    assert (port.retired, d.replicas, d.reason) == ([2], 4, "holding: retiring")
    port.settled, port.retiring = True, False
    await size_fleet(port, sizer, spec(scaleDownStabilizationSeconds=0), view(running=4),
                     at=1, paused=False, hpa_sizes=True)  # fmt: skip
    assert port.resized == [2]


async def test_an_outside_size_held_by_retiring_is_still_reverted_as_one() -> None:
    """Regression: ``kubectl scale`` to 3 in operator mode, while the 3 pods exist. The
    retire hold kept 3 for a tick and the sizer took that 3 for its own word; the next
    tick saw no outside size, the scale-down stabilization kept 3, and the revert never
    came (the kube test waited 40 s for ``spec.replicas`` back to 0)."""
    port = Port(3, ["x", "y", "z"], retiring=True)  # none of them busy
    sizer = Sizer(last=Decision(0, "idle", 0))
    s = spec(minReplicas=0, scaleDownStabilizationSeconds=300)
    reverts: list[bool] = []

    async def resize(decision: Decision, busy: Mapping[str, int], *, overridden: bool) -> Decision:
        reverts.append(overridden)
        port.current = decision.replicas
        return decision

    port.resize = resize  # type: ignore[method-assign]
    d = await size_fleet(port, sizer, s, view(), at=0, paused=False, hpa_sizes=True)
    assert d is not None
    assert (d.replicas, d.reason) == (3, "holding: retiring")
    port.retiring = False  # the three pods have stopped claiming
    d = await size_fleet(port, sizer, s, view(), at=1, paused=False, hpa_sizes=True)
    assert d is not None
    assert (d.replicas, reverts) == (0, [True])


async def test_nothing_is_marked_or_resized_on_a_failed_read_and_an_hpa_only_marks() -> None:
    port = Port(1, ["a"])
    failed = QueueView.failed("q", "down")
    assert await size_fleet(port, Sizer(), spec(), failed, at=0, paused=False,
                            hpa_sizes=True) is None  # fmt: skip
    assert port.marks == []
    assert port.resized == []
    assert await size_fleet(port, Sizer(), spec(mode="hpa"), view(ready=99), at=0,
                            paused=False, hpa_sizes=True) is None  # fmt: skip
    assert len(port.marks) == 1
    assert port.resized == []


def test_the_operator_and_the_local_fleet_write_the_same_worker_arguments() -> None:
    """One writer: the settings part of both command lines is the same, numbers alike."""
    manifest = parse_queue_manifest(
        json.dumps(
            {
                "apiVersion": "slotfleet.dev/v1alpha1",
                "kind": "Queue",
                "metadata": {"name": "emails"},
                "spec": {
                    "image": "img",
                    "store": {"secretRef": {"name": "db"}},
                    "pollingInterval": 2.0,
                    "rateLimit": {"count": 10, "period": 1.5},
                    "imports": ["app.tasks"],
                    "functions": "any",
                },
            }
        )
    )
    local = worker_command(manifest, "fleet-1")
    pod = pod_command("emails", "ns/emails", manifest.spec)

    def settings(argv: list[str]) -> list[str]:
        out, skip = [], {"--worker-id", "--metrics-host", "--metrics-port", "--queue-resource"}
        it = iter(argv[argv.index("worker") :])
        for arg in it:
            if arg in skip:
                next(it)
            else:
                out.append(arg)
        return out

    assert settings(local) == settings(pod)
    assert settings(pod)[settings(pod).index("--polling-interval") + 1] == "2"
    assert "10/1.5" in pod
    assert pod[pod.index("--worker-id") + 1] == "$(POD_NAME)"


def test_spec_text_is_escaped_for_the_kubelet_but_the_pod_fields_are_not() -> None:
    s = spec()
    args = worker_args(s, "a$b", worker_id="$(POD_NAME)", metrics_host="h", metrics_port=1,
                       escape=lambda t: t.replace("$", "$$"))  # fmt: skip
    assert args[2] == "a$$b:async:10"
    assert args[args.index("--worker-id") + 1] == "$(POD_NAME)"


@dataclass
class PurgeStore:
    left: int
    calls: list[int] = field(default_factory=list)

    async def purge(self, older_than: timedelta, *, queue: str | None = None,
                    limit: int = 1000) -> int:  # fmt: skip
        n = min(limit, self.left)
        self.left -= n
        self.calls.append(n)
        return n


@pytest.mark.parametrize(
    ("left", "max_batches", "calls"),
    [(2500, None, [1000, 1000, 500]), (2000, None, [1000, 1000, 0]), (5000, 2, [1000, 1000])],
)
async def test_the_one_purge_loop(left: int, max_batches: int | None, calls: list[int]) -> None:
    store = PurgeStore(left)
    total = await purge_in_batches(store, timedelta(1), max_batches=max_batches)  # type: ignore[arg-type]
    assert (total, store.calls) == (sum(calls), calls)


def test_retention_is_due_on_the_first_tick_then_once_a_minute() -> None:
    r = Retention()
    assert not r.due(None, 0)
    assert r.due(3600, 0)
    assert not r.due(3600, 59)
    assert r.due(3600, 60)
