"""Example jobs for the ``emails`` queue in ``examples/queue.yaml``.

Workers import this module (``spec.imports: [examples.tasks]``) and run only functions
registered with ``@job``; enqueue by import path::

    slotfleet enqueue examples.tasks:send_email --queue emails to=ada@example.com

``send_email`` suits the queue's async executor. ``render_invoice`` blocks, so it belongs
on a ``threads`` queue, and ``checksum`` burns CPU, so it belongs on a ``processes`` queue.
"""

from __future__ import annotations

import asyncio
import hashlib
import time

from slotfleet import job


@job(queue="emails")
async def send_email(to: str, subject: str = "Hello", seconds: float = 0.2) -> dict[str, str]:
    """Pretend to talk to an SMTP server (I/O-bound, async)."""
    await asyncio.sleep(seconds)
    return {"to": to, "subject": subject, "status": "sent"}


@job(queue="invoices")
def render_invoice(customer: str, amount_cents: int, seconds: float = 0.2) -> str:
    """Pretend to call a blocking HTTP API (I/O-bound, plain function: threads)."""
    time.sleep(seconds)
    return f"invoice for {customer}: {amount_cents / 100:.2f}"


@job(queue="checksums")
def checksum(rounds: int = 200_000, seed: str = "slotfleet") -> str:
    """Hash repeatedly (CPU-bound: processes)."""
    digest = seed.encode()
    for _ in range(rounds):
        digest = hashlib.sha256(digest).digest()
    return digest.hex()
