"""``slotfleet top``: the dashboard's overview in a terminal, redrawn in place (rich's
``Live``), for a bastion host without a browser.

It renders the same :class:`~slotfleet.dashboard.views.Overview` the web page does:
totals and a sparkline of the jobs finished per bucket, queues (backlog by state, slots,
throughput, failure rate), workers (slots per queue, heartbeat age, draining).

What this module is not: a second set of figures. Everything shown comes from ``views``.
"""

from __future__ import annotations

import asyncio

from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from slotfleet.app import App
from slotfleet.dashboard.charts import sparkline
from slotfleet.dashboard.settings import ViewSettings
from slotfleet.dashboard.views import Overview, overview
from slotfleet.models import StoreUnavailableError


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _age(seconds: float) -> str:
    return f"{seconds:.0f}s" if seconds < 120 else f"{seconds / 60:.0f}m"


def _table(title: str) -> Table:
    return Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)


def render(ov: Overview) -> RenderableType:
    t = ov.throughput
    minutes = t.window_seconds // 60
    head = Text.assemble(
        ("slotfleet top", "bold"),
        f"  {ov.store}  {ov.now:%Y-%m-%d %H:%M:%S} UTC",
    )
    totals = t.totals
    spark = Text.assemble(
        f"last {minutes} min: ",
        (f"{totals.succeeded} succeeded", "green"),
        ", ",
        (f"{totals.failed} failed", "red" if totals.failed else ""),
        f", {totals.cancelled} cancelled; {totals.per_minute:.1f} jobs/min; failure rate ",
        (_rate(totals.failure_rate), "red" if totals.failed else ""),
        "\n",
        (sparkline([b.total for b in t.buckets]), "green"),
        f"  (per {t.bucket_seconds}s)",
    )
    # Two narrow tables rather than one wide one, without vertical rules: both fit an
    # 80-column terminal (a bastion host's) with whole headers; a long name wraps.
    backlog = _table("queues")
    backlog.add_column("queue", overflow="fold")
    for name in ("ready", "scheduled", "running", "succeeded", "failed", "cancelled"):
        backlog.add_column(name, justify="right", no_wrap=True)
    capacity = _table("slots and throughput")
    capacity.add_column("queue", overflow="fold")
    for name in ("workers", "busy", "slots", "free", "jobs/min", "failure"):
        capacity.add_column(name, justify="right", no_wrap=True)
    for q in ov.queues:
        name = f"{q.queue} (paused)" if q.paused else q.queue
        backlog.add_row(
            name,
            str(q.ready),
            str(q.scheduled),
            str(q.running),
            str(q.succeeded),
            Text(str(q.failed), style="red" if q.failed else ""),
            str(q.cancelled),
        )
        capacity.add_row(
            name,
            str(q.workers),
            str(q.slots_busy),
            str(q.slots_total),
            str(q.slots_free),
            f"{q.recent.per_minute:.1f}",
            _rate(q.recent.failure_rate),
        )
    workers = _table("workers")
    for name in ("worker", "host/pid", "busy/total per queue"):
        workers.add_column(name, overflow="fold")
    for name in ("busy", "free", "heartbeat"):
        workers.add_column(name, justify="right", no_wrap=True)
    workers.add_column("state", no_wrap=True)
    for w in ov.workers:
        state = Text("no heartbeat", "red") if w.stale else Text("draining", "yellow")
        if not w.stale and not w.draining:
            state = Text("working", "green")
        workers.add_row(
            w.worker_id,
            f"{w.hostname}/{w.pid}",
            " ".join(f"{s.queue} {s.busy}/{s.total}" for s in w.slots),
            str(w.slots_busy),
            str(w.slots_free),
            _age(w.heartbeat_age_seconds),
            state,
        )
    tables: list[RenderableType] = [backlog, capacity] if ov.queues else [Text("no queues yet")]
    parts: list[RenderableType] = [head, spark, *tables]
    parts.append(workers if ov.workers else Text("no worker is sending heartbeats"))
    return Group(*parts)


async def frame(app: App, view: ViewSettings) -> RenderableType:
    try:
        return render(await overview(app, view))
    except StoreUnavailableError as exc:
        return Text(f"store unreachable: {exc} (retrying)", style="red")


async def run(
    app: App, view: ViewSettings, *, interval: float, once: bool, console: Console
) -> None:
    """Draw once (``once``) or redraw every ``interval`` seconds until interrupted."""
    if once:
        console.print(await frame(app, view))
        return
    with Live(console=console, auto_refresh=False, transient=False) as live:
        while True:
            live.update(await frame(app, view), refresh=True)
            await asyncio.sleep(interval)
