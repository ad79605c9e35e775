"""Run one Chancy worker until SIGTERM (inside the Chancy benchmark virtualenv).

The queues are declared by the harness before this starts (see compare_chancy.py);
this only starts ``chancy.worker.Worker`` with the same application settings.
Not part of slotfleet.

    python -m bench.chancy_worker --dsn DSN
"""

from __future__ import annotations

import argparse
import asyncio
import logging

from chancy import Chancy, Worker  # type: ignore[import-not-found]


def make_app(dsn: str) -> Chancy:
    """The application both the harness and the worker use: notifications on, the
    default plugins, Chancy's logger at WARNING (its INFO logs a line per job)."""
    log = logging.getLogger("chancy.bench")
    log.setLevel(logging.WARNING)
    log.addHandler(logging.StreamHandler())
    return Chancy(dsn, notifications=True, log=log)


async def main(dsn: str) -> None:
    async with make_app(dsn) as chancy:
        worker = Worker(chancy, register_signal_handlers=True, shutdown_timeout=30)
        await worker.start()
        await worker.wait_for_shutdown()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--dsn", required=True)
    args = parser.parse_args()
    asyncio.run(main(args.dsn))
