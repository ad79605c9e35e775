"""Store hot path on PostgreSQL: enqueue_many then an in-process async burst drain.

``python bench/hotpath.py [--runs N] [TREE ...]`` starts a throwaway PostgreSQL
(``bench.pg``), then for each run and each TREE in turn (interleaved: A B A B ...) runs
a child process with TREE first on ``sys.path`` (a directory holding a ``slotfleet``
package; ``.`` is the working tree) on a fresh database: enqueue 20,000 no-op jobs in
batches of 1,000 through ``App.enqueue_many``, then drain them with one in-process
``Worker`` (async x100, ``run(burst=True)``). Prints jobs/s per run and the median and
range per tree. Wall-clock figures; the drain includes worker start-up.

Not a test and not part of slotfleet; ``bench.core`` is the full benchmark.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JOBS = 20_000
BATCH = 1_000


def child(tree: str, dsn: str) -> None:
    sys.path[:0] = [os.path.abspath(tree), ROOT]
    import asyncio

    from slotfleet.app import App
    from slotfleet.models import Job
    from slotfleet.models.queues import QueueSettings
    from slotfleet.store import open_store
    from slotfleet.worker import Worker

    async def main() -> dict[str, float]:
        job = Job(func="bench.tasks:sf_noop_async", queue="q")
        async with App(dsn) as app:
            start = time.perf_counter()
            for _ in range(JOBS // BATCH):
                await app.enqueue_many([job] * BATCH)
            enqueue = JOBS / (time.perf_counter() - start)
        store = open_store(dsn)
        await store.open()
        try:
            settings = [QueueSettings(name="q", concurrency=100)]
            worker = Worker(store, settings, metrics=None)
            start = time.perf_counter()
            await worker.run(burst=True)
            drain = JOBS / (time.perf_counter() - start)
            [stats] = await store.queue_stats("q")
            assert stats.succeeded == JOBS, stats
        finally:
            await store.close()
        return {"enqueue": enqueue, "drain": drain}

    import slotfleet

    result = asyncio.run(main())
    result["where"] = slotfleet.__file__  # type: ignore[assignment]
    print(json.dumps(result))


def parent(trees: list[str], runs: int) -> None:
    sys.path.insert(0, ROOT)
    from bench import pg

    server = pg.start()
    got: dict[str, dict[str, list[float]]] = {t: {"enqueue": [], "drain": []} for t in trees}
    try:
        for run in range(runs):
            for tree in trees:
                pg.reset_database(server)
                out = subprocess.run(
                    [sys.executable, __file__, "--child", tree, server.dsn],
                    check=True,
                    capture_output=True,
                    text=True,
                    cwd="/",
                ).stdout
                result = json.loads(out.strip().splitlines()[-1])
                load = os.getloadavg()[0]
                print(
                    f"run {run + 1} {tree}: enqueue {result['enqueue']:,.0f}/s "
                    f"drain {result['drain']:,.0f}/s (load {load:.2f}; {result['where']})",
                    flush=True,
                )
                for key in ("enqueue", "drain"):
                    got[tree][key].append(result[key])
    finally:
        pg.stop(server)
    for tree, figures in got.items():
        parts = []
        for key, values in figures.items():
            med = statistics.median(values)
            parts.append(f"{key} {med:,.0f} ({min(values):,.0f}-{max(values):,.0f})")
        print(f"{tree}: " + ", ".join(parts))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2], sys.argv[3])
    else:
        parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
        parser.add_argument("--runs", type=int, default=3)
        parser.add_argument("trees", nargs="*", default=[ROOT])
        args = parser.parse_args()
        parent([os.path.abspath(t) for t in args.trees], args.runs)
