"""CPU cost per entry of one worker, workload against workload, in one process tree.

    .venv/bin/python -m benchmarks.cost seed keyed --entries 60000 --repeats 3
    .venv/bin/python -m benchmarks.cost seed deep --latency 10000 --seconds 5

On a shared box wall-clock rates are noisy; CPU time per entry is much less so. Each run
drains the prefilled streams with one worker (:func:`benchmarks.closed_loop.run_closed`, which
checks every value) and reports worker and Redis CPU microseconds per entry; the median of the
repeats is printed per workload, and, for two or more workloads, each one's cost against the
first's (entries per CPU second, the figure the keyed target of 85 % of seed reads on a quiet box).
With ``--latency RATE``, each workload instead runs open loop at RATE entries/s
(:func:`benchmarks.latency.run_latency`) and the median p50/p99 of the repeats is printed,
with the producer's own lag behind its schedule (p99), the follower's own delay in noting a
commit (p99, see :meth:`benchmarks.latency.Follower.delays_ms`) and the CPU of worker, Redis
and the producer process: the latency is streamcalc's only where those two stay small.
"""

from __future__ import annotations

import argparse
import statistics

from benchmarks import closed_loop, latency, processes, streams, workloads
from benchmarks.streams import client_for
from streamcalc.embedded import EmbeddedRedis


def measure(url: str, name: str, entries: int, repeats: int, batch: int) -> dict[str, float]:
    """Median worker and Redis CPU per entry (µs), entries/s and entries per CPU second."""
    client = client_for(url)
    wl = workloads.build(name, entries)
    filled = streams.prefill_partitions(client, f"bench:template:cost:{name}", wl)
    runs: list[dict[str, float]] = []
    try:
        for _ in range(repeats):
            try:
                row = closed_loop.run_closed(url, wl, filled, 1, batch=batch)
            finally:
                processes.kill_all_workers()
            if row.lost or row.extra["check"].get("wrong") or row.extra["check"].get("duplicates"):
                raise SystemExit(f"{name}: values lost or wrong: {row.extra['check']}")
            e = row.extra
            runs.append(
                {
                    "worker_us": e["worker_cpu_us_per_entry"],
                    "redis_us": e["redis_cpu_us_per_entry"],
                    "entries_per_s": row.entries_per_s,
                    "entries_per_cpu_s": e["entries_per_cpu_s"],
                    "evalsha_us": e["commandstats_per_entry"]
                    .get("evalsha", {})
                    .get("usec_per_entry", 0.0),
                }
            )
    finally:
        filled.delete(client)
        client.close()
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def measure_latency(
    url: str, name: str, rate: float, seconds: float, repeats: int, batch: int
) -> dict[str, float]:
    """Median open-loop p50/p99 (ms) at ``rate``, producer lag and follower delay p99,
    worker, Redis and producer CPU."""
    wl = workloads.build(name, int(rate * (seconds + latency.WARMUP_S)) + 1)
    runs: list[dict[str, float]] = []
    for _ in range(repeats):
        try:
            r = latency.run_latency(url, wl, rate=rate, seconds=seconds, batch=batch)
        finally:
            processes.kill_all_workers()
        if r["lost"]:
            raise SystemExit(f"{name}: {r['lost']} values lost")
        runs.append(
            {
                "p50_ms": r["p50_ms"],
                "p99_ms": r["p99_ms"],
                "producer_lag_p99_ms": r["producer_lag_p99_max_ms"][0],
                "follower_delay_p99_ms": r["follower_delay_p99_ms"] or 0.0,
                "worker_cpu": r["worker_cpu_util"],
                "redis_cpu": r["redis_cpu_util"],
                "producer_cpu": r["producer_cpu_util"],
            }
        )
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def main(argv: list[str] | None = None) -> None:
    """Command line: workloads, entries per workload, repeats, batch."""
    parser = argparse.ArgumentParser(description="CPU cost per entry of one worker.")
    parser.add_argument("workloads", nargs="+", choices=sorted(workloads.BUILDERS))
    parser.add_argument("--entries", type=int, default=60_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--latency", type=float, default=0.0, help="open loop at this rate")
    parser.add_argument("--seconds", type=float, default=5.0)
    opts = parser.parse_args(argv)
    if opts.latency:
        with EmbeddedRedis() as server:
            print(f"{'workload':<8} {'p50 ms':>7} {'p99 ms':>7} {'producer lag p99 ms':>19} "
                  f"{'follower delay p99 ms':>21} {'worker CPU':>10} {'Redis CPU':>9} "
                  f"{'producer CPU':>12}")  # fmt: skip
            for name in opts.workloads:
                r = measure_latency(
                    server.url, name, opts.latency, opts.seconds, opts.repeats, opts.batch
                )
                print(
                    f"{name:<8} {r['p50_ms']:>7.2f} {r['p99_ms']:>7.2f} "
                    f"{r['producer_lag_p99_ms']:>19.2f} {r['follower_delay_p99_ms']:>21.2f} "
                    f"{r['worker_cpu']:>10.2f} "
                    f"{r['redis_cpu']:>9.2f} {r['producer_cpu']:>12.2f}"
                )
        return
    with EmbeddedRedis() as server:
        results = {
            name: measure(server.url, name, opts.entries, opts.repeats, opts.batch)
            for name in opts.workloads
        }
    first = results[opts.workloads[0]]
    print(
        f"{'workload':<8} {'worker us/entry':>15} {'Redis us/entry':>14} {'EVALSHA us':>10} "
        f"{'entries/s':>10} {'entries/CPU s':>13} {'vs first':>8}"
    )
    for name, r in results.items():
        share = r["entries_per_cpu_s"] / first["entries_per_cpu_s"] * 100
        print(
            f"{name:<8} {r['worker_us']:>15.1f} {r['redis_us']:>14.1f} {r['evalsha_us']:>10.1f} "
            f"{r['entries_per_s']:>10,.0f} {r['entries_per_cpu_s']:>13,.0f} {share:>7.1f}%"
        )


if __name__ == "__main__":
    main()
