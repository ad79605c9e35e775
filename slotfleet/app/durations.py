"""Durations as people type them (``90``, ``90s``, ``15m``, ``12h``, ``7d``), parsed once
for every front end: ``slotfleet purge --older-than`` and the dashboard's purge action."""

from __future__ import annotations

from datetime import timedelta

from slotfleet.models import InvalidSettingsError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> timedelta:
    """Seconds, or a number with s, m, h or d; :class:`InvalidSettingsError` (one line)
    for anything else, a negative value, nan or infinity."""
    raw = text.strip().lower()
    unit = _UNITS.get(raw[-1:])
    number = raw[:-1] if unit is not None else raw
    try:
        value = float(number) * (unit or 1)
    except ValueError:
        raise InvalidSettingsError(
            f"{text!r} is not a duration (e.g. 3600, 90s, 15m, 12h, 7d)"
        ) from None
    if not 0 <= value < 1e10:  # also refuses nan and inf
        raise InvalidSettingsError(f"{text!r} is not a duration of 0 or more")
    return timedelta(seconds=value)
