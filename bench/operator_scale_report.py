"""The markdown of ``bench/operator_scale.py``: issue 13's table, one row per size, and
the notes that say how each figure was taken. Pure: no I/O, no clock."""

from __future__ import annotations

import argparse
from typing import Any

from bench.common import command_line, fmt

Json = dict[str, Any]

HEADER = (
    "| Queues | all Ready | operator RSS | operator CPU | API requests/s (idle) "
    "| DB statements/s (idle) | burst → scale-up | cancel → in status | restart → all observed |"
)
RULE = "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"


def _seconds(value: float | None, bound: float | None = None) -> str:
    if value is None:
        return f"> {bound:.0f} s" if bound is not None else "-"
    return f"{value:.1f} s"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def _spread(figure: Json | None, bound: float | None) -> str:
    if not figure:
        return "-"
    median = figure.get("median")
    if median is None:
        return f"> {bound:.0f} s" if bound is not None else "-"
    text = f"{median:.1f} s ({figure['min']:.1f}-{figure['max']:.1f})"
    if figure.get("missed"):
        text += f", {figure['missed']} > {bound:.0f} s"
    return text


def row_cells(row: Json) -> list[str]:
    n = int(row["queues"])
    ready = _seconds(row.get("ready_s"), row.get("ready_bound_s"))
    if row.get("ready_s") is None and "ready_count" in row:
        ready += f" ({row['ready_count']} of {n})"
    restart = _seconds(row.get("restart_s"), row.get("restart_bound_s"))
    if row.get("restart_s") is None and "restart_count" in row:
        restart += f" ({row['restart_count']} of {n})"
    rss = row.get("rss_mib")
    cpu = row.get("cpu_pct")
    api = row.get("api_rps")
    if api is not None and row.get("api_rejected"):
        api_text = f"{fmt(api)} ({fmt(row['api_rejected'])} rejected)"
    else:
        api_text = fmt(api)
    bound = row.get("step_bound_s")
    return [
        f"{n:,}",
        ready,
        f"{fmt(rss)} MiB" if rss is not None else "-",
        f"{fmt(cpu)} %" if cpu is not None else "-",
        api_text,
        fmt(row.get("db_sps")),
        _spread(row.get("burst"), bound),
        _spread(row.get("cancel"), bound),
        restart,
    ]


def row_text(row: Json) -> str:
    return "| " + " | ".join(row_cells(row)) + " |"


def render(rows: list[Json], facts: Json, args: argparse.Namespace) -> str:
    lines = [
        f"## Operator at scale (issue 13): {args.label}",
        "",
        f"Run {facts.get('date', '?')} at git {facts.get('git', '?')} by",
        "",
        f"    {command_line()}",
        "",
        f"Machine: {facts.get('nproc', '?')} cores ({facts.get('cpu', '?')}), load average"
        f" at the start {facts.get('loadavg_start', '?')} (the last column below gives it at"
        " the end of each size: anything else running on the machine shows there, and makes"
        " the figures noisy). Each size in a fresh cluster: one"
        " PostgreSQL, the Go-built etcd + kube-apiserver + kube-controller-manager on the"
        " same cores, no node; one `slotfleet operator` with the chart's default flags as the"
        " chart's ServiceAccount. Queues: `autoscaling.mode: operator`, `minReplicas: 0`,"
        " one shared Secret/DSN, nothing queued.",
        "",
        HEADER,
        RULE,
        *(row_text(r) for r in rows),
        "",
        "| Queues | created in | all Ready condition | all observedGeneration | operator live in "
        "| restarted live in | API requests per new Queue | their rate | quiet after "
        "| mean APF wait (idle) | wall time | load average at the end |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {int(r['queues']):,} | {_seconds(r.get('created_s'))} "
            f"| {_seconds(r.get('ready_condition_s'))} | {_seconds(r.get('ready_generation_s'))} "
            f"| {_seconds(r.get('first_live_s'))} | {_seconds(r.get('live_s'))} "
            f"| {fmt(r.get('create_requests_per_queue'), 1)} | {fmt(r.get('create_rps'))}/s "
            f"| {_seconds(r.get('quiet_s'))} | {_ms(r.get('apf_wait_ms'))} "
            f"| {_seconds(r.get('wall_s'))} "
            f"| {r.get('loadavg_end', '?')} |"
        )
    errors = [f"- {int(r['queues']):,} Queues: {r['error']}" for r in rows if r.get("error")]
    if errors:
        lines += ["", "Incomplete:", *errors]
    lines += [
        "",
        "How each figure is taken (see `bench/operator_scale.py`'s docstring): all Ready ="
        " first create -> every Queue `Ready=True`, `StoreReachable=True` and"
        " `observedGeneration == generation` (polled by a list, the figure's resolution is"
        " the poll period; the second table shows when each half first held for every Queue);"
        " API requests per new Queue = the operator's requests from the first create to all"
        " Ready, over the number of Queues (their rate: over that time);"
        " the idle window starts once the operator made no API request for 5 s after the"
        " settle wait (quiet after = from the end of the settle wait);"
        " RSS = VmRSS at the end of the idle window; CPU = user + system"
        " over the idle window, % of one core; API requests/s = the API server's"
        " `apiserver_flowcontrol_dispatched_requests_total` under a FlowSchema matching only"
        " the operator's ServiceAccount (its mean wait in APF's queues beside: a wait means"
        " the API server held the operator back); DB statements/s = `pg_stat_statements`"
        " calls of the DSN's role (BEGIN/COMMIT included);"
        " burst = enqueue commit -> `spec.replicas` > 0;"
        " cancel = `request_cancel` of a claimed job -> the job in `status.cancellations`;"
        " burst and cancel are median (min-max) over"
        f" {args.repeats} Queues; restart = spawn of a new operator -> every Queue's"
        " `status.paused` showing a pause made in the store while it was down.",
    ]
    return "\n".join(lines)
