"""``slotfleet migrate``: bring a job store's schema up to this release and exit.

Every process that opens a store migrates it first (workers, the operator, the client
commands), so this command is never required. It makes the step explicit where that
helps: before upgrading the operator and rolling the workers on a large table, as a
Kubernetes Job or by hand, so the online index builds of a release run (and are watched,
in the log lines on stderr) before anything else of the release starts. It waits for a
migration another process is running, as any opener does.

What this module is not: it knows no migration; the stores apply their own.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from slotfleet.app import App
from slotfleet.cli.common import add_dsn, guarded, run_async


def _migrate(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    async def main() -> None:
        async with App(args.dsn):
            pass

    run_async(main())
    print("the job store's schema is up to date")
    return 0


def register(commands: Any) -> None:
    p = commands.add_parser(
        "migrate",
        help="apply the job store's missing migrations and exit",
        description="Apply the job store's missing migrations (what every worker and the "
        "operator do when they start) and exit; wait for another process's migration "
        "first. Index builds on PostgreSQL run online: jobs keep flowing.",
    )
    add_dsn(p)
    p.set_defaults(handler=guarded(_migrate))
