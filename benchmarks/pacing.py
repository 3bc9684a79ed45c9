"""The paced sender of every open-loop run: a producer *process* XADDs rows on a schedule.

It runs in its own process so that it shares no GIL with the reader whose latency it serves.
It packs every command up front, turns off its GC (no collection pauses, so no bursts) and
each tick sends, in one write, every entry that is due; each entry's stamp is
``time.time_ns()`` when its tick was sent. It sends with ``CLIENT REPLY OFF``: it never waits
for Redis nor parses a reply (that was most of its CPU), so it costs little and a Redis busy
with a commit delays the entries, which the latency then shows, not the sender's schedule. The
entry IDs are read back from the stream afterwards (the sender is its only writer, so the n-th
entry is the n-th sent). It reports every entry ID with its stamp, how long it took, and how
far it fell behind the schedule. The streamcalc latency run (:mod:`benchmarks.latency`) and
the Streams ceiling's (:mod:`benchmarks.ceiling`) both use it.
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
#: Shortest time between two ticks. Sleeping until the next entry was due woke the sender
#: for every entry (19,000 times a second at 19,000 entries/s: 15-20 % of a CPU).
TICK_S = 0.0005
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

    Puts (ticks, seconds, lag, CPU seconds) on ``report``: ticks are (entries sent so far,
    stamp in ns) of each write; lag is (p99, max) in ms of how late the oldest entry of each
    tick went out against the schedule; the CPU is this process's while it sent.
    """
    client = redis.Redis.from_url(url, protocol=2)
    conn: Any = client.connection_pool.get_connection()
    ticks: list[tuple[int, int]] = []
    lags: list[float] = []
    try:
        with no_gc():
            packed = [b"".join(conn.pack_command("XADD", key, "*", *row)) for row in rows]
            total = len(rows)
            sent = 0
            conn.send_command("CLIENT", "REPLY", "OFF")  # answers nothing, not even this
            start, cpu = time.perf_counter(), time.process_time()
            last = -TICK_S
            while sent < total:
                elapsed = time.perf_counter() - start
                due = min(total, int(elapsed * rate) + 1, sent + MAX_TICK)
                if due <= sent or elapsed < last + TICK_S:
                    time.sleep(max(0.0, (sent + 1) / rate - elapsed, last + TICK_S - elapsed))
                    continue
                last = elapsed
                lags.append((elapsed - sent / rate) * 1000)
                now = time.time_ns()
                conn.send_packed_command([b"".join(packed[sent:due])], check_health=False)
                ticks.append((due, now))
                sent = due
            took, cpu = time.perf_counter() - start, time.process_time() - cpu
            conn.send_command("CLIENT", "REPLY", "ON")
            if conn.read_response() != b"OK":
                raise RuntimeError("CLIENT REPLY ON was not answered")
        lag = (round(percentile(lags, 99), 3), round(max(lags), 3)) if lags else (0.0, 0.0)
        report.put((ticks, took, lag, cpu))
    finally:
        client.connection_pool.release(conn)
        client.close()


class PacedSender:
    """The producer process for one open-loop run; killed on exit if it is still running.

    ``start()`` it, poll :attr:`done` (the report is in), then take :meth:`report`.
    """

    def __init__(self, url: str, key: str, rows: list[list[str]], rate: float) -> None:
        self.url, self.key = url, key
        self.cpu_util = 0.0
        """The sender's CPU (in CPUs) while it sent, known after :meth:`report`."""
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
        """(stamps, seconds it took, (p99, max) ms behind schedule); waits for it.

        The IDs are read from the stream here (after the timed part: call it when done).
        """
        ticks, took, lag, cpu = self._report.get(timeout=60)
        self.cpu_util = cpu / max(took, 1e-9)
        sent = ticks[-1][0] if ticks else 0
        ids = _entry_ids(self.url, self.key)
        if len(ids) != sent:  # with replies off, a refused XADD would go unnoticed
            raise RuntimeError(f"the sender sent {sent} entries, {self.key} holds {len(ids)}")
        stamps: Stamps = []
        for due, now in ticks:
            stamps += [(eid, now) for eid in ids[len(stamps) : due]]
        return stamps, took, lag

    def __exit__(self, *exc: object) -> None:
        if self.process.is_alive():
            self.process.kill()
        if self.process.pid is not None:
            self.process.join(timeout=5)


def _entry_ids(url: str, key: str, chunk: int = 10_000) -> list[bytes]:
    """Every entry ID of stream ``key``, in order."""
    client = redis.Redis.from_url(url, protocol=2)
    ids: list[bytes] = []
    start = "-"
    try:
        while True:
            page: Any = client.execute_command("XRANGE", key, start, "+", "COUNT", chunk)
            ids += [eid for eid, _ in page]
            if len(page) < chunk:
                return ids
            start = "(" + page[-1][0].decode()
    finally:
        client.close()


def latencies_ms(
    stamps: Sequence[tuple[bytes, int]], arrivals: dict[bytes, int], warmup_s: float
) -> list[float]:
    """Arrival minus stamp (ms) of every entry that arrived, leaving out the first ``warmup_s``."""
    if not stamps:
        return []
    t0 = stamps[0][1] + warmup_s * 1e9
    return [(arrivals[eid] - st) / 1e6 for eid, st in stamps if st >= t0 and eid in arrivals]
