"""No-op job functions run by the benchmarks (importable by worker processes and by
process-pool children).

Chancy runs any importable function; slotfleet's workers run only functions registered
with ``@job`` (the default), so each no-op has a registered twin for slotfleet
(``sf_noop_async``, ``sf_noop``) and a plain one for Chancy, whose executors would not
see a ``JobFunction`` as the coroutine function it wraps.
"""

from __future__ import annotations

from slotfleet import job


async def noop_async() -> None:
    """Does nothing, on the event loop (Chancy)."""


def noop() -> None:
    """Does nothing, in a thread or a child process (Chancy)."""


@job
async def sf_noop_async() -> None:
    """Does nothing, on the event loop (slotfleet)."""


@job
def sf_noop() -> None:
    """Does nothing, in a thread or a child process (slotfleet)."""
