"""Job functions whose results are not JSON, or that try to take their worker down.

Each has a sync and an ``async_`` twin, so every executor kind can run them
(``tests.badinput.bad_tasks:<name>``).
"""

from __future__ import annotations

import sys
from typing import Any

from slotfleet import job


class Opaque:
    """Not JSON-serializable."""


def _circular() -> list[Any]:
    loop: list[Any] = []
    loop.append(loop)
    return loop


def _deep(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


RESULTS: dict[str, Any] = {
    "nan": float("nan"),
    "surrogate": "lone \ud800 surrogate",
    "nul": "a\x00b",
    "huge": "x" * (2 << 20),
    "bytes": b"\x00\xff",
}


def _result(kind: str) -> Any:
    if kind == "opaque":
        return Opaque()
    if kind == "circular":
        return _circular()
    if kind == "deep":
        return _deep(5000)
    return RESULTS[kind]


@job
def bad_result(kind: str) -> Any:
    return _result(kind)


@job
async def async_bad_result(kind: str) -> Any:
    return _result(kind)


@job
def exits(code: int = 3) -> None:
    sys.exit(code)


@job
async def async_exits(code: int = 3) -> None:
    sys.exit(code)


@job
def ok() -> str:
    return "ok"


@job
async def async_ok() -> str:
    return "ok"
