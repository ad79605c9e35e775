"""The one writer of a worker's command line (``slotfleet worker ...``).

The operator puts it in the worker container's command, the local fleet passes it to a
subprocess; both call :func:`worker_args`, so a setting reaches a worker the same way
and numbers are written the same way (``2`` not ``2.0``, ``0.5`` as is) wherever it
runs. ``escape`` is applied to every argument that comes from the spec (the operator
escapes ``$`` for the kubelet); the caller's own arguments (``worker_id``,
``metrics_host``) are left as they are, so ``$(POD_NAME)`` stays expandable.

What this module is not: it knows no program path (the caller prepends ``slotfleet`` or
``python -m slotfleet.cli.main``) and no DSN (a command line is visible in ``ps``; the
DSN travels in the environment).
"""

from __future__ import annotations

from collections.abc import Callable

from slotfleet.models.queues import FunctionPolicy
from slotfleet.models.resource import QueueSpec


def number(value: float) -> str:
    """``value`` as a command-line number: integers without a fraction."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _same(text: str) -> str:
    return text


def worker_args(
    spec: QueueSpec,
    queue: str,
    *,
    worker_id: str,
    metrics_host: str,
    metrics_port: int,
    queue_resource: str | None = None,
    paused: bool = False,
    escape: Callable[[str], str] = _same,
) -> list[str]:
    """``worker --queue ...`` for one worker of ``queue`` sized and set by ``spec``.

    ``queue_resource`` (``NS/NAME``) makes the worker follow its Queue resource
    (cancellations, pause); ``paused`` starts it paused (a local fleet has no Queue
    resource to follow)."""
    args = [
        "worker",
        "--queue", escape(f"{queue}:{spec.executor.kind.value}:{spec.executor.concurrency}"),
    ]  # fmt: skip
    if queue_resource is not None:
        args += ["--queue-resource", escape(queue_resource)]
    args += [
        "--worker-id", worker_id,
        "--metrics-host", metrics_host,
        "--metrics-port", str(metrics_port),
        "--drain-timeout", str(spec.drain_timeout_seconds),
        "--lease-seconds", str(spec.lease_seconds),
        "--polling-interval", number(spec.polling_interval),
    ]  # fmt: skip
    if spec.rate_limit is not None:
        args += ["--rate-limit", f"{spec.rate_limit.count}/{number(spec.rate_limit.period)}"]
    if paused:
        args.append("--paused")
    if spec.functions is not FunctionPolicy.REGISTERED:
        args += ["--functions", spec.functions.value]
    for module in spec.imports:
        args += ["--import", escape(module)]
    return args
