"""The figures of ``bench/autoscale.py``: what a run's samples say, and the markdown
table it writes to docs/benchmarks.md. Pure: no cluster, no clock."""

from __future__ import annotations

import argparse
import itertools
from dataclasses import dataclass, field
from typing import Any

from bench.common import command_line, fmt, loadavg, median_range


@dataclass
class Sample:
    at: float
    replicas: int
    ready: int
    pods: int


@dataclass
class Run:
    burst_at: float
    samples: list[Sample] = field(default_factory=list)
    jobs: list[tuple[str, str, int, float | None]] = field(default_factory=list)
    """(to, state, attempts, completed_at epoch seconds)."""


def _first(samples: list[Sample], after: float, test: Any) -> float | None:
    for s in samples:
        if s.at >= after and test(s):
            return s.at
    return None


def _since(at: float | None, origin: float | None) -> float:
    return float("nan") if at is None or origin is None else at - origin


def summarize(run: Run, expected: int) -> dict[str, Any]:
    samples, t0 = run.samples, run.burst_at
    peak = max((s.replicas for s in samples), default=0)
    requested = _first(samples, t0, lambda s: s.replicas > 0)
    ready = _first(samples, t0, lambda s: peak > 0 and s.ready >= peak)
    shorts = [j[3] for j in run.jobs if j[0].startswith("short") and j[3] is not None]
    everything = [j[3] for j in run.jobs if j[3] is not None]
    shorts_done = max(shorts) if shorts else None
    all_done = max(everything) if len(everything) == len(run.jobs) and everything else None
    peak_at = _first(samples, t0, lambda s: s.replicas == peak)
    rising = [s.replicas for s in samples if s.at >= t0 and (peak_at is None or s.at <= peak_at)]
    steps = sum(1 for a, b in itertools.pairwise(rising) if b > a)
    down = _first(samples, peak_at or t0, lambda s: 0 < s.replicas < peak or s.replicas == 0)
    zero = _first(samples, all_done or t0, lambda s: s.replicas == 0)
    gone = _first(samples, all_done or t0, lambda s: s.pods == 0)
    killed = sum(1 for j in run.jobs if j[1] != "succeeded" or j[2] > 1)
    return {
        "jobs": len(run.jobs),
        "expected_jobs": expected,
        "peak_replicas": peak,
        "burst_to_requested_s": _since(requested, t0),
        "burst_to_ready_s": _since(ready, t0),
        "rescales_to_peak": steps,
        "shorts_done_to_scale_down_s": _since(down, shorts_done),
        "all_done_to_zero_s": _since(zero, all_done),
        "all_done_to_no_pods_s": _since(gone, all_done),
        "killed": killed + (expected - len(run.jobs)),
        "replicas_timeline": _timeline(samples, t0),
    }


def _timeline(samples: list[Sample], t0: float) -> list[tuple[float, int, int, int]]:
    out: list[tuple[float, int, int, int]] = []
    for s in samples:
        row = (round(s.at - t0, 2), s.replicas, s.ready, s.pods)
        if not out or out[-1][1:] != row[1:]:
            out.append(row)
    return out


FIGURES = [
    ("burst_to_requested_s", "burst -> more pods requested (Queue `spec.replicas` raised)"),
    ("rescales_to_peak", "rescales from the burst to the peak (`spec.replicas` increases)"),
    ("burst_to_ready_s", "burst -> all requested pods Ready"),
    ("shorts_done_to_scale_down_s", "last short job done -> first scale-down"),
    ("all_done_to_zero_s", "last job done -> `spec.replicas` 0"),
    ("all_done_to_no_pods_s", "last job done -> no pod left"),
]

WHAT_SETS_IT = {
    "burst_to_requested_s": "operator: one `--interval` tick; hpa: operator tick + scrape "
    "interval + HPA sync period (+ the adapter's query), all waits that add up",
    "rescales_to_peak": "hpa: the demand metric asks for the whole burst in one pass; a "
    "pass that saw part of it adds a step",
    "burst_to_ready_s": "the above plus pod start-up",
    "shorts_done_to_scale_down_s": "the 3 s stabilization window plus: operator, one or two "
    "ticks; hpa, a scrape and a sync period",
    "all_done_to_zero_s": "operator: `idleSeconds` 5; hpa: the 3 s window (HPAs have no "
    "idle time), a scrape, a sync period",
    "all_done_to_no_pods_s": "the above plus the drain of the last pod",
}


def _cell(results: list[dict[str, Any]], key: str) -> str:
    if not results:
        return "not run"
    median, low, high = median_range([float(r[key]) for r in results])
    digits = 0 if key == "rescales_to_peak" else 1
    return f"{fmt(median, digits)} ({fmt(low, digits)}-{fmt(high, digits)})"


def render(results: list[dict[str, Any]], facts: dict[str, Any], args: argparse.Namespace) -> str:
    interval = (
        "default (2 s)" if args.operator_interval is None else f"{args.operator_interval:g} s"
    )
    sync = "15 s, the default" if args.hpa_sync_period is None else f"{args.hpa_sync_period:g} s"
    by_mode = {m: [r for r in results if r["mode"] == m] for m in ("operator", "hpa")}
    if args.node == "real":
        title = "## Autoscaling (operator mode) on a real node"
        where = (
            "A real kubelet, containerd + runc, kube-scheduler and kube-proxy "
            "(`tests/node/cluster.py`) beside kube-apiserver, etcd and "
            "kube-controller-manager; `slotfleet operator` installed by `helm install` as a "
            "pod from the image built from the Dockerfile (chart defaults: `--interval` 2 s), "
            "workers as containers from `examples/Dockerfile`'s image, PostgreSQL on the "
            "node's bridge. Ready includes scheduling, the pod sandbox, the container's "
            "start-up and the kubelet's first readiness probe. HPA mode is not run there."
        )
    else:
        title = "## Autoscaling: HPA mode beside operator mode"
        where = (
            "A real kube-apiserver, etcd and kube-controller-manager on loopback (HPA sync "
            f"period {sync}), worker pods run as local processes by the test node, a "
            f"throwaway PostgreSQL, `slotfleet operator` with `--interval` {interval}. HPA "
            "mode adds Debian's Prometheus scraping the workers and the operator every "
            f"{args.scrape_interval:g} s and prometheus-adapter v0.12.0 with the chart's "
            "rules (`tests/kube/metrics_pipeline.py`)."
        )
    lines = [
        title,
        "",
        f"Command (from the repository root): `{command_line()}`",
        "",
        f"Date: {facts['date']} · git {facts['git']} · {facts['nproc']} CPUs · Python "
        f"{facts['python']} · PostgreSQL {facts['postgres']} · load average at start "
        f"{facts['loadavg_start']}, at end {loadavg()}",
        "",
        f"{len(by_mode['operator'])} operator-mode and {len(by_mode['hpa'])} HPA-mode run(s), "
        "alternating; each cell is the median with the range in brackets, in seconds. "
        f"{where} Queue: 2 slots a pod, targetUtilization 1.0, minReplicas 0, maxReplicas "
        f"{args.max_replicas}, scaleDownStabilizationSeconds 3 (operator mode: idleSeconds "
        "5), at zero before the burst (HPA mode: scaled there by the HPA), which comes a "
        f"random 0-{args.burst_jitter:g} s later. Burst: {args.short} jobs of "
        f"{args.short_seconds:g} s and {args.long} of {args.long_seconds:g} s "
        "(`examples.tasks:send_email`), enqueued at once; the fleet scales down while the "
        "long jobs still run.",
        "",
        "| figure | operator | hpa | what sets it |",
        "|---|---:|---:|---|",
    ]
    for key, label in FIGURES:
        cells = " | ".join(_cell(by_mode[m], key) for m in ("operator", "hpa"))
        lines.append(f"| {label} | {cells} | {WHAT_SETS_IT[key]} |")
    killed = " | ".join(
        f"{sum(r['killed'] for r in rs)} of {sum(r['expected_jobs'] for r in rs)}"
        for rs in by_mode.values()
    )
    peaks = {m: sorted({r["peak_replicas"] for r in rs}) for m, rs in by_mode.items()}
    lines += [
        "| jobs killed or lost by scale-down (state not succeeded, or attempts > 1) | "
        f"{killed} | |",
        "",
        f"Peak replicas: operator {peaks['operator']}, hpa {peaks['hpa']}. In HPA mode a "
        "change reaches the HPA after up to an operator tick (the backlog gauge), a scrape "
        f"({args.scrape_interval:g} s here) and an HPA sync period ({sync}), each a wait "
        "of random phase: the spread of the HPA column is mostly that. A shorter "
        "scrape interval or sync period shortens it by as much. The scale-down and zero "
        "figures are the configured windows plus what each mode waits for; with the "
        "defaults users get (60 s window, 300 s idle) they are that much longer by design. "
        "For comparison, KEDA polls every 30 s (`pollingInterval`) and waits 300 s "
        "(`cooldownPeriod`) before zero: its documented defaults, not measured here.",
    ]
    return "\n".join(lines)
