"""The chart's prometheus-adapter rules, evaluated by a real Prometheus scraping real
``slotfleet worker`` processes on loopback.

The ``metricsQuery`` expressions are taken from the rendered chart (``helm template`` with
``prometheusAdapter.rules.enabled``), filled in the way prometheus-adapter fills them for a
request (``pkg/naming/metrics_query.go``: metric selector matchers, then ``namespace="NS"``,
then ``pod="P"`` for one pod or ``pod=~"P1|P2"`` for several; ``GroupBy`` is the resource
label, ``pod``) and sent to Prometheus's ``/api/v1/query``.

The fleet is made deterministic: worker A (4 slots) runs alone until it holds 4 long jobs;
only then does worker B (4 slots) start, so every later job can only land on B. Each phase
checks the busy ratio per pod and the queue demand against the workers' own ``/metrics`` and
against fixed numbers, and that both RISE as jobs start (the point of inverting free slots).
The operator exports ``slotfleet_queue_pending`` (``tests/kube/test_chart.py`` reads it
from a helm-installed operator); this tier runs no operator, so a small in-test exporter
publishes the store's real ready count in the last phase, and both halves of the demand
rule's ``or`` are evaluated.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from slotfleet.models import Job
from slotfleet.store import Store, open_store
from tests.fixtures.prometheus import (
    PrometheusFactory,
    PrometheusServer,
    ScrapeTarget,
    free_port,
)
from tests.kube.controlplane import ensure_binaries
from tests.kube.helm import Helm, one

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "team-a"
QUEUE = "q"
SLOTS = 4
PODS = ("worker-a", "worker-b")


# ------------------------------------------------------------ the adapter's side


def adapter_rules(tmp_path: Path) -> dict[str, Any]:
    """The prometheus-adapter config from the rendered chart's ConfigMap."""
    helm = Helm.from_bin_dir(ensure_binaries(), tmp_path / "helm")
    docs = helm.template({"prometheusAdapter": {"rules": {"enabled": True}}})
    config_map = one(docs, "ConfigMap", "sf-slotfleet-prometheus-adapter-rules")
    return dict(yaml.safe_load(config_map["data"]["config.yaml"]))


def quoted(value: str) -> str:
    """Go's ``%q`` for the plain label values used here."""
    assert re.fullmatch(r"[A-Za-z0-9_.|-]*", value), value
    return f'"{value}"'


def fill(template: str, *, series: str, matchers: Sequence[str], group_by: str) -> str:
    query = template.replace("<<.Series>>", series)
    query = query.replace("<<.LabelMatchers>>", ",".join(matchers))
    query = query.replace("<<.GroupBy>>", group_by)
    assert "<<" not in query, f"unfilled template variable in {query}"
    return query


def pods_query(rule: dict[str, Any], namespace: str, pods: Sequence[str]) -> str:
    """``metricsQuery`` as the adapter builds it for pods ``pods`` in ``namespace``."""
    pod = f"pod={quoted(pods[0])}" if len(pods) == 1 else f"pod=~{quoted('|'.join(pods))}"
    return fill(
        rule["metricsQuery"],
        series="slotfleet_slots_total",
        matchers=[f"namespace={quoted(namespace)}", pod],
        group_by="pod",
    )


def external_query(rule: dict[str, Any], namespace: str, selector: dict[str, str]) -> str:
    """``metricsQuery`` as the adapter builds it for an external metric request."""
    matchers = [f"{k}={quoted(v)}" for k, v in sorted(selector.items())]
    return fill(
        rule["metricsQuery"],
        series="slotfleet_slots_total",
        matchers=[*matchers, f"namespace={quoted(namespace)}"],
        group_by="",
    )


# --------------------------------------------------------------- the fleet's side


class Fleet:
    """Worker subprocesses (own process groups), killed by PID at the end."""

    def __init__(self, dsn: str, tmp_path: Path) -> None:
        self.dsn = dsn
        self.tmp_path = tmp_path
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.ports: dict[str, int] = {pod: free_port() for pod in PODS}

    def start(self, pod: str) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        argv = [
            sys.executable,
            "-m",
            "slotfleet.cli.main",
            "worker",
            "--dsn",
            self.dsn,
            "--queue",
            f"{QUEUE}:async:{SLOTS}",
            "--polling-interval",
            "0.1",
            "--worker-id",
            pod,
            "--metrics-host",
            "127.0.0.1",
            "--metrics-port",
            str(self.ports[pod]),
            "--import",
            "tests.tasks",
        ]
        with (self.tmp_path / f"{pod}.log").open("wb") as log:
            self.procs[pod] = subprocess.Popen(
                argv,
                cwd=self.tmp_path,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def log(self, pod: str) -> str:
        return (self.tmp_path / f"{pod}.log").read_text(errors="replace")[-3000:]

    def url(self, pod: str, path: str) -> str:
        return f"http://127.0.0.1:{self.ports[pod]}{path}"

    def slots(self, pod: str) -> tuple[float, float]:
        """``(total, free)`` for the queue, from the worker's own ``/metrics``."""
        with urllib.request.urlopen(self.url(pod, "/metrics"), timeout=5) as response:
            text = response.read().decode()
        values = {}
        for name in ("slotfleet_slots_total", "slotfleet_slots_free"):
            match = re.search(rf'^{name}{{executor="async",queue="{QUEUE}"}} (\S+)$', text, re.M)
            assert match, f"{name} missing from {pod}'s /metrics:\n{text}"
            values[name] = float(match.group(1))
        return values["slotfleet_slots_total"], values["slotfleet_slots_free"]

    def has_free(self, pod: str, free: int) -> Callable[[], bool]:
        return lambda: self.slots(pod)[1] == free

    def ready(self, pod: str) -> bool:
        proc = self.procs[pod]
        assert proc.poll() is None, f"{pod} exited {proc.returncode}:\n{self.log(pod)}"
        try:
            with urllib.request.urlopen(self.url(pod, "/readyz"), timeout=2) as response:
                return int(response.status) == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=15)


class PendingExporter:
    """Stands in for the operator's ``slotfleet_queue_pending``: serves nothing until
    :meth:`publish` is called (the 'not exported' case)."""

    def __init__(self) -> None:
        self.body = b""
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.end_headers()
                self.wfile.write(exporter.body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def publish(self, pending: int) -> None:
        self.body = (
            "# TYPE slotfleet_queue_pending gauge\n"
            f'slotfleet_queue_pending{{queue="{QUEUE}"}} {pending}\n'
        ).encode()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(f"sqlite:///{tmp_path / 'jobs.db'}", tmp_path)
    yield f
    f.stop()


@pytest.fixture
def pending_exporter() -> Iterator[PendingExporter]:
    exporter = PendingExporter()
    yield exporter
    exporter.close()


def until(what: str, check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f}s waiting for {what}"
        time.sleep(0.1)


def by_label(samples: list[dict[str, Any]], label: str) -> dict[str, float]:
    return {s["metric"].get(label, ""): float(s["value"][1]) for s in samples}


# ------------------------------------------------------------------------ the test


async def test_adapter_rules_evaluate_to_busy_ratio_and_demand(
    tmp_path: Path,
    fleet: Fleet,
    pending_exporter: PendingExporter,
    prometheus_factory: PrometheusFactory,
) -> None:
    config = adapter_rules(tmp_path)
    [ratio_rule] = config["rules"]
    # (the busy-pods rule only passes the operator's gauge through; tests/kube/test_hpa.py
    # shows an HPA keeping that floor)
    demand_rule = next(
        r for r in config["externalRules"] if r["name"]["as"] == "slotfleet_queue_demand"
    )
    assert ratio_rule["name"]["as"] == "slotfleet_slots_busy_ratio"
    ratio_all = pods_query(ratio_rule, NAMESPACE, PODS)
    ratio_b = pods_query(ratio_rule, NAMESPACE, ["worker-b"])
    demand = external_query(demand_rule, NAMESPACE, {"queue": QUEUE})

    store = open_store(fleet.dsn)
    await store.open()
    try:
        prometheus = prometheus_factory(
            [
                *(
                    ScrapeTarget(
                        f"127.0.0.1:{fleet.ports[pod]}", {"namespace": NAMESPACE, "pod": pod}
                    )
                    for pod in PODS
                ),
                ScrapeTarget(
                    pending_exporter.address, {"namespace": NAMESPACE, "pod": "backlog-exporter"}
                ),
            ]
        )
        # Worker A alone takes 4 long jobs; B starts only when A is full.
        fleet.start("worker-a")
        until("worker-a ready", lambda: fleet.ready("worker-a"))
        await enqueue(store, 4)
        until("worker-a busy 4/4", lambda: fleet.slots("worker-a") == (4.0, 0.0))
        fleet.start("worker-b")
        until("worker-b ready", lambda: fleet.ready("worker-b"))

        seen: list[tuple[dict[str, float], float]] = []
        phases = [
            # (jobs to enqueue now, expected busy on B, pending published or None)
            (0, 0, None),
            (2, 2, None),
            (1, 3, None),
            (3, 4, 2),  # B fills up; 2 jobs stay ready in the store
        ]
        for new_jobs, busy_b, pending in phases:
            await enqueue(store, new_jobs)
            until(f"worker-b busy {busy_b}", fleet.has_free("worker-b", SLOTS - busy_b))
            if pending is not None:
                [stats] = await store.queue_stats(QUEUE)
                assert stats.ready == pending
                pending_exporter.publish(stats.ready)
            own = {pod: fleet.slots(pod) for pod in PODS}
            assert own == {"worker-a": (4.0, 0.0), "worker-b": (4.0, 4.0 - busy_b)}
            await asyncio.to_thread(scraped, prometheus, own, pending)

            ratios = by_label(prometheus.query(ratio_all), "pod")
            expected = {pod: (total - free) / total for pod, (total, free) in own.items()}
            assert ratios == pytest.approx(expected), ratio_all
            assert ratios == pytest.approx({"worker-a": 1.0, "worker-b": busy_b / 4})
            assert by_label(prometheus.query(ratio_b), "pod") == pytest.approx(
                {"worker-b": busy_b / 4}
            )

            [sample] = prometheus.query(demand)
            assert sample["metric"] == {"namespace": NAMESPACE, "queue": QUEUE}, demand
            busy = sum(total - free for total, free in own.values())
            assert float(sample["value"][1]) == busy + (pending or 0)
            assert float(sample["value"][1]) == 4 + busy_b + (pending or 0)
            seen.append((ratios, float(sample["value"][1])))

        # The inversion: as jobs start, the HPA's inputs rise (they never fall).
        b_ratios = [r["worker-b"] for r, _ in seen]
        averages = [sum(r.values()) / len(r) for r, _ in seen]
        demands = [d for _, d in seen]
        assert b_ratios == [0.0, 0.5, 0.75, 1.0]
        assert averages == [0.5, 0.75, 0.875, 1.0]
        assert demands == [4.0, 6.0, 7.0, 10.0]
    finally:
        await store.close()


async def enqueue(store: Store, count: int) -> None:
    if count:
        await store.enqueue(
            [
                Job(func="tests.tasks:async_sleep", queue=QUEUE, kwargs={"seconds": 600})
                for _ in range(count)
            ]
        )


def scraped(
    prometheus: PrometheusServer, own: dict[str, tuple[float, float]], pending: int | None
) -> None:
    """Wait until Prometheus's latest samples equal what the workers (and the backlog
    exporter) serve now, so the rules see this phase and not the previous one."""

    def caught_up() -> bool:
        total = by_label(prometheus.query("slotfleet_slots_total"), "pod")
        free = by_label(prometheus.query("slotfleet_slots_free"), "pod")
        backlog = prometheus.query("slotfleet_queue_pending")
        return (
            total == {pod: t for pod, (t, _) in own.items()}
            and free == {pod: f for pod, (_, f) in own.items()}
            and [float(s["value"][1]) for s in backlog] == ([] if pending is None else [pending])
        )

    until("Prometheus to scrape the current slots", caught_up, timeout=30)
