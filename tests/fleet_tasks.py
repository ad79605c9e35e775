"""Tiny jobs for the local-fleet integration test (imported by real worker processes)."""

from __future__ import annotations

import asyncio

from slotfleet import job


@job
async def nap(seconds: float) -> float:
    """Sleep ``seconds`` and return it: a job that holds a slot for a known time."""
    await asyncio.sleep(seconds)
    return seconds
