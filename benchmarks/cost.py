"""CPU cost per entry of one worker, workload against workload, in one process tree.

    .venv/bin/python -m benchmarks.cost seed keyed --entries 60000 --repeats 3

On a shared box wall-clock rates are noisy; CPU time per entry is much less so. Each run
drains the prefilled streams with one worker (:func:`benchmarks.closed_loop.run_closed`, which
checks every value) and reports worker and Redis CPU microseconds per entry; the median of the
repeats is printed per workload, and, for two or more workloads, each one's cost against the
first's (entries per CPU second, the figure issue 8's 85 % target reads on a quiet box).
"""

from __future__ import annotations

import argparse
import statistics

from benchmarks import closed_loop, processes, streams, workloads
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


def main(argv: list[str] | None = None) -> None:
    """Command line: workloads, entries per workload, repeats, batch."""
    parser = argparse.ArgumentParser(description="CPU cost per entry of one worker.")
    parser.add_argument("workloads", nargs="+", choices=sorted(workloads.BUILDERS))
    parser.add_argument("--entries", type=int, default=60_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=500)
    opts = parser.parse_args(argv)
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
