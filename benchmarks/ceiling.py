"""The ceiling: the seed workload's entries through XADD, XREADGROUP and XACK, no computation.

Throughput (closed loop): pre-fill a stream with pipelined XADD, create a consumer group
at ``0``, then time one Python client doing ``XREADGROUP COUNT batch`` + one ``XACK`` of the
whole batch until the stream is drained.

Latency (open loop): a producer thread XADDs at a fixed rate, stamping each entry with
``time.time_ns()``; a consumer with ``BLOCK`` measures receive time minus that stamp.

Run alone: ``python -m benchmarks.ceiling --entries 200000``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import time
from typing import Any

import redis

from benchmarks.common import (
    Result,
    exit_on_sigterm,
    latency_summary,
    redis_memory_mb,
    rss_mb,
    seed_workload,
)

STREAM = "ceiling:in"
GROUP = "ceiling"
CONSUMER = "c1"
FILL_PIPELINE = 1000
MAX_TICK = 2000  # most entries the latency producer sends in one write


def _client(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url)


def _prefill(client: redis.Redis, stream: str, entries: int, *, with_ts: bool) -> float:
    """XADD ``entries`` seed-workload entries in pipelines; returns the seconds it took."""
    workload = seed_workload(entries)
    start = time.perf_counter()
    for lo in range(0, entries, FILL_PIPELINE):
        pipe = client.pipeline(transaction=False)
        for entry in workload[lo : lo + FILL_PIPELINE]:
            pipe.xadd(stream, entry.fields(with_ts=with_ts))  # type: ignore[arg-type]
        pipe.execute()
    return time.perf_counter() - start


def run_ceiling(redis_url: str, *, entries: int, batch: int = 500, with_ts: bool = False) -> Result:
    """Closed-loop XREADGROUP + XACK throughput of one Python client over ``entries`` entries.

    Entries carry the 4 fields C, D, E, F (plus ``@ts`` when ``with_ts``).
    """
    client = _client(redis_url)
    try:
        client.delete(STREAM)
        fill_s = _prefill(client, STREAM, entries, with_ts=with_ts)
        client.xgroup_create(STREAM, GROUP, id="0")
        consumed = 0
        start = time.perf_counter()
        while True:
            reply: Any = client.xreadgroup(GROUP, CONSUMER, {STREAM: ">"}, count=batch)
            if not reply:
                break
            messages = reply[0][1]
            if not messages:
                break
            client.xack(STREAM, GROUP, *[msg_id for msg_id, _fields in messages])
            consumed += len(messages)
        seconds = time.perf_counter() - start
        pending = client.xpending(STREAM, GROUP)["pending"]
        fields = 5 if with_ts else 4
        return Result(
            workload="seed",
            system="ceiling",
            workers=1,
            entries=consumed,
            seconds=round(seconds, 4),
            entries_per_s=round(consumed / seconds, 1),
            readings_per_s=round(consumed * 4 / seconds, 1),
            derived_per_s=0.0,
            worker_rss_mb=rss_mb([os.getpid()]),
            redis_memory_mb=redis_memory_mb(client),
            lost=0,
            extra={
                "batch": batch,
                "fields_per_entry": fields,
                "xadd_fill_entries_per_s": round(entries / fill_s, 1),
                "pending_after": int(pending),
            },
        )
    finally:
        client.delete(STREAM)
        client.close()


def _produce(redis_url: str, stream: str, rate: float, total: int, report: Any) -> None:
    """Producer process: XADD ``total`` entries at ``rate``/s, open loop, pipelined.

    Every tick it sends all entries that are due (one packed write, then the replies), so it
    keeps the schedule as long as it can; each entry's ``t`` is ``time.time_ns()`` when packed.
    Puts (entries sent, seconds taken) on ``report``.
    """
    client = _client(redis_url)
    conn: Any = client.connection_pool.get_connection()
    try:
        rows = [
            ("XADD", stream, "*", *(x for kv in e.fields(with_ts=False).items() for x in kv))
            for e in seed_workload(min(total, 10_000))
        ]
        sent = 0
        start = time.perf_counter()
        while sent < total:
            elapsed = time.perf_counter() - start
            due = min(total, int(elapsed * rate) + 1, sent + MAX_TICK)
            if due <= sent:
                time.sleep(max(0.0, min(0.0005, (sent + 1) / rate - elapsed)))
                continue
            cmds = [(*rows[i % len(rows)], "t", str(time.time_ns())) for i in range(sent, due)]
            conn.send_packed_command(conn.pack_commands(cmds))
            for _ in cmds:
                conn.read_response()
            sent = due
        report.put((sent, time.perf_counter() - start))
    finally:
        client.connection_pool.release(conn)
        client.close()


def run_ceiling_latency(
    redis_url: str, *, rate: float, seconds: float, batch: int = 500
) -> tuple[float | None, float | None]:
    """Open-loop latency (p50, p99 in ms) from XADD to XREADGROUP receipt at ``rate`` entries/s.

    A producer *process* (so it does not share the consumer's GIL) XADDs on schedule with a
    ``time.time_ns()`` stamp per entry; this process reads with ``XREADGROUP BLOCK`` + XACK.
    """
    p50, p99, _achieved = _ceiling_latency(redis_url, rate=rate, seconds=seconds, batch=batch)
    return p50, p99


def _ceiling_latency(
    redis_url: str, *, rate: float, seconds: float, batch: int = 500
) -> tuple[float | None, float | None, float]:
    """Like :func:`run_ceiling_latency`, plus the producer's achieved rate."""
    stream = STREAM + ":lat"
    total = max(1, int(rate * seconds))
    client = _client(redis_url)
    client.delete(stream)
    client.xgroup_create(stream, GROUP, id="$", mkstream=True)
    ctx = multiprocessing.get_context("spawn")
    report = ctx.Queue()
    producer = ctx.Process(
        target=_produce, args=(redis_url, stream, rate, total, report), daemon=True
    )
    latencies_ms: list[float] = []
    producer.start()
    try:
        deadline = time.monotonic() + seconds + 30.0
        while len(latencies_ms) < total and time.monotonic() < deadline:
            reply: Any = client.xreadgroup(GROUP, CONSUMER, {stream: ">"}, count=batch, block=200)
            now = time.time_ns()
            if not reply:
                if not producer.is_alive() and report.empty():
                    raise RuntimeError(f"ceiling producer died (exit {producer.exitcode})")
                continue
            messages = reply[0][1]
            for _msg_id, fields in messages:
                latencies_ms.append((now - int(fields[b"t"])) / 1e6)
            if messages:
                client.xack(stream, GROUP, *[m for m, _ in messages])
        sent, took = report.get(timeout=30)
        producer.join(timeout=10)
    finally:
        if producer.is_alive():
            producer.kill()
            producer.join()
        client.delete(stream)
        client.close()
    p50, p99 = latency_summary(latencies_ms)
    return p50, p99, round(sent / took, 1)


def main(argv: list[str] | None = None) -> None:
    """Start an embedded Redis, run the ceiling and print the Result as JSON."""
    from streamcalc.embedded import EmbeddedRedis

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--with-ts", action="store_true", help="add the @ts field (5 fields)")
    parser.add_argument(
        "--latency-rate",
        type=float,
        default=None,
        help="open-loop rate in entries/s (default: half the measured maximum)",
    )
    parser.add_argument("--latency-seconds", type=float, default=5.0, help="0 skips latency")
    args = parser.parse_args(argv)
    exit_on_sigterm()

    with EmbeddedRedis() as srv:
        result = run_ceiling(srv.url, entries=args.entries, batch=args.batch, with_ts=args.with_ts)
        if args.latency_seconds > 0:
            rate = args.latency_rate or result.entries_per_s / 2
            p50, p99, achieved = _ceiling_latency(
                srv.url, rate=rate, seconds=args.latency_seconds, batch=args.batch
            )
            result.latency_p50_ms, result.latency_p99_ms = p50, p99
            result.extra["latency_rate"] = round(rate, 1)
            result.extra["latency_rate_achieved"] = achieved
            result.extra["latency_seconds"] = args.latency_seconds
    print(result.to_json())


if __name__ == "__main__":
    main()
