"""The ceiling: a workload's entries through XADD, XREADGROUP and XACK, no computation.

Throughput (closed loop): pre-fill a stream with pipelined XADD, create a consumer group
at ``0``, then time one Python client doing ``XREADGROUP COUNT batch`` + one ``XACK`` of the
whole batch until the stream is drained (:func:`run_ceiling` for the seed's entries, with
replies parsed; :func:`run_stream_ceiling` for any workload's prefilled entries).

Latency (open loop, :func:`stream_latency`): the paced sender (:mod:`benchmarks.pacing`, a
process) XADDs at a fixed rate, stamping each entry ID with ``time.time_ns()``; a consumer
with ``BLOCK`` notes when it receives each one. The streamcalc latency runs use the same sender
and :func:`stream_latency` with the other workloads' entries.

Run alone: ``python -m benchmarks.ceiling --entries 200000``.
"""

from __future__ import annotations

import argparse
import os
import time
import uuid
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
from benchmarks.pacing import WARMUP_S, PacedSender, latencies_ms, no_gc
from benchmarks.processes import redis_cpu
from benchmarks.streams import client_for
from benchmarks.workloads import Workload

STREAM = "ceiling:in"
GROUP = "ceiling"
CONSUMER = "c1"
FILL_PIPELINE = 1000


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


def drain_group(client: redis.Redis, stream: str, batch: int) -> int:
    """``XREADGROUP COUNT batch`` + one XACK of each batch until nothing new is left; returns
    the entries read. Replies are parsed as ``client`` parses them."""
    consumed = 0
    while True:
        reply: Any = client.execute_command(
            "XREADGROUP", "GROUP", GROUP, CONSUMER, "COUNT", batch, "STREAMS", stream, ">"
        )
        if not reply or not reply[0][1]:
            return consumed
        messages = reply[0][1]
        client.xack(stream, GROUP, *[m[0] for m in messages])
        consumed += len(messages)


def run_ceiling(redis_url: str, *, entries: int, batch: int = 500, with_ts: bool = False) -> Result:
    """Closed-loop XREADGROUP + XACK throughput of one Python client over ``entries`` entries.

    Entries carry the 4 fields C, D, E, F (plus ``@ts`` when ``with_ts``).
    """
    client = _client(redis_url)
    try:
        client.delete(STREAM)
        fill_s = _prefill(client, STREAM, entries, with_ts=with_ts)
        client.xgroup_create(STREAM, GROUP, id="0")
        start = time.perf_counter()
        consumed = drain_group(client, STREAM, batch)
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


def run_stream_ceiling(
    redis_url: str, workload: Workload, template: str, n: int, *, batch: int = 500
) -> Result:
    """Closed loop for any workload: its ``n`` entries, prefilled in ``template``, through
    XREADGROUP COUNT batch + XACK with no computation."""
    client = client_for(redis_url)
    key = f"bench:ceiling:{uuid.uuid4().hex[:8]}"
    try:
        client.execute_command("COPY", template, key)
        client.xgroup_create(key, GROUP, id="0")
        redis_cpu0 = redis_cpu(client)
        start = time.perf_counter()
        consumed = drain_group(client, key, batch)
        seconds = time.perf_counter() - start
        used = redis_cpu(client) - redis_cpu0
        memory = redis_memory_mb(client)
    finally:
        client.delete(key)
        client.close()
    rate = consumed / seconds
    return Result(
        workload=workload.name,
        system="ceiling",
        workers=1,
        entries=consumed,
        seconds=round(seconds, 4),
        entries_per_s=round(rate, 1),
        readings_per_s=round(rate * workload.readings_per_entry, 1),
        derived_per_s=0.0,
        redis_memory_mb=memory,
        lost=0,
        extra={
            "batch": batch,
            "redis_cpu_us_per_entry": round(used / max(1, consumed) * 1e6, 2),
            "redis_cpu_util": round(used / seconds, 3),
            "wall_us_per_entry": round(seconds / max(1, consumed) * 1e6, 2),
        },
    )


def stream_latency(
    redis_url: str,
    rows: list[list[str]],
    *,
    rate: float,
    batch: int = 500,
    warmup_s: float = 0.0,
    timeout_s: float = 60.0,
) -> dict[str, Any]:
    """Open-loop latency from XADD to XREADGROUP receipt of ``rows`` (XADD fields) sent at
    ``rate`` entries/s by the paced sender (:mod:`benchmarks.pacing`, a process of its own, so
    it does not share the reader's GIL); this process reads with ``XREADGROUP BLOCK`` + XACK.

    Entries sent in the first ``warmup_s`` are left out of the percentiles.
    """
    client = client_for(redis_url)
    key = f"bench:ceiling-lat:{uuid.uuid4().hex[:8]}"
    arrivals: dict[bytes, int] = {}
    try:
        client.xgroup_create(key, GROUP, id="$", mkstream=True)
        with PacedSender(redis_url, key, rows, rate) as sender, no_gc():
            sender.start()
            deadline = time.monotonic() + timeout_s
            while not (sender.done and len(arrivals) >= len(rows)):
                reply: Any = client.execute_command(
                    "XREADGROUP", "GROUP", GROUP, CONSUMER, "COUNT", batch, "BLOCK", 100,
                    "STREAMS", key, ">",
                )  # fmt: skip
                now = time.time_ns()
                if reply and reply[0][1]:
                    messages = reply[0][1]
                    for eid, _fields in messages:
                        arrivals[eid] = now
                    client.xack(key, GROUP, *[m[0] for m in messages])
                if time.monotonic() > deadline:
                    raise RuntimeError("ceiling latency run did not finish in time")
            stamps, took, lag = sender.report()
    finally:
        client.delete(key)
        client.close()
    latencies = latencies_ms(stamps, arrivals, warmup_s)
    p50, p99 = latency_summary(latencies)
    return {
        "p50_ms": p50,
        "p99_ms": p99,
        "rate": round(rate, 1),
        "rate_achieved": round(len(stamps) / max(took, 1e-9), 1),
        "samples": len(latencies),
        "producer_lag_p99_max_ms": lag,
    }


def run_ceiling_latency(
    redis_url: str, *, rate: float, seconds: float, batch: int = 500
) -> tuple[float | None, float | None]:
    """Open-loop latency (p50, p99 in ms) of seed entries (C, D, E, F) from XADD to
    XREADGROUP receipt at ``rate`` entries/s for ``seconds`` (:func:`stream_latency`)."""
    lat = _seed_latency(redis_url, rate=rate, seconds=seconds, batch=batch)
    return lat["p50_ms"], lat["p99_ms"]


def _seed_latency(redis_url: str, *, rate: float, seconds: float, batch: int) -> dict[str, Any]:
    total = max(1, int(rate * seconds))
    seed = [
        [x for kv in e.fields(with_ts=False).items() for x in kv]
        for e in seed_workload(min(total, 10_000))
    ]
    rows = [seed[i % len(seed)] for i in range(total)]
    return stream_latency(redis_url, rows, rate=rate, batch=batch, timeout_s=seconds + 30.0)


def run_stream_ceiling_latency(
    redis_url: str, workload: Workload, *, rate: float, seconds: float, batch: int = 500
) -> dict[str, Any]:
    """:func:`stream_latency` of any workload's entries, as streamcalc's latency run sends
    them (same entries, rate, warm-up and sender)."""
    rows = workload.xadd_rows(int(rate * (seconds + WARMUP_S)))
    return stream_latency(
        redis_url, rows, rate=rate, batch=batch, warmup_s=WARMUP_S, timeout_s=seconds + 60
    )


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
            lat = _seed_latency(srv.url, rate=rate, seconds=args.latency_seconds, batch=args.batch)
            result.latency_p50_ms, result.latency_p99_ms = lat["p50_ms"], lat["p99_ms"]
            result.extra["latency_rate"] = round(rate, 1)
            result.extra["latency_rate_achieved"] = lat["rate_achieved"]
            result.extra["latency_seconds"] = args.latency_seconds
    print(result.to_json())


if __name__ == "__main__":
    main()
