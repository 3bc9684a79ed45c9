"""Fault injection for crash tests: kill this process with SIGKILL at a named point.

``STREAMCALC_FAULT=<point>`` names the point; ``STREAMCALC_FAULT_AFTER=N`` lets
the point pass N times first (default 0); ``STREAMCALC_FAULT_RATE=p`` instead
crashes there with probability p each time. Points, in batch order:
``after_read`` (entries delivered, nothing computed), ``mid_wave`` (inside a
wave, after its first derived node fired), ``after_eval`` (waves computed,
nothing written), ``before_commit`` (commit arguments built), ``after_commit``
(committed, before the worker's own bookkeeping). Points of a change of hands
(:data:`HANDOVER_POINTS`): ``after_take`` (a partition's lease taken, nothing
claimed), ``after_claim`` (its pending entries claimed, none processed),
``before_release`` (about to give a lease back), ``mid_route`` (some entries of
``sc:{NS}:in`` moved to their partitions, not all) and ``after_route`` (all moved,
none acknowledged).
"""

from __future__ import annotations

import os
import random
import signal

POINTS = ("after_read", "mid_wave", "after_eval", "before_commit", "after_commit")
HANDOVER_POINTS = ("after_take", "after_claim", "before_release", "mid_route", "after_route")

_point = os.environ.get("STREAMCALC_FAULT", "")
#: False in production: hot loops test this before calling :func:`reached`.
ENABLED = bool(_point)
_remaining = int(os.environ.get("STREAMCALC_FAULT_AFTER", "0") or 0)
_rate = float(os.environ.get("STREAMCALC_FAULT_RATE", "0") or 0)


def reached(point: str) -> None:
    """Crash here with SIGKILL if the environment asks for it."""
    global _remaining
    if point != _point:
        return
    if _rate:
        if random.random() < _rate:
            os.kill(os.getpid(), signal.SIGKILL)
        return
    if _remaining > 0:
        _remaining -= 1
        return
    os.kill(os.getpid(), signal.SIGKILL)
