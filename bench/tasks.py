"""No-op job functions run by the benchmarks (importable by worker processes and by
process-pool children, for both slotfleet and Chancy)."""

from __future__ import annotations


async def noop_async() -> None:
    """Does nothing, on the event loop."""


def noop() -> None:
    """Does nothing, in a thread or a child process."""
