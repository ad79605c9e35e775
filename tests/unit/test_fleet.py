"""The local fleet's sizing, victim choice and lifecycle, with fake processes and store."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import pytest

from slotfleet.cli import fleet_cmd
from slotfleet.cli.common import Parser
from slotfleet.fleet import (
    LocalFleet,
    QueueManifest,
    SubprocessLauncher,
    choose_victims,
    load_queue_manifest,
    parse_override,
    parse_queue_manifest,
    worker_command,
)
from slotfleet.fleet.runner import KILL_GRACE_SECONDS, Process
from slotfleet.models import (
    FleetSnapshot,
    InvalidSettingsError,
    QueueSnapshot,
    QueueStats,
    RateLimit,
    WorkerHeartbeat,
)
from slotfleet.models.resource import QueueSpec
from slotfleet.store.base import Store

EXAMPLE = Path(__file__).parents[2] / "examples" / "queue.yaml"


def manifest(**autoscaling: Any) -> QueueManifest:
    scaling = {
        "minReplicas": 0,
        "maxReplicas": 5,
        "targetUtilization": 0.8,
        "scaleDownStabilizationSeconds": 0,
        "idleSeconds": 10,
        **autoscaling,
    }
    spec = QueueSpec.model_validate(
        {
            "imports": ["examples.tasks"],
            "executor": {"kind": "async", "concurrency": 10},
            "store": {"secretRef": {"name": "db"}},
            "autoscaling": scaling,
            "drainTimeoutSeconds": 5,
        }
    )
    return QueueManifest(name="emails", spec=spec)


@dataclass
class FakeProcess:
    pid: int
    drains: bool = True
    code: int | None = None
    signals: list[str] = field(default_factory=list)

    def poll(self) -> int | None:
        return self.code

    def terminate(self) -> None:
        self.signals.append("TERM")
        if self.drains:
            self.code = 0

    def kill(self) -> None:
        self.signals.append("KILL")
        self.code = -9


@dataclass
class FakeLauncher:
    drains: bool = True
    started: dict[str, FakeProcess] = field(default_factory=dict)

    def start(self, worker_id: str) -> Process:
        process = FakeProcess(pid=1000 + len(self.started), drains=self.drains)
        self.started[worker_id] = process
        return process


@dataclass
class FakeStore:
    """Only what the fleet reads: queue stats and heartbeats."""

    stats: QueueStats = field(default_factory=lambda: QueueStats(queue="emails"))
    beats: list[WorkerHeartbeat] = field(default_factory=list)
    running: dict[str, int] = field(default_factory=dict)
    """Running jobs per lease owner."""

    async def queue_stats(self, queue: str | None = None, **_: Any) -> list[QueueStats]:
        return [QueueStats(queue="other", ready=99), self.stats]

    async def workers(self, **_: Any) -> list[WorkerHeartbeat]:
        return self.beats

    async def running_by_worker(self, queue: str) -> dict[str, int]:
        return self.running

    async def cancel_requests(self, **_: Any) -> list[Any]:
        return []

    async def fleet_snapshot(self, queues: Sequence[str], **_: Any) -> FleetSnapshot:
        def one(name: str) -> QueueSnapshot:
            if name != self.stats.queue:
                return QueueSnapshot(stats=QueueStats(queue=name))
            running = self.running if self.stats.running else {}
            return QueueSnapshot(stats=self.stats, running_by_worker=running)

        return FleetSnapshot({name: one(name) for name in queues}, tuple(self.beats))

    purges: list[tuple[timedelta, str | None, int]] = field(default_factory=list)
    finished: int = 0
    """Finished jobs old enough to purge."""

    async def purge(
        self, older_than: timedelta, *, queue: str | None = None, limit: int = 1000
    ) -> int:
        self.purges.append((older_than, queue, limit))
        deleted = min(limit, self.finished)
        self.finished -= deleted
        return deleted


@dataclass
class Rig:
    fleet: LocalFleet
    store: FakeStore
    launcher: FakeLauncher
    lines: list[str]
    now: list[float]

    def tick(self, seconds: float = 1.0) -> None:
        self.now[0] += seconds


def rig(m: QueueManifest | None = None, *, drains: bool = True) -> Rig:
    store, launcher, now = FakeStore(), FakeLauncher(drains=drains), [0.0]
    lines: list[str] = []
    fleet = LocalFleet(
        manifest=m or manifest(),
        store=cast(Store, store),
        launcher=launcher,
        clock=lambda: now[0],
        say=lines.append,
    )
    return Rig(fleet, store, launcher, lines, now)


def beat(worker_id: str, busy: int, total: int = 10) -> WorkerHeartbeat:
    return WorkerHeartbeat(worker_id=worker_id, queues={"emails": (total, busy)})


# --- victims -------------------------------------------------------------------------------


def test_victims_are_idle_first_then_newest() -> None:
    beats = [beat("a", 3), beat("b", 0), beat("c", 1), beat("d", 0)]
    assert choose_victims(["a", "b", "c", "d"], beats, "emails", 3) == ["d", "b", "c"]


def test_a_worker_without_heartbeat_counts_as_idle() -> None:
    assert choose_victims(["a", "new"], [beat("a", 2)], "emails", 1) == ["new"]


def test_busy_on_other_queues_is_ignored() -> None:
    other = WorkerHeartbeat(worker_id="a", queues={"other": (10, 10)})
    assert choose_victims(["a", "b"], [other, beat("b", 1)], "emails", 1) == ["a"]


def test_no_victims_for_zero() -> None:
    assert choose_victims(["a"], [], "emails", 0) == []


# --- sizing --------------------------------------------------------------------------------


async def test_scales_from_zero_on_demand() -> None:
    r = rig()
    r.store.stats = QueueStats(queue="emails", ready=37)
    decision = await r.fleet.step()
    assert decision.replicas == 5
    assert list(r.launcher.started) == [f"fleet-{i}" for i in range(1, 6)]
    assert r.lines == [
        "emails: 0 -> 5 workers: scale from zero: 37 jobs need 5 pods"
        " [ready 37, running 0, slots 0/0 busy]"
    ]


@pytest.mark.parametrize("where", ["spec", "store"])
async def test_a_paused_queues_backlog_is_no_demand(where: str) -> None:
    """No worker takes a paused queue's jobs, so they start none (as the operator sizes a
    paused Queue); once the pause ends the backlog counts again."""
    m = manifest()
    if where == "spec":
        m = QueueManifest(m.name, m.spec.model_copy(update={"paused": True}))
    r = rig(m)
    r.store.stats = QueueStats(queue="emails", ready=37, paused=where == "store")
    assert (await r.fleet.step()).replicas == 0
    assert r.launcher.started == {}
    if where == "store":
        r.tick()
        r.store.stats = QueueStats(queue="emails", ready=37)
        assert (await r.fleet.step()).replicas == 5


async def test_scale_down_stops_idle_workers_and_keeps_busy_ones() -> None:
    r = rig()
    r.store.stats = QueueStats(queue="emails", ready=37)
    await r.fleet.step()
    r.tick()
    r.store.stats = QueueStats(queue="emails", running=3, slots_busy=3, slots_total=50)
    r.store.beats = [
        beat("fleet-1", 0),
        beat("fleet-2", 3),
        *(beat(f"fleet-{i}", 0) for i in (3, 4, 5)),
    ]
    decision = await r.fleet.step()
    assert decision.replicas == 1
    assert [w.id for w in r.fleet.active] == ["fleet-2"]
    assert r.launcher.started["fleet-2"].signals == []
    assert all(r.launcher.started[f"fleet-{i}"].signals == ["TERM"] for i in (1, 3, 4, 5))
    assert "5 -> 1 workers: scale down: 3 jobs need 1 pod" in r.lines[-1]


async def test_scale_down_keeps_every_worker_running_a_job() -> None:
    """Regression: with two jobs on two workers the fleet shrank to one worker (two jobs
    fit on one), so a worker running a job was stopped; and victims were
    chosen from heartbeats alone, which lag a claim. Running jobs' lease owners now pin
    their workers."""
    r = rig(manifest(maxReplicas=4, targetUtilization=1.0))
    r.store.stats = QueueStats(queue="emails", ready=40)
    await r.fleet.step()
    assert len(r.fleet.active) == 4
    r.tick()
    r.store.stats = QueueStats(queue="emails", running=2, slots_busy=0, slots_total=40)
    r.store.beats = [beat(f"fleet-{i}", 0) for i in (1, 2, 3, 4)]  # before the claims
    r.store.running = {"fleet-1": 1, "fleet-3": 1}
    decision = await r.fleet.step()
    assert decision.replicas == 2
    assert [w.id for w in r.fleet.active] == ["fleet-1", "fleet-3"]
    assert r.launcher.started["fleet-1"].signals == r.launcher.started["fleet-3"].signals == []


async def test_steady_state_reports_once() -> None:
    r = rig()
    r.store.stats = QueueStats(queue="emails", ready=5)
    for _ in range(5):
        await r.fleet.step()
        r.tick()
    assert len(r.lines) == 1
    assert len(r.launcher.started) == 1


async def test_a_crashed_worker_is_reported_and_replaced() -> None:
    r = rig()
    r.store.stats = QueueStats(queue="emails", ready=5)
    await r.fleet.step()
    r.launcher.started["fleet-1"].code = 1
    r.tick()
    await r.fleet.step()
    assert "emails: worker fleet-1 exited with code 1" in r.lines
    assert [w.id for w in r.fleet.active] == ["fleet-2"]


async def test_a_worker_that_does_not_drain_is_killed() -> None:
    r = rig(drains=False)
    r.store.stats = QueueStats(queue="emails", ready=5)
    await r.fleet.step()
    r.store.stats = QueueStats(queue="emails")
    r.tick(11)  # past idleSeconds
    assert (await r.fleet.step()).replicas == 0
    process = r.launcher.started["fleet-1"]
    assert process.signals == ["TERM"]
    r.tick(5 + KILL_GRACE_SECONDS + 1)
    r.fleet.reap()
    assert process.signals == ["TERM", "KILL"]
    r.fleet.reap()
    assert r.fleet.workers == {}


async def test_mode_off_runs_spec_replicas() -> None:
    m = manifest(mode="off")
    m = QueueManifest(m.name, m.spec.model_copy(update={"replicas": 2}))
    r = rig(m)
    r.store.stats = QueueStats(queue="emails", ready=500)
    assert (await r.fleet.step()).replicas == 2
    assert len(r.launcher.started) == 2


async def test_run_until_idle_scales_back_and_drains() -> None:
    r = rig()
    r.store.stats = QueueStats(queue="emails", ready=20)

    async def work_done() -> None:
        await asyncio.sleep(0.05)
        r.store.stats = QueueStats(queue="emails")

    task = asyncio.create_task(work_done())

    def clock() -> float:
        r.now[0] += 1.0  # every reading advances a second: idleSeconds passes quickly
        return r.now[0]

    r.fleet.clock = clock
    await r.fleet.run(asyncio.Event(), interval=0.01, until_idle=True)
    await task
    assert r.fleet.workers == {}
    assert any("scale from zero" in line for line in r.lines)
    assert any("scale to zero" in line for line in r.lines)
    assert r.lines[-1] == "emails: idle; stopping"


async def test_run_stops_on_event_and_drains() -> None:
    r = rig()
    r.store.stats = QueueStats(queue="emails", ready=20)
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.05, stop.set)
    await r.fleet.run(stop, interval=0.01)
    assert r.fleet.workers == {}
    assert all(p.signals == ["TERM"] for p in r.launcher.started.values())
    assert "draining 3 worker(s)" in r.lines[-1]


async def test_run_stops_after_duration() -> None:
    r = rig()
    await r.fleet.run(asyncio.Event(), interval=0.01, duration=0.0)
    assert r.lines == []


# --- command line and manifests ----------------------------------------------------------------


def test_worker_command() -> None:
    argv = worker_command(manifest(), "fleet-3")
    assert argv[:4] == [sys.executable, "-m", "slotfleet.cli.main", "worker"]
    text = " ".join(argv[4:])
    assert "--queue emails:async:10 --worker-id fleet-3" in text
    assert "--metrics-port 0" in text
    assert "--drain-timeout 5 --lease-seconds 15" in text
    assert text.endswith("--import examples.tasks")
    m = manifest()
    limited = QueueManifest(m.name, m.spec.model_copy(update={"rate_limit": RateLimit(count=5)}))
    assert "--rate-limit 5/1 --import" in " ".join(worker_command(limited, "w"))
    assert "--paused" not in argv


def test_a_paused_manifest_starts_paused_workers() -> None:
    """Regression: a local fleet ignored spec.paused (its workers fetched anyway); they
    now start with --paused, as a cluster's workers follow spec.paused."""
    m = manifest()
    paused = QueueManifest(m.name, m.spec.model_copy(update={"paused": True}))
    assert "--paused --import examples.tasks" in " ".join(worker_command(paused, "w"))


def test_local_workers_get_the_dsn_in_their_environment_not_their_argv() -> None:
    """Regression: the local fleet put --dsn on every worker's command line, where ps
    shows the password to every user of the machine."""
    dsn = "postgresql://app:planted-secret@db/app"
    launcher = SubprocessLauncher(manifest(), dsn, {"PATH": "/bin"})
    assert "planted-secret" not in " ".join(worker_command(launcher.manifest, "fleet-1"))
    assert launcher.environment()["SLOTFLEET_DSN"] == dsn
    assert launcher.environment()["PATH"] == "/bin"


def test_example_manifest_is_valid() -> None:
    m = load_queue_manifest(EXAMPLE)
    assert m.queue == "emails"
    assert m.spec.autoscaling.max_replicas == 5
    assert m.spec.executor.concurrency == 20


GOOD = """
apiVersion: v1
kind: Secret
metadata: {name: db}
---
apiVersion: slotfleet.dev/v1alpha1
kind: Queue
metadata: {name: emails}
spec:
  queueName: mail
  store: {secretRef: {name: db}}
"""


def test_a_secret_beside_the_queue_is_fine() -> None:
    assert parse_queue_manifest(GOOD).queue == "mail"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: [", "q.yaml: not valid YAML at line 1"),
        ("kind: Secret", "q.yaml: expected one document of kind Queue, found no"),
        (GOOD + "---" + GOOD.split("---", 1)[1], "found 2"),
        (GOOD.replace("slotfleet.dev/v1alpha1", "v1"), "apiVersion must be slotfleet.dev"),
        (GOOD.replace("{name: emails}", "{}"), "metadata.name is required"),
        (
            GOOD.replace("queueName: mail", "executor: {concurrency: 0}"),
            "q.yaml: spec: executor.concurrency: Input should be greater than or equal to 1",
        ),
        (GOOD.replace("queueName: mail", "bogus: 1"), "spec: bogus: Extra inputs"),
    ],
)
def test_bad_manifests_are_one_line(text: str, message: str) -> None:
    with pytest.raises(InvalidSettingsError) as info:
        parse_queue_manifest(text, "q.yaml")
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_cli_reports_a_bad_manifest_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "q.yaml"
    path.write_text(GOOD.replace("queueName: mail", "replicas: -1"))
    parser = Parser(prog="slotfleet")
    fleet_cmd.register(parser.add_subparsers(parser_class=Parser))
    args = parser.parse_args(["fleet", "-f", str(path), "--dsn", f"sqlite:///{tmp_path}/x.db"])
    assert args.handler(args) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"error: {path}: spec: replicas:")


def test_cli_reports_a_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = Parser(prog="slotfleet")
    fleet_cmd.register(parser.add_subparsers(parser_class=Parser))
    args = parser.parse_args(["fleet", "-f", str(tmp_path / "nope.yaml")])
    assert args.handler(args) == 1
    assert "nope.yaml: cannot read: No such file or directory" in capsys.readouterr().err


# --- --set overrides -------------------------------------------------------------------------


def test_set_overrides_dotted_spec_paths_with_yaml_values() -> None:
    overrides = [
        parse_override("autoscaling.idleSeconds=2"),
        parse_override("autoscaling.targetUtilization=1.0"),
        parse_override("executor.kind=threads"),
        parse_override("rateLimit.count=7"),  # a mapping the file does not have
        parse_override("imports=[examples.tasks, tests.fleet_tasks]"),
        parse_override("paused=false"),
    ]
    m = load_queue_manifest(EXAMPLE, overrides)
    assert m.spec.autoscaling.idle_seconds == 2
    assert m.spec.autoscaling.target_utilization == 1.0
    assert m.spec.autoscaling.max_replicas == 5  # untouched siblings stay
    assert m.spec.executor.kind.value == "threads"
    assert m.spec.executor.concurrency == 20
    assert m.spec.rate_limit is not None
    assert m.spec.rate_limit.count == 7
    assert m.spec.imports == ["examples.tasks", "tests.fleet_tasks"]
    assert load_queue_manifest(EXAMPLE).spec.autoscaling.idle_seconds == 60  # file unchanged


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("idleSeconds", "--set 'idleSeconds': expected KEY=VALUE"),
        ("autoscaling..idleSeconds=2", "expected KEY=VALUE with a dotted path"),
        ("=2", "expected KEY=VALUE"),
        ("autoscaling.idleSeconds=[", "--set 'autoscaling.idleSeconds=[': the value is not valid"),
        ("autoscaling.idleSeconds=soon", "spec: autoscaling.idleSeconds: Input should be"),
        ("autoscaling.idleSecs=2", "spec: autoscaling.idleSecs: Extra inputs"),
        ("executor.kind.name=x", "--set 'executor.kind.name=x': spec.executor.kind is not a"),
    ],
)
def test_bad_set_is_one_line(option: str, message: str) -> None:
    with pytest.raises(InvalidSettingsError) as info:
        load_queue_manifest(EXAMPLE, [parse_override(option)])
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_cli_reports_a_bad_set_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = Parser(prog="slotfleet")
    fleet_cmd.register(parser.add_subparsers(parser_class=Parser))
    sets = ["--set", "autoscaling.minReplicas=1", "--set", "autoscaling.maxReplicas=-3"]
    args = parser.parse_args(
        ["fleet", "-f", str(EXAMPLE), "--dsn", f"sqlite:///{tmp_path}/x.db", *sets]
    )
    assert args.set == ["autoscaling.minReplicas=1", "autoscaling.maxReplicas=-3"]
    assert args.handler(args) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"error: {EXAMPLE}: spec: autoscaling.maxReplicas:")


# --- retention ---------------------------------------------------------------------------------


async def test_retention_purges_on_the_first_tick_then_once_a_minute() -> None:
    m = manifest()
    kept = QueueManifest(m.name, m.spec.model_copy(update={"retention_seconds": 3600}))
    r = rig(kept)
    r.store.finished = 2500  # three batches
    await r.fleet.step()
    assert [(q, limit) for _, q, limit in r.store.purges] == [("emails", 1000)] * 3
    assert r.store.purges[0][0] == timedelta(hours=1)  # the store's clock decides what is old
    assert any("deleted 2500 job(s) finished over 3600s ago" in line for line in r.lines)
    r.tick(30)
    await r.fleet.step()
    assert len(r.store.purges) == 3  # not yet a minute
    r.tick(31)
    await r.fleet.step()
    assert len(r.store.purges) == 4


async def test_no_retention_no_purge() -> None:
    r = rig()
    r.store.finished = 10
    await r.fleet.step()
    assert r.store.purges == []


def test_the_fleet_says_what_of_a_pod_spec_it_cannot_use_locally() -> None:
    m = manifest()
    spec = QueueSpec.model_validate(
        {
            **m.spec.model_dump(by_alias=True, exclude_none=True),
            "env": [
                {"name": "PLAIN", "value": "1"},
                {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "t"}}},
            ],
            "envFrom": [{"configMapRef": {"name": "settings"}}],
        }
    )
    local = QueueManifest(m.name, spec)
    assert fleet_cmd.local_notes(local) == [
        "env TOKEN is valueFrom a Secret, ConfigMap or pod field: not set locally",
        "envFrom (Secrets, ConfigMaps) is for pods: not used locally",
    ]
    launcher = SubprocessLauncher(local, "sqlite:///x.db", {})
    assert launcher.environment() == {"PLAIN": "1", "SLOTFLEET_DSN": "sqlite:///x.db"}
    assert fleet_cmd.local_notes(manifest()) == []
