"""The throughput chart's geometry (stacked bars per bucket, for an SVG the page template
draws) and the terminal's sparkline: pure functions of the buckets.

Drawn on the server so the page needs no chart library and the chart comes with every
live update as part of the fragment; a bar's tooltip says its time and counts.

What this module is not: a renderer. It returns numbers and strings; escaping is the
template's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from slotfleet.dashboard.views import Bucket

#: Drawing order from the baseline up, with the CSS class of each part.
PARTS = (("succeeded", "ok"), ("failed", "bad"), ("cancelled", "off"))

_SPARKS = " ▁▂▃▄▅▆▇█"


@dataclass(frozen=True)
class Rect:
    x: float
    y: float
    width: float
    height: float
    css: str
    title: str


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    top: int
    """The y axis' top value (a round number at least the tallest bar)."""
    rects: list[Rect]
    ticks: list[tuple[float, str]]
    """(x, label) under the bars."""
    gridlines: list[tuple[float, str]]
    """(y, label) of horizontal lines."""


def nice_top(value: int) -> int:
    """The smallest of 1, 2, 5 times a power of ten that is at least ``value``; at least 5,
    so an idle chart still has a scale."""
    value = max(value, 4)
    power = int(10 ** math.floor(math.log10(value)))
    for step in (1, 2, 5, 10):
        if step * power >= value:
            return step * power
    raise AssertionError("unreachable")


#: Label spacings tried, in seconds: the first that leaves at most ~8 labels is used.
_TICK_STEPS = (60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 43200, 86400)


def tick_step(span_seconds: float, bucket_seconds: int) -> int:
    """Seconds between time labels: a round step giving at most about 8 labels, and a
    whole number of buckets."""
    for step in _TICK_STEPS:
        if span_seconds / step <= 8 and step % bucket_seconds == 0:
            return step
    return bucket_seconds * max(1, math.ceil(span_seconds / bucket_seconds / 8))


def stacked_bars(buckets: Sequence[Bucket], *, width: int = 1200, height: int = 170) -> Chart:
    """Stacked bars (succeeded, failed, cancelled) per bucket, scaled to ``top``; a UTC
    ``HH:MM`` label under each bucket starting on a round time (see :func:`tick_step`)."""
    count = max(1, len(buckets))
    top = nice_top(max((b.total for b in buckets), default=0))
    slot = width / count
    bar = max(1.0, slot * 0.8)
    seconds = int((buckets[1].start - buckets[0].start).total_seconds()) if len(buckets) > 1 else 60
    step = tick_step(seconds * count, seconds)
    rects: list[Rect] = []
    ticks: list[tuple[float, str]] = []
    for i, b in enumerate(buckets):
        x = round(i * slot + (slot - bar) / 2, 2)
        base = float(height)
        stamp = b.start.strftime("%H:%M:%S")
        title = f"{stamp}: {b.succeeded} succeeded, {b.failed} failed, {b.cancelled} cancelled"
        for name, css in PARTS:
            value = getattr(b, name)
            if not value:
                continue
            h = height * value / top
            base -= h
            rects.append(Rect(x, round(base, 2), round(bar, 2), round(h, 2), css, title))
        if int(b.start.timestamp()) % step == 0:
            ticks.append((round(i * slot, 2), b.start.strftime("%H:%M")))
    gridlines = [(round(height * (1 - f), 2), str(round(top * f))) for f in (0.5, 1.0)]
    return Chart(width, height, top, rects, ticks, gridlines)


def sparkline(values: Sequence[int]) -> str:
    """One character per value, scaled to the largest (blank for zero)."""
    peak = max(values, default=0)
    if peak <= 0:
        return " " * len(values)
    steps = len(_SPARKS) - 1
    return "".join(_SPARKS[0 if v <= 0 else max(1, math.ceil(v * steps / peak))] for v in values)
