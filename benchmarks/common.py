"""Helpers shared by every benchmark: the result record, percentiles, memory readings
and the *seed* workload (A = add(C, D, E), B = mul(A, F)).
"""

from __future__ import annotations

import math
import os
import random
import signal
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from streamcalc.demo import SEED_GRAPH

# The seed workload as a streamcalc graph file: the demo's graph.
SEED_GRAPH_TOML = SEED_GRAPH

SEED_INPUTS: tuple[str, ...] = ("C", "D", "E", "F")
SEED_DERIVED: tuple[str, ...] = ("A", "B")


class Result(msgspec.Struct, kw_only=True):
    """One benchmark run. Rates are per second of the measured phase; ``None`` = not measured."""

    workload: str
    system: str  # "baseline-celery", "ceiling", "streamcalc"
    workers: int
    entries: int
    seconds: float
    entries_per_s: float
    readings_per_s: float
    derived_per_s: float
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None
    worker_rss_mb: float | None = None
    redis_memory_mb: float | None = None
    lost: int = 0  # expected derived values minus produced ones
    extra: dict[str, Any] = msgspec.field(default_factory=dict)

    def to_json(self, *, indent: int = 2) -> str:
        """The result as (pretty) JSON text."""
        raw = msgspec.json.encode(self)
        return msgspec.json.format(raw, indent=indent).decode()


def percentile(values: Sequence[float] | Iterable[float], p: float) -> float:
    """The ``p``-th percentile (0..100) with linear interpolation; NaN when empty."""
    data = sorted(values)
    if not data:
        return math.nan
    if not 0.0 <= p <= 100.0:
        raise ValueError(f"percentile must be within 0..100, got {p}")
    pos = (len(data) - 1) * p / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(data) - 1)
    frac = pos - lo
    return float(data[lo] + (data[hi] - data[lo]) * frac)


def latency_summary(latencies_ms: Sequence[float]) -> tuple[float | None, float | None]:
    """(p50, p99) in ms, or (None, None) when there is nothing to summarize."""
    if not latencies_ms:
        return None, None
    return round(percentile(latencies_ms, 50), 3), round(percentile(latencies_ms, 99), 3)


def redis_memory_mb(client: Any) -> float:
    """Redis ``INFO memory`` ``used_memory`` in MiB."""
    info = client.info("memory")
    return round(int(info["used_memory"]) / (1024 * 1024), 2)


def status_kb(pid: int, key: str) -> int:
    """A kB figure (``VmRSS``, ``VmHWM``, ...) of ``/proc/PID/status``; 0 when ``pid`` is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_mb(pids: Iterable[int]) -> float:
    """Sum of the resident set sizes (``VmRSS``) of ``pids`` in MiB; vanished PIDs count 0."""
    return round(sum(status_kb(pid, "VmRSS") for pid in set(pids)) / 1024, 2)


def descendant_pids(root: int) -> list[int]:
    """``root`` and all of its live descendants, found through ``/proc/*/stat``."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", encoding="ascii", errors="replace") as fh:
                stat = fh.read()
        except OSError:
            continue
        # The command name is in parentheses and may contain spaces: split after it.
        fields = stat[stat.rfind(")") + 2 :].split()
        children.setdefault(int(fields[1]), []).append(int(name))
    found: list[int] = []
    todo = [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def exit_on_sigterm() -> None:
    """Turn SIGTERM into ``SystemExit`` so that ``finally`` blocks stop child processes."""

    def _exit(signum: int, _frame: object) -> None:
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, _exit)


@dataclass(frozen=True, slots=True)
class SeedEntry:
    """One input entry of the seed workload and the derived values it must produce."""

    c: int
    d: int
    e: int
    f: int
    ts: int  # event time, ms since the epoch

    @property
    def a(self) -> int:
        """Expected A = C + D + E."""
        return self.c + self.d + self.e

    @property
    def b(self) -> int:
        """Expected B = A * F."""
        return self.a * self.f

    def readings(self) -> dict[str, int]:
        """``{"C": c, "D": d, "E": e, "F": f}``."""
        return {"C": self.c, "D": self.d, "E": self.e, "F": self.f}

    def fields(self, *, with_ts: bool = True) -> dict[str, str]:
        """Stream entry fields as a producer writes them (``@ts`` included by default)."""
        out = {k: str(v) for k, v in self.readings().items()}
        if with_ts:
            out["@ts"] = str(self.ts)
        return out

    def expected(self) -> dict[str, int]:
        """``{"A": a, "B": b}``."""
        return {"A": self.a, "B": self.b}


def seed_workload(
    n: int, *, seed: int = 0, start_ts_ms: int | None = None, low: int = 1, high: int = 9
) -> list[SeedEntry]:
    """``n`` entries with random small C, D, E, F in [low, high] and strictly rising ``@ts``.

    Every entry carries all four inputs, so (in consume mode) every entry fires A and B.
    """
    rng = random.Random(seed)
    base = int(time.time() * 1000) if start_ts_ms is None else start_ts_ms
    return [
        SeedEntry(
            c=rng.randint(low, high),
            d=rng.randint(low, high),
            e=rng.randint(low, high),
            f=rng.randint(low, high),
            ts=base + i,
        )
        for i in range(n)
    ]
