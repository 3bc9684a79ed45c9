"""Benchmark: the *keyed* workload on a local 3-master Redis Cluster next to one Redis, one run.

    .venv/bin/python benchmarks/cluster_bench.py [--quick] [--json PATH]

Starts its own servers (never the shared one): one redis-server, then a Redis Cluster of three
masters on loopback (tests/cluster.py, the test suite's cluster). On each, the same closed loop
as benchmarks/run.py (:func:`benchmarks.closed_loop.run_closed`: N ``streamcalc worker``
processes drain prefilled partitions, every value checked against the model) with 1, 2 and 4
workers (``--quick``: fewer entries, 1 and 2 workers, one run each; the full run repeats three
times and keeps the median). Reported per run: entries/s, the CPU of the workers and of each
shard, and the work per CPU second (entries per second of worker plus Redis CPU), which on a
machine with fewer cores than processes is the figure that compares. Target: on the cluster,
work per CPU second within 80 % of single Redis's. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):  # run as a script: make ``benchmarks`` and ``streamcalc`` importable
    sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the test suite's local cluster

import msgspec  # noqa: E402
from cluster import MISSING, LocalCluster  # noqa: E402

from benchmarks import closed_loop, processes, streams, verify, workloads  # noqa: E402
from benchmarks.common import Result  # noqa: E402
from benchmarks.suite import error_row, log, median_run  # noqa: E402

#: Work per CPU second on the cluster, at least this share of single Redis's (per worker count).
TARGET_PCT = 80.0


@dataclass(frozen=True)
class Plan:
    """How much one run does."""

    name: str
    entries: int
    workers: tuple[int, ...]
    repeats: int


QUICK = Plan("quick", 40_000, (1, 2), 1)
FULL = Plan("full", 200_000, (1, 2, 4), 3)


def run_target(
    target: str, url: str, plan: Plan, wl: workloads.Workload, batch: int, expected: int
) -> list[Result]:
    """Every worker count of the plan on one server (or cluster) at ``url``."""
    client = streams.client_for(url)
    rows: list[Result] = []
    filled = streams.prefill_partitions(client, "bench:template:keyed", wl)
    try:
        for workers in plan.workers:
            runs: list[Result] = []
            for rep in range(plan.repeats):
                log(f"keyed on {target}: {workers} worker(s), run {rep + 1}/{plan.repeats}")
                try:
                    runs.append(
                        closed_loop.run_closed(
                            url,
                            wl,
                            filled,
                            workers,
                            batch=batch,
                            timeout_s=120 + plan.entries / 100,
                            stream_expected=expected,
                        )
                    )
                except Exception as exc:
                    log(f"keyed on {target}: {workers} worker(s) failed: {exc}")
                    runs.append(error_row("keyed", "streamcalc", workers, exc))
                finally:
                    processes.kill_all_workers()
            row = median_run(runs)
            row.system = f"streamcalc-{target}"
            rows.append(row)
    finally:
        filled.delete(client)
        client.close()
    return rows


def compare(rows: Sequence[Result]) -> list[dict[str, Any]]:
    """Per worker count: the cluster's entries/s and work per CPU second against single's."""
    by = {(r.system, r.workers): r for r in rows}
    out: list[dict[str, Any]] = []
    for (system, workers), row in sorted(by.items()):
        if system != "streamcalc-cluster":
            continue
        single = by.get(("streamcalc-single", workers))
        if single is None or not single.entries_per_s or "error" in row.extra:
            continue
        work = float(row.extra.get("entries_per_cpu_s", 0.0))
        work1 = float(single.extra.get("entries_per_cpu_s", 0.0)) or 1e-9
        pct = round(work / work1 * 100, 1)
        out.append(
            {
                "workers": workers,
                "entries_per_s_pct": round(row.entries_per_s / single.entries_per_s * 100, 1),
                "work_per_cpu_s_pct": pct,
                "target": f">= {TARGET_PCT:.0f} %",
                "met": pct >= TARGET_PCT and row.lost == 0 and single.lost == 0,
            }
        )
    return out


def table(rows: Sequence[Result], ratios: Sequence[dict[str, Any]]) -> str:
    """The results as text."""
    lines = [
        f"{'target':<8} {'workers':>7} {'entries/s':>10} {'worker us/e':>11} {'redis us/e':>10} "
        f"{'entries/CPU-s':>13} {'lost':>5}  redis CPU s per shard",
    ]
    for r in rows:
        x = r.extra
        lines.append(
            f"{r.system.removeprefix('streamcalc-'):<8} {r.workers:>7} {r.entries_per_s:>10,.0f} "
            f"{x.get('worker_cpu_us_per_entry', 0):>11} {x.get('redis_cpu_us_per_entry', 0):>10} "
            f"{x.get('entries_per_cpu_s', 0):>13,.0f} {r.lost:>5}  "
            f"{x.get('redis_cpu_s_per_shard', x.get('error', ''))}"
        )
    lines.append("")
    for c in ratios:
        lines.append(
            f"cluster vs single, {c['workers']} worker(s): entries/s {c['entries_per_s_pct']} %, "
            f"work per CPU second {c['work_per_cpu_s_pct']} % (target {c['target']}: "
            f"{'met' if c['met'] else 'NOT met'})"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run both targets; 0 when every run completed and was correct."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke-test sizes (~1 minute)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--batch", type=int, default=500, help="worker --batch")
    args = parser.parse_args(argv)
    if MISSING:
        print(f"cannot start a local cluster: {MISSING}", file=sys.stderr)
        return 1
    from streamcalc.embedded import EmbeddedRedis

    plan = QUICK if args.quick else FULL
    t0 = time.monotonic()
    wl = workloads.build("keyed", plan.entries)
    expected = verify.stream_order_count(wl.entries, wl.model)
    rows: list[Result] = []
    server = EmbeddedRedis().start()
    try:
        rows += run_target("single", server.url, plan, wl, args.batch, expected)
    finally:
        server.stop()
    cluster = LocalCluster(masters=3).start()
    try:
        rows += run_target("cluster", cluster.url, plan, wl, args.batch, expected)
    finally:
        processes.kill_all_workers()
        cluster.stop()
    ratios = compare(rows)
    print(table(rows, ratios))
    doc = {
        "plan": plan.name,
        "entries": plan.entries,
        "partitions": wl.partitions,
        "duration_s": round(time.monotonic() - t0, 1),
        "results": [msgspec.to_builtins(r) for r in rows],
        "ratios": ratios,
    }
    if args.json is not None:
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
        log(f"wrote {args.json}")
    bad = any("error" in r.extra or r.lost for r in rows)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
