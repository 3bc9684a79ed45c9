"""Psychrometrics for a plant room, as streamcalc plugin functions.

A plugin is a plain callable ``f(args: list) -> value``: it gets the node's
argument values in the order of the graph's ``args`` (a number, or a tuple of
numbers for a vector) and returns a finite number or a list of numbers. Raise
to refuse an input: the worker turns the exception into a dead letter for that
node and goes on. Keep plugins pure and quick (the worker cuts a call off after
``--function-timeout`` seconds): no I/O, no global state.

Reference it from a graph as ``fn = "plantlib.psychro:dew_point"`` and start the
worker with ``--plugins plantlib`` and this directory on ``PYTHONPATH`` (or the
package installed).
"""

from __future__ import annotations

import math

# Magnus formula constants (Alduchov and Eskridge, 1996), valid from -40 to 50 °C.
_B = 17.625
_C = 243.04


def dew_point(args: list[float]) -> float:
    """Dew point in °C from the air temperature (°C) and relative humidity (%)."""
    temp, rh = args
    if not isinstance(temp, int | float) or not isinstance(rh, int | float):
        raise TypeError("dew_point takes a temperature and a humidity, not vectors")
    if not 0 < rh <= 100:
        raise ValueError(f"relative humidity must be in (0, 100], got {rh}")
    gamma = math.log(rh / 100) + _B * temp / (_C + temp)
    return round(_C * gamma / (_B - gamma), 2)


def condensation_margin(args: list[float]) -> float:
    """How many °C a surface (first argument) is above the dew point (second argument)."""
    surface, dew = args
    return round(surface - dew, 2)
