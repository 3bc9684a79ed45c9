"""Open-loop latency of streamcalc with one worker.

:func:`run_latency`: one worker waits on an empty namespace; the paced sender
(:mod:`benchmarks.pacing`) XADDs at a fixed rate, stamping each entry ID; this process follows
``sc:{NS}:out`` (:class:`Follower`) and notes when each entry's first derived value arrives.
Afterwards the output is checked value by value (:mod:`benchmarks.verify`, stream order).
The Streams ceiling's latency at the same rate, with the same sender, is
:func:`benchmarks.ceiling.run_stream_ceiling_latency`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import redis

from benchmarks.common import latency_summary, percentile
from benchmarks.pacing import WARMUP_S, PacedSender, Stamps, latencies_ms, no_gc
from benchmarks.processes import CpuWindow, Workers
from benchmarks.streams import (
    client_for,
    delete_namespace,
    drained,
    field_of,
    load_graph,
    new_ns,
    wait_for_consumers,
)
from benchmarks.verify import read_out, verify
from benchmarks.workloads import Workload
from streamcalc.cluster import slot_owner
from streamcalc.keys import Keys


class Follower:
    """Notes when each commit of a single worker lands in ``sc:{NS}:out``, cheaply.

    One pipelined round trip per commit: ``XREAD COUNT 1 BLOCK`` wakes up when a commit has
    written (a commit's values appear at once), ``XREVRANGE COUNT 1`` reads the newest value,
    whose ``@src`` is the newest input entry finished. With one worker, ``out`` follows the
    stream order (:func:`verify` checks it), so every entry up to that ``@src`` is done.
    Parsing every output value instead would cost the harness a CPU core on a busy workload.

    How late the follower itself notes a commit is :meth:`delays_ms`: the arrival against
    the time Redis gave the newest value's ID (the commit's XADD), so that a latency figure
    can be told apart from the follower's own polling.
    """

    def __init__(self, client: redis.Redis, key: str) -> None:
        self.client, self.key = client, key
        # a connection of its own, written and read directly: a redis-py pipeline per commit
        # cost the harness process (and so the CPUs the worker needs) several times more
        self._pool = slot_owner(client, key).connection_pool
        self._conn: Any = self._pool.get_connection()
        self.last = b"0-0"
        self.marks: list[tuple[int, bytes]] = []  # (time.time_ns(), newest @src)
        self.written: list[bytes] = []  # the ID of that newest value, one per mark

    def read(self, block_ms: int | None) -> int:
        """One wait for new output; returns 1 when there was some."""
        args: list[Any] = ["XREAD", "COUNT", 1]
        if block_ms is not None:
            args += ["BLOCK", block_ms]
        conn = self._conn
        wait = (*args, "STREAMS", self.key, self.last)
        conn.send_packed_command(
            conn.pack_commands([wait, ("XREVRANGE", self.key, "+", "-", "COUNT", 1)]),
            check_health=False,
        )
        conn.read_response()
        newest = conn.read_response()
        now = time.time_ns()
        if not newest or newest[0][0] == self.last:
            return 0
        eid, flat = newest[0]
        self.last = eid
        src = field_of(flat, b"@src")
        if src is not None:
            self.marks.append((now, src))
            self.written.append(eid)
        return 1

    def delays_ms(self, since_ns: int) -> list[float]:
        """Arrival minus the newest value's ID time (ms) of each commit noted after
        ``since_ns``: the follower's own delay, plus the rest of the commit's script after
        that XADD, plus up to 1 ms because an ID counts whole milliseconds."""
        return [
            now / 1e6 - _id_key(eid)[0]
            for (now, _), eid in zip(self.marks, self.written, strict=True)
            if now >= since_ns
        ]

    def close(self) -> None:
        """Give the connection back."""
        self._pool.release(self._conn)

    def arrivals(self, ids: Sequence[bytes]) -> dict[bytes, int]:
        """Input entry ID -> when the first commit covering it showed up (IDs in order)."""
        out: dict[bytes, int] = {}
        marks = [(_id_key(src), now) for now, src in self.marks]
        k = 0
        for eid in ids:
            key = _id_key(eid)
            while k < len(marks) and marks[k][0] < key:
                k += 1
            if k == len(marks):
                break
            out[eid] = marks[k][1]
        return out


def _id_key(entry_id: bytes) -> tuple[int, int]:
    ms, _, seq = entry_id.partition(b"-")
    return int(ms), int(seq or 0)


def _follow(
    client: redis.Redis,
    keys: Keys,
    follower: Follower,
    sender: PacedSender,
    procs: Workers,
    deadline: float,
) -> None:
    """Follow ``out`` until the producer is done and the worker has drained the input."""
    while True:
        follower.read(100)
        # the producer is done once its report is in the queue; read the report only after
        # the worker drained, so that unpickling it delays no arrival
        if sender.done and drained(client, keys.input):
            while follower.read(None):  # what the last commit wrote
                pass
            return
        procs.check_alive()
        if time.monotonic() > deadline:
            raise RuntimeError("latency run did not finish in time")


def run_latency(
    url: str,
    workload: Workload,
    *,
    rate: float,
    seconds: float,
    batch: int = 500,
    block_ms: int = 50,
    warmup_s: float = WARMUP_S,
) -> dict[str, Any]:
    """Open-loop latency with one worker at ``rate`` entries/s for ``warmup_s + seconds``.

    Latency of an entry = arrival of its first derived value in ``out`` (XREAD BLOCK here)
    minus the producer's clock when it sent the entry's XADD. Entries of the first
    ``warmup_s`` are left out of the percentiles. The output is also checked (stream order).
    """
    client = client_for(url)
    ns = new_ns(f"{workload.name}-lat")
    keys = Keys(ns)
    rows = workload.xadd_rows(int(rate * (seconds + warmup_s)))
    follower = Follower(client, keys.output)
    try:
        load_graph(client, ns, workload)
        with (
            Workers(url, ns, 1, batch=batch, block_ms=block_ms) as procs,
            PacedSender(url, keys.input, rows, rate) as sender,
        ):
            wait_for_consumers(client, keys.input, procs, 1)
            cpu = CpuWindow(client, procs.pids, helpers=[sender.start()])
            deadline = time.monotonic() + seconds + warmup_s + 120
            with no_gc():  # a collection here would delay the arrival stamps
                _follow(client, keys, follower, sender, procs, deadline)
            used = cpu.stop()
            stamps, took, lag = sender.report()
            procs.stop()
        ids = [eid for eid, _ in stamps]
        out = read_out(client, keys.output, {eid: i for i, eid in enumerate(ids)})
    finally:
        follower.close()
        delete_namespace(client, ns)
        client.close()
    check = verify(out, workload.entries[: len(ids)], workload.model, stream_expected=None)
    arrivals = follower.arrivals(ids)
    latencies = latencies_ms(stamps, arrivals, warmup_s)
    p50, p99 = latency_summary(latencies)
    delays = follower.delays_ms(stamps[0][1] + int(warmup_s * 1e9)) if stamps else []
    return {
        "timeline_p50_ms": _timeline(stamps, arrivals),
        "p50_ms": p50,
        "p99_ms": p99,
        "p999_ms": round(percentile(latencies, 99.9), 3) if latencies else None,
        "max_ms": round(max(latencies), 3) if latencies else None,
        "rate": round(rate, 1),
        "rate_achieved": round(len(stamps) / max(took, 1e-9), 1),
        "producer_lag_p99_max_ms": lag,
        "seconds": seconds,
        "warmup_s": warmup_s,
        "entries": len(stamps),
        "samples": len(latencies),
        "commits_seen": len(follower.marks),
        "follower_delay_p50_ms": round(percentile(delays, 50), 3) if delays else None,
        "follower_delay_p99_ms": round(percentile(delays, 99), 3) if delays else None,
        "worker_cpu_util": round(used["workers_s"] / used["wall_s"], 3),
        "redis_cpu_util": round(used["redis_s"] / used["wall_s"], 3),
        "harness_and_producer_cpu_util": used["harness_util"],
        "producer_cpu_util": round(sender.cpu_util, 3),  # while it sent
        "producer_process_cpu_util": used["helpers_util"],  # with its start (packing, imports)
        "other_processes_cpu_util": used["other_util"],
        "check": check.as_dict(),
        "lost": check.lost,
    }


def _timeline(
    stamps: Stamps, arrivals: dict[bytes, int], step_s: float = 0.25
) -> list[float | None]:
    """Median latency (ms) of the entries sent in each ``step_s`` of the run: flat = keeping up."""
    if not stamps:
        return []
    t0 = stamps[0][1]
    buckets: dict[int, list[float]] = {}
    for eid, st in stamps:
        if eid in arrivals:
            buckets.setdefault(int((st - t0) / 1e9 / step_s), []).append((arrivals[eid] - st) / 1e6)
    last = max(buckets, default=-1)
    return [round(percentile(buckets[i], 50), 2) if i in buckets else None for i in range(last + 1)]
