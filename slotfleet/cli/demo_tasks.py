"""Sample jobs for ``slotfleet demo``: a little I/O, a little CPU, some failures."""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from pathlib import Path

from slotfleet.app import job


@job(queue="demo-async")
async def fetch_page(url: str) -> dict[str, object]:
    """Pretend to fetch a page: I/O-bound, so it runs as a coroutine."""
    await asyncio.sleep(random.uniform(0.01, 0.08))
    return {"url": url, "status": 200}


@job(queue="demo-threads")
def resize_image(name: str, width: int) -> str:
    """Pretend to resize an image with a blocking library: runs in a thread."""
    time.sleep(random.uniform(0.01, 0.04))
    return f"{name}@{width}px"


@job(queue="demo-processes")
def crunch(seed: int, rounds: int = 20_000) -> str:
    """CPU-bound hashing: runs in a child process so it does not block the worker."""
    digest = str(seed).encode()
    for _ in range(rounds):
        digest = hashlib.sha256(digest).digest()
    return digest.hex()[:16]


@job(queue="demo-async", max_attempts=3, retry={"base": 0.2, "factor": 2.0, "jitter": 0.1})
async def flaky_upload(name: str, marker_dir: str) -> str:
    """Fails on its first attempt and succeeds on the retry."""
    marker = Path(marker_dir) / f"{name}.tried"
    if not marker.exists():
        marker.write_text("1")
        raise ConnectionError(f"upload of {name} interrupted (will be retried)")
    await asyncio.sleep(0.01)
    return f"uploaded {name}"


@job(queue="demo-threads", max_attempts=2, retry={"base": 0.2})
def broken_import(path: str) -> None:
    """Always fails: shows a job ending ``failed`` after its attempts."""
    raise FileNotFoundError(f"no such file: {path}")


@job(queue="demo-async")
async def long_report(seconds: float) -> str:
    """Runs long enough to be cancelled while running."""
    await asyncio.sleep(seconds)
    return "report done"
