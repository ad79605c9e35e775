"""Task functions for the browser tests' fleet, named like real work so the screenshots
the suite takes for the documentation read naturally. Importable as
``tests.dashboard_tasks:<name>`` by worker subprocesses (the repository root on
``sys.path``)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from slotfleet import job


@job
async def send_email(to: str, subject: str, delay: float = 0.05) -> str:
    await asyncio.sleep(delay)
    return f"sent to {to}"


@job
def build_report(rows: int, delay: float = 0.2) -> dict[str, int]:
    time.sleep(delay)
    return {"rows": rows}


@job
def resize_image(path: str, width: int) -> dict[str, Any]:
    checksum = sum(i * i for i in range(20_000 + width))
    return {"path": path, "width": width, "checksum": checksum % 9973}


@job
async def charge_card(order: int, amount: float) -> str:
    """Declines every fifth order: a failure with a real traceback."""
    await asyncio.sleep(0.02)
    if order % 5 == 0:
        raise ValueError(f"card declined for order {order} ({amount:.2f} EUR)")
    return f"charged order {order}"


@job
async def echo(value: Any) -> Any:
    """Returns its input: a job whose result is exactly what it was given."""
    await asyncio.sleep(0)
    return value


@job
async def fail_with(message: str) -> None:
    raise RuntimeError(message)
