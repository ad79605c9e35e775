"""``slotfleet fleet -f queue.yaml``: run a Queue manifest as local worker processes.

The command only wires things up: it reads the manifest, opens the store, installs the
SIGINT/SIGTERM handlers that start a drain, and hands over to
:class:`slotfleet.fleet.LocalFleet`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from typing import Any

from slotfleet.cli.common import add_dsn, guarded, run_async
from slotfleet.fleet import (
    LocalFleet,
    QueueManifest,
    SubprocessLauncher,
    load_queue_manifest,
    parse_override,
)
from slotfleet.models import InvalidSettingsError
from slotfleet.store import dsn_from_env, open_store
from slotfleet.store.dsn import redact_dsn


def _say(line: str) -> None:
    print(line, flush=True)


def local_notes(manifest: QueueManifest) -> list[str]:
    """What of the manifest a local fleet leaves out, one line each (only what is set)."""
    spec = manifest.spec
    notes = [
        f"env {var.name} is valueFrom a Secret, ConfigMap or pod field: not set locally"
        for var in spec.env
        if var.value_from is not None
    ]
    if spec.env_from:
        notes.append("envFrom (Secrets, ConfigMaps) is for pods: not used locally")
    return notes


async def _run(manifest: QueueManifest, dsn: str, args: argparse.Namespace) -> None:
    store = open_store(dsn)
    await store.open()
    try:
        fleet = LocalFleet(
            manifest=manifest,
            store=store,
            launcher=SubprocessLauncher(manifest, dsn, dict(os.environ)),
            say=_say,
            id_prefix=f"fleet-{os.getpid()}",
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        _say(
            f"{manifest.queue}: fleet of {manifest.spec.executor.kind.value} workers x"
            f" {manifest.spec.executor.concurrency} slots on {redact_dsn(dsn)}"
            f" (autoscaling {manifest.spec.autoscaling.mode.value})"
        )
        for line in local_notes(manifest):
            _say(f"{manifest.queue}: {line}")
        try:
            await fleet.run(
                stop, interval=args.interval, duration=args.duration, until_idle=args.until_idle
            )
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)
    finally:
        await store.close()


def _fleet(args: argparse.Namespace) -> int:
    if args.duration is not None and args.duration <= 0:
        raise InvalidSettingsError("--duration must be positive")
    if args.interval <= 0:
        raise InvalidSettingsError("--interval must be positive")
    overrides = [parse_override(text) for text in args.set or []]
    manifest = load_queue_manifest(args.file, overrides)
    dsn = args.dsn or dsn_from_env()
    run_async(_run(manifest, dsn, args))
    return 0


def _handler(args: argparse.Namespace) -> int:
    try:
        return guarded(_fleet)(args)
    except KeyboardInterrupt:  # a second Ctrl-C while draining
        print("interrupted", file=sys.stderr)
        return 130


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "fleet",
        help="run a Queue manifest as local worker processes, autoscaled",
        description="Run the workers a Queue manifest describes as processes on this "
        "machine, sized every interval by the same autoscaler the operator uses. "
        "SIGINT/SIGTERM drains every worker and exits.",
    )
    parser.add_argument("-f", "--file", required=True, help="Queue manifest (YAML, kind Queue)")
    parser.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a spec field before validation, as a dotted camelCase path and a "
        "YAML value (repeatable), e.g. --set autoscaling.idleSeconds=5",
    )
    add_dsn(parser)
    parser.add_argument(
        "--duration", type=float, default=None, metavar="S", help="stop after S seconds"
    )
    parser.add_argument(
        "--until-idle",
        action="store_true",
        help="stop once at minReplicas with nothing pending or running",
    )
    parser.add_argument(
        "--interval", type=float, default=1.0, metavar="S", help="seconds between decisions"
    )
    parser.set_defaults(handler=_handler)
