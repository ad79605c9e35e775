"""Run one slotfleet worker the way ``slotfleet worker`` does, for when the CLI command
is not available (the harness prefers the real CLI). Not part of slotfleet.

    python -m bench.sf_worker --dsn DSN --queue bench:async:100 [--burst]
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from slotfleet.models import QueueSettings
from slotfleet.store import open_store
from slotfleet.worker.worker import Worker


async def main(dsn: str, queues: list[str], burst: bool) -> None:
    store = open_store(dsn)
    worker = Worker(store, [QueueSettings.parse(q) for q in queues])
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.request_stop)
    try:
        await worker.run(burst=burst)
    finally:
        await store.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--queue", action="append", required=True)
    parser.add_argument("--burst", action="store_true")
    args = parser.parse_args()
    asyncio.run(main(args.dsn, args.queue, args.burst))
