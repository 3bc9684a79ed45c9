"""The paced sender of every open-loop run: a producer *process* XADDs rows on a schedule.

It runs in its own process so that it shares no GIL with the reader whose latency it serves.
It packs every command up front, turns off its GC (no collection pauses, so no bursts) and
each tick sends, in one write, every entry that is due; each entry's stamp is
``time.time_ns()`` when its tick was sent. It reports every entry ID with its stamp, how long
it took, and how far it fell behind the schedule. The streamcalc latency run
(:mod:`benchmarks.latency`) and the Streams ceiling's (:mod:`benchmarks.ceiling`) both use it.
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import time
from collections.abc import Iterator, Sequence
from typing import Any

import redis

from benchmarks.common import percentile

MAX_TICK = 1000  # most entries one tick sends in one write
WARMUP_S = 0.5  # the first seconds of a run, left out of the percentiles

#: (entry ID, stamp in ns) of every entry sent, in order.
Stamps = list[tuple[bytes, int]]


@contextlib.contextmanager
def no_gc() -> Iterator[None]:
    """No garbage collection pauses in this process while timing (objects so far frozen)."""
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.unfreeze()


def _send(url: str, key: str, rows: list[list[str]], rate: float, report: Any) -> None:
    """Producer process: XADD ``rows`` to ``key`` in order at ``rate``/s (open loop).

    Puts (stamps, seconds, lag) on ``report``; lag is (p99, max) in ms of how late the oldest
    entry of each tick went out against the schedule.
    """
    client = redis.Redis.from_url(url, protocol=2)
    conn: Any = client.connection_pool.get_connection()
    stamps: Stamps = []
    lags: list[float] = []
    try:
        with no_gc():
            packed = [b"".join(conn.pack_command("XADD", key, "*", *row)) for row in rows]
            total = len(rows)
            sent = 0
            start = time.perf_counter()
            while sent < total:
                elapsed = time.perf_counter() - start
                due = min(total, int(elapsed * rate) + 1, sent + MAX_TICK)
                if due <= sent:
                    time.sleep(max(0.0, min(0.0005, (sent + 1) / rate - elapsed)))
                    continue
                lags.append((elapsed - sent / rate) * 1000)
                now = time.time_ns()
                conn.send_packed_command([b"".join(packed[sent:due])], check_health=False)
                for _ in range(sent, due):
                    stamps.append((conn.read_response(), now))
                sent = due
            took = time.perf_counter() - start
        lag = (round(percentile(lags, 99), 3), round(max(lags), 3)) if lags else (0.0, 0.0)
        report.put((stamps, took, lag))
    finally:
        client.connection_pool.release(conn)
        client.close()


class PacedSender:
    """The producer process for one open-loop run; killed on exit if it is still running.

    ``start()`` it, poll :attr:`done` (the report is in), then take :meth:`report`.
    """

    def __init__(self, url: str, key: str, rows: list[list[str]], rate: float) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._report = ctx.Queue()
        self.process = ctx.Process(
            target=_send, args=(url, key, rows, rate, self._report), daemon=True
        )

    def __enter__(self) -> PacedSender:
        return self

    def start(self) -> int:
        """Start sending; returns the producer's PID (for its CPU)."""
        self.process.start()
        assert self.process.pid is not None
        return self.process.pid

    @property
    def done(self) -> bool:
        """The producer has sent everything (its report is in); raises if it died before."""
        if not self._report.empty():
            return True
        if not self.process.is_alive():
            raise RuntimeError(f"latency producer died (exit {self.process.exitcode})")
        return False

    def report(self) -> tuple[Stamps, float, tuple[float, float]]:
        """(stamps, seconds it took, (p99, max) ms behind schedule); waits for it."""
        stamps, took, lag = self._report.get(timeout=60)
        return stamps, took, lag

    def __exit__(self, *exc: object) -> None:
        if self.process.is_alive():
            self.process.kill()
        if self.process.pid is not None:
            self.process.join(timeout=5)


def latencies_ms(
    stamps: Sequence[tuple[bytes, int]], arrivals: dict[bytes, int], warmup_s: float
) -> list[float]:
    """Arrival minus stamp (ms) of every entry that arrived, leaving out the first ``warmup_s``."""
    if not stamps:
        return []
    t0 = stamps[0][1] + warmup_s * 1e9
    return [(arrivals[eid] - st) / 1e6 for eid, st in stamps if st >= t0 and eid in arrivals]
