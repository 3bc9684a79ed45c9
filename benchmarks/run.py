"""Benchmark harness: streamcalc on the *seed*, *wide*, *deep* and *keyed* workloads, next to
the seed's Celery design (baseline a) and the bare Redis Streams ceiling (b), in one run.

    .venv/bin/python benchmarks/run.py [--quick] [--json PATH]

Starts its own redis-server (never the shared one), runs everything, prints one table and the
ratios of every streamcalc figure to (a) and (b), checks the targets of the performance issue,
and writes the same as JSON. ``--quick`` (smoke test, < 2 minutes) runs fewer entries, 1 and 2
workers and no repeats; the full run (< 15 minutes) runs 1, 2 and 4 workers, three times each,
and reports the run with the median entries/s. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` and ``streamcalc`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import msgspec
import redis

from benchmarks import processes, streams
from benchmarks.common import Result, exit_on_sigterm
from benchmarks.report import check_targets, ratios, report
from benchmarks.scaling import scaling_targets
from benchmarks.suite import (
    FULL,
    QUICK,
    WORKLOADS,
    guard,
    log,
    run_celery_baseline,
    run_seed_ceiling,
    run_streamcalc,
    run_sweep,
)


def machine_info(client: redis.Redis) -> dict[str, Any]:
    """What ran: CPUs, model, memory, kernel, Python, redis-server, load."""
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem_kb = int(Path("/proc/meminfo").read_text().split("\n")[0].split()[1])
    server: Any = client.info("server")
    return {
        "nproc": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "redis_server": server.get("redis_version"),
        "redis_malloc": server.get("mem_allocator"),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def git_revision() -> str | None:
    """Commit (and ``+dirty``) of the tree being measured, when it is a git checkout."""
    root = Path(__file__).resolve().parents[1]
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return None
    return f"{rev}{'+dirty' if dirty else ''}" if rev else None


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke-test sizes (< 2 minutes)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument(
        "--workloads",
        default=",".join(WORKLOADS),
        help="comma-separated subset of seed,wide,deep,keyed",
    )
    parser.add_argument("--repeats", type=int, default=None, help="runs per configuration")
    parser.add_argument("--batch", type=int, default=500, help="worker --batch")
    parser.add_argument("--no-baseline", action="store_true", help="skip the Celery baseline")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 0 when every run completed, 1 when one failed."""
    args = parse_args(argv)
    exit_on_sigterm()
    plan = QUICK if args.quick else FULL
    if args.repeats is not None:
        plan = dataclasses.replace(plan, repeats=args.repeats)
    names = [n for n in args.workloads.split(",") if n]
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown:
        print(f"unknown workload(s): {', '.join(unknown)}", file=sys.stderr)
        return 2
    from streamcalc.embedded import EmbeddedRedis

    started = time.time()
    t0 = time.monotonic()
    failed = False
    results: list[Result] = []
    sweep: list[Result] = []
    ceilings: dict[str, Result] = {}
    baseline: Result | None = None
    server = EmbeddedRedis()
    try:
        server.start()
        url = server.url
        client = streams.client_for(url)
        machine = machine_info(client)
        log(f"redis-server {machine['redis_server']} on {url}; {plan.name} run")
        log("seed: ceiling (b), benchmarks.ceiling")
        ceilings["seed"] = guard(lambda: run_seed_ceiling(url, plan, args.batch), "seed", "ceiling")
        if not args.no_baseline:
            log(f"seed: baseline (a), Celery, {plan.baseline_events} events")
            baseline = guard(lambda: run_celery_baseline(url, plan), "seed", "baseline-celery")
            client.flushall()
        rows, failed = run_streamcalc(url, plan, names, args.batch, client, ceilings)
        sweep, sweep_failed = run_sweep(url, plan, args.batch, client)
        failed = failed or sweep_failed
        failed = failed or any("error" in r.extra for r in (baseline, *ceilings.values()) if r)
        for name in names:
            if name in ceilings:
                results.append(ceilings[name])
            if name == "seed" and baseline is not None:
                results.append(baseline)
            results += [r for r in rows if r.workload == name]
        client.close()
    finally:
        processes.kill_all_workers()
        server.stop()
    ratio_rows = ratios(results, baseline, ceilings)
    doc: dict[str, Any] = {
        "plan": plan.name,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "started": dt.datetime.fromtimestamp(started, dt.UTC).isoformat(timespec="seconds"),
        "duration_s": round(time.monotonic() - t0, 1),
        "revision": git_revision(),
        "repeats": plan.repeats,
        "workers": list(plan.workers),
        "entries": plan.entries,
        "machine": {**machine, "loadavg_at_end": [round(x, 2) for x in os.getloadavg()]},
        "results": [msgspec.to_builtins(r) for r in results],
        "sweep": [msgspec.to_builtins(r) for r in sweep],
        "ratios": ratio_rows,
    }
    doc["targets"] = check_targets([*results, *sweep], ratio_rows) + scaling_targets(results)
    print(report(doc))
    if args.json is not None:
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
        log(f"wrote {args.json}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
