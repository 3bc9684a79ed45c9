"""Durations as people write them ("250ms", "30s", "2d"), turned into milliseconds.

One table of units serves the graph file's ttl and every command-line option
that takes a duration. A bare number is ambiguous (seconds? milliseconds?), so
text always carries its unit; only ``0`` needs none, being zero in every unit.
A number that is not text (a TOML ``ttl = 5``) is read in the unit its caller
names: the graph file says seconds (docs/graph-file.md).
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection

#: Milliseconds per unit, shortest first.
UNITS_MS: dict[str, int] = {
    "ms": 1,
    "s": 1_000,
    "m": 60_000,
    "h": 3_600_000,
    "d": 86_400_000,
    "w": 604_800_000,
}
#: The longest duration: the largest integer that JSON and Lua numbers hold exactly.
MAX_MS = 2**53 - 1

_DURATION = re.compile(r"(-?\d+(?:\.\d*)?|-?\.\d+)\s*([A-Za-z]*)")


def unit_list(units: Collection[str] = UNITS_MS) -> str:
    """The units for a message: ``ms, s, m, h, d or w``."""
    names = [unit for unit in UNITS_MS if unit in units]
    return ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else names[0]


def duration_ms(
    value: object, *, number_unit: str | None = None, units: Collection[str] = UNITS_MS
) -> int:
    """Milliseconds of ``value``: text with one of ``units`` ("1.5h", " 2 s "), or "0".

    With ``number_unit`` a number (int or float, not bool) is read in that unit
    too. Raises ValueError with a short reason (no value, no option name: the
    caller says where) for another type, a negative or non-finite amount, text
    without a unit, an unknown unit, a positive duration under 1ms, or one over
    :data:`MAX_MS`.
    """
    if isinstance(value, str):
        amount, scale = _amount_and_scale(value, units)
    elif number_unit is not None and isinstance(value, int | float) and not isinstance(value, bool):
        amount, scale = value, UNITS_MS[number_unit]
    else:
        kind = "a number or text" if number_unit is not None else "text"
        raise ValueError(f"expected {kind} like '60s', got {type(value).__name__}")
    if not math.isfinite(amount):
        raise ValueError("not finite")
    if amount < 0:
        raise ValueError("negative")
    # Ints stay exact; a float is rounded to the millisecond.
    ms = amount * scale if isinstance(amount, int) else round(amount * scale)
    if ms == 0 and amount > 0:
        raise ValueError("shorter than 1ms")
    if ms > MAX_MS:
        raise ValueError("too long")
    return int(ms)


def _amount_and_scale(text: str, units: Collection[str]) -> tuple[int | float, int]:
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"not a duration like 250ms, 30s or 5m (units: {unit_list(units)})")
    number, unit = match.groups()
    amount = float(number)
    if not unit:
        if amount == 0:
            return 0, 1
        raise ValueError(f"no unit (use {unit_list(units)}: {number}s, {number}ms, ...)")
    if unit not in units:
        raise ValueError(f"unknown unit {unit!r} (use {unit_list(units)})")
    return amount, UNITS_MS[unit]
