"""``slotfleet worker``: run a worker in this process until SIGTERM/SIGINT (or, with
``--burst``, until nothing is ready).

This module turns flags and environment into a :class:`~slotfleet.worker.Worker`,
installs the signal handlers (the worker itself installs none) and maps the end to an
exit code: 0 after a drain, 1 for ``error: <message>``, 2 for bad options.

What this module is not: the worker's logic lives in ``slotfleet.worker``; nothing here
is needed to embed a worker in another program.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib
import logging
import os
import secrets
import signal
import socket
import sys
import threading
import time
from typing import Any

from slotfleet.app.decorator import options_checked_later
from slotfleet.cli.common import add_dsn, guarded, port_arg, require_extra, run_async
from slotfleet.models import (
    FunctionPolicy,
    InvalidSettingsError,
    QueueSettings,
    RateLimit,
)
from slotfleet.store import DEFAULT_LEASE_SECONDS, dsn_from_env, open_store
from slotfleet.worker import CancelSource, MetricsServerConfig, Worker

log = logging.getLogger("slotfleet.worker")


def queue_arg(text: str) -> QueueSettings:
    """``--queue NAME[:EXECUTOR[:CONCURRENCY]]``."""
    try:
        return QueueSettings.parse(text)
    except InvalidSettingsError as exc:
        raise argparse.ArgumentTypeError(f"queue {text!r}: {exc}") from None


def rate_arg(text: str) -> RateLimit:
    """``--rate-limit COUNT[/PERIOD]``: COUNT starts per PERIOD seconds (default 1)."""
    count, _, period = text.partition("/")
    try:
        return RateLimit(count=int(count), period=float(period or 1))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not COUNT/PERIOD with COUNT >= 1 and PERIOD > 0 seconds (e.g. 10/1)"
        ) from None


def positive(kind: type[int] | type[float], minimum: float = 0.0) -> Any:
    def convert(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text} is below {minimum:g}")
        return value

    return convert


def default_worker_id() -> str:
    """``$SLOTFLEET_WORKER_ID`` as given; else the pod (or host) name, the pid and a
    random suffix, so a restarted container never inherits its predecessor's leases."""
    explicit = os.environ.get("SLOTFLEET_WORKER_ID", "").strip()
    if explicit:
        return explicit
    base = os.environ.get("POD_NAME", "").strip() or socket.gethostname()
    return f"{base}-{os.getpid()}-{secrets.token_hex(3)}"


def _apply(queue: QueueSettings, args: argparse.Namespace) -> QueueSettings:
    changes: dict[str, Any] = {}
    if args.polling_interval is not None:
        changes["polling_interval"] = args.polling_interval
    if args.rate_limit is not None:
        changes["rate_limit"] = args.rate_limit
    if args.paused:
        changes["paused"] = True
    if args.functions is not None:
        changes["functions"] = args.functions
    if not changes:
        return queue
    try:
        return dataclasses.replace(queue, **changes)
    except InvalidSettingsError as exc:
        raise InvalidSettingsError(f"queue {queue.name}: {exc}") from None


def _import_modules(names: list[str]) -> None:
    """Import the ``--import`` modules, the working directory first: ``slotfleet worker``
    finds a project's own modules when run from its root, as ``python -m`` does (and as
    the local fleet's workers, started with ``-m``, always did); jobs' functions resolve
    the same way."""
    here = os.getcwd()
    if here not in sys.path and "" not in sys.path:
        sys.path.insert(0, here)
    for name in names:
        try:
            with options_checked_later():  # see slotfleet.app.decorator
                importlib.import_module(name)
        except Exception as exc:
            raise InvalidSettingsError(f"--import {name}: {type(exc).__name__}: {exc}") from exc


def _leftover_threads() -> list[threading.Thread]:
    return [
        t
        for t in threading.enumerate()
        if t is not threading.main_thread() and not t.daemon and t.is_alive()
    ]


def _queue_resource_source(text: str | None) -> CancelSource | None:
    """``--queue-resource NS/NAME``: cancel requests and pause from that Queue resource
    (in a cluster); without it the worker polls the store."""
    if not text:
        return None
    try:
        from slotfleet.worker.kube_source import KubeQueueSource  # the kubernetes client
    except ModuleNotFoundError as exc:
        require_extra(exc, "operator", "--queue-resource")

    namespace, _, name = text.partition("/")
    if not namespace or not name:
        raise InvalidSettingsError(f"--queue-resource must be NAMESPACE/NAME, not {text!r}")
    return KubeQueueSource(namespace, name)


def _run_worker(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    queues = [_apply(q, args) for q in (args.queues or [QueueSettings(name="default")])]
    _import_modules(args.imports)
    store = open_store(args.dsn or dsn_from_env())
    metrics = MetricsServerConfig(host=args.metrics_host, port=args.metrics_port)
    worker = Worker(
        store,
        queues,
        worker_id=args.worker_id or default_worker_id(),
        max_slots=args.max_slots,
        lease_seconds=args.lease_seconds,
        heartbeat_interval=args.heartbeat_interval,
        drain_timeout=args.drain_timeout,
        metrics=metrics if args.metrics_port else None,
        cancel_source=_queue_resource_source(args.queue_resource),
    )

    def stop(signame: str) -> None:
        if worker.draining:
            log.info("%s: already draining", signame)
            return
        log.info("%s: draining (up to %gs)", signame, worker.drain_timeout)
        worker.request_stop()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop, sig.name)
        try:
            log.info(
                "worker %s serving %s",
                worker.worker_id,
                ", ".join(f"{q.name} ({q.executor.value})" for q in queues),
            )
            if any(q.functions is FunctionPolicy.ANY for q in queues):
                log.warning("jobs may name any importable callable (--functions any)")
            await worker.run(burst=args.burst)
        finally:
            await store.close()

    run_async(main())
    log.info("worker %s stopped", worker.worker_id)
    # Threads of jobs that ignored their cancel token would keep the interpreter from
    # exiting; their jobs were already handed back, so leave without them.
    deadline = time.monotonic() + 1.0
    while _leftover_threads() and time.monotonic() < deadline:
        time.sleep(0.05)
    if _leftover_threads():
        log.warning("leaving %d job threads behind", len(_leftover_threads()))
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    p = subparsers.add_parser(
        "worker",
        help="run a worker",
        description="Run jobs from one or more queues until SIGTERM/SIGINT, then drain.",
    )
    add_dsn(p)
    p.add_argument(
        "--queue",
        dest="queues",
        action="append",
        type=queue_arg,
        metavar="NAME[:EXECUTOR[:CONCURRENCY]]",
        help="queue to serve, e.g. emails:threads:8 (repeatable; default: default:async)",
    )
    p.add_argument(
        "--max-slots",
        type=positive(int, 1),
        help="cap on jobs run at once across all queues (slot metrics and heartbeats "
        "report no more than this per queue)",
    )
    p.add_argument(
        "--worker-id",
        help="worker id (default: $SLOTFLEET_WORKER_ID, else $POD_NAME or host, pid, random)",
    )
    p.add_argument(
        "--metrics-host",
        default=os.environ.get("POD_IP") or "127.0.0.1",
        help="address of /metrics, /healthz, /readyz (default: $POD_IP or 127.0.0.1)",
    )
    p.add_argument(
        "--metrics-port",
        type=port_arg,
        default=9464,
        help="port of /metrics, /healthz, /readyz (default 9464; 0 disables)",
    )
    p.add_argument(
        "--drain-timeout",
        type=positive(float),
        default=30.0,
        help="seconds running jobs may finish after SIGTERM before being handed back",
    )
    p.add_argument(
        "--lease-seconds",
        type=positive(float, 0.1),
        default=DEFAULT_LEASE_SECONDS,
        help="seconds a job's lease lasts; a dead worker's jobs return after this "
        f"(default {DEFAULT_LEASE_SECONDS:g})",
    )
    p.add_argument(
        "--heartbeat-interval",
        type=positive(float, 0.05),
        help="seconds between heartbeats (default: a third of the lease, at most 10)",
    )
    p.add_argument(
        "--polling-interval",
        type=positive(float, 0.01),
        help="seconds between fetches of an idle queue (default 1)",
    )
    p.add_argument(
        "--rate-limit",
        type=rate_arg,
        metavar="COUNT[/PERIOD]",
        help="job starts allowed per PERIOD seconds for each queue, across all workers",
    )
    p.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="import a task module before starting (repeatable)",
    )
    p.add_argument(
        "--functions",
        choices=[policy.value for policy in FunctionPolicy],
        help="which functions jobs may name: registered (only those decorated with @job; "
        "the default) or any (any importable callable, as Chancy runs)",
    )
    p.add_argument(
        "--queue-resource",
        metavar="NAMESPACE/NAME",
        help="take cancel requests and pause from this Queue resource (set by the operator)",
    )
    p.add_argument(
        "--paused",
        action="store_true",
        help="fetch nothing from these queues (what a Queue manifest's spec.paused means "
        "to a local fleet; 'slotfleet pause' pauses a queue for every worker instead)",
    )
    p.add_argument(
        "--burst", action="store_true", help="exit once nothing is ready and nothing runs"
    )
    p.add_argument(
        "--log-level",
        default="INFO",
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log level (default INFO)",
    )
    p.set_defaults(handler=guarded(_run_worker))
