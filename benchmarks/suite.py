"""What one benchmark run does: the plans (quick, full) and the runs of every configuration.

For each workload: its template stream (one per partition for *keyed*), the Streams ceiling
(b), streamcalc with 1, 2 (and 4) workers (the median of the repeats), open-loop latency at
fractions of the 1-worker maximum and the ceiling's latency at the same rate (the unpartitioned
workloads only: *keyed* is compared with *seed*'s ceiling); then the graph-size sweep. The
seed's ceiling and the Celery baseline (a) are run by :func:`benchmarks.run.main` first. A
failed run becomes an error row; the benchmark goes on.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import redis

from benchmarks import ceiling, closed_loop, latency, processes, streams, verify, workloads
from benchmarks.common import Result
from benchmarks.scaling import late_pct

WORKLOADS = ("seed", "wide", "deep", "keyed")


@dataclass(frozen=True, slots=True)
class Plan:
    """How much of everything one run does."""

    name: str
    entries: dict[str, int]
    workers: tuple[int, ...]
    repeats: int
    latency_s: float
    latency_loads: tuple[float, ...]  # fractions of the 1-worker maximum; the first is the headline
    sweep_derived: tuple[int, ...]  # graph-size sweep: *wide* with this many derived nodes
    sweep_entries: int
    baseline_events: int
    baseline_open_loop_s: float
    baseline_idle_samples: int


QUICK = Plan(
    name="quick",
    entries={"seed": 30_000, "wide": 2_000, "deep": 8_000, "keyed": 40_000},
    workers=(1, 2),
    repeats=1,
    latency_s=1.5,
    latency_loads=(0.5,),
    sweep_derived=(),
    sweep_entries=0,
    baseline_events=500,
    baseline_open_loop_s=2.0,
    baseline_idle_samples=5,
)


FULL = Plan(
    name="full",
    entries={"seed": 200_000, "wide": 10_000, "deep": 60_000, "keyed": 200_000},
    workers=(1, 2, 4),
    repeats=3,
    latency_s=5.0,
    latency_loads=(0.5, 0.25),
    sweep_derived=(250, 500, 1000, 2000),
    sweep_entries=6_000,
    baseline_events=2_000,
    baseline_open_loop_s=5.0,
    baseline_idle_samples=20,
)


def log(msg: str) -> None:
    """Progress on stderr (the table goes to stdout)."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def error_row(workload: str, system: str, workers: int, exc: BaseException) -> Result:
    """A row for a run that failed: zero rates, the error in ``extra``."""
    return Result(
        workload=workload,
        system=system,
        workers=workers,
        entries=0,
        seconds=0.0,
        entries_per_s=0.0,
        readings_per_s=0.0,
        derived_per_s=0.0,
        lost=0,
        extra={"error": f"{type(exc).__name__}: {exc}"},
    )


def guard(action: Callable[[], Result], workload: str, system: str) -> Result:
    """Run a baseline; a failure becomes an error row instead of ending the benchmark."""
    try:
        return action()
    except Exception as exc:
        log(f"{workload} {system} failed: {exc}")
        return error_row(workload, system, 1, exc)


def median_run(runs: Sequence[Result]) -> Result:
    """The run with the median entries/s, carrying every run's figures and summed losses."""
    ordered = sorted(runs, key=lambda r: r.entries_per_s)
    pick = ordered[(len(ordered) - 1) // 2]
    row = msgspec.structs.replace(pick, extra=dict(pick.extra))
    row.lost = sum(r.lost for r in runs)
    row.extra["runs"] = len(runs)
    row.extra["runs_entries_per_s"] = [r.entries_per_s for r in runs]
    row.extra["runs_derived_per_s"] = [r.derived_per_s for r in runs]
    row.extra["bad"] = sum(bad_values(r.extra.get("check") or {}) for r in runs)
    row.extra["dead_letters_all_runs"] = sum(int(r.extra.get("dead_letters", 0)) for r in runs)
    lates = [p for r in runs if (p := late_pct(r)) is not None]
    row.extra["late_pct_max_all_runs"] = max(lates, key=abs) if lates else None
    row.extra["commit_conflicts_all_runs"] = sum(
        int(r.extra.get("commit_conflicts", 0)) for r in runs
    )
    row.extra["failed_worker_exits_all_runs"] = sum(
        1 for r in runs for code in r.extra.get("worker_exit_codes", []) if code != 0
    )
    if len(runs) > 1:
        rates = [r.entries_per_s for r in runs]
        row.extra["entries_per_s_spread_pct"] = round(
            (max(rates) - min(rates)) / statistics.median(rates) * 100, 1
        )
    return row


def bad_values(check: dict[str, Any]) -> int:
    """Wrong, unexpected and duplicated values of one run's check (``Check.as_dict``)."""
    return (
        int(check.get("wrong", 0))
        + int(check.get("unexpected", 0))
        + int(check.get("duplicates", 0))
    )


def run_streamcalc(
    url: str,
    plan: Plan,
    names: Sequence[str],
    batch: int,
    client: redis.Redis,
    ceilings: dict[str, Result],
) -> tuple[list[Result], bool]:
    """Every workload x worker count (median of repeats), its latency run, and its ceiling
    (closed loop, and latency at the same offered rate as streamcalc's latency run)."""
    rows: list[Result] = []
    failed = False
    for name in names:
        n = plan.entries[name]
        log(f"{name}: building {n} entries, filling the template stream(s)")
        wl = workloads.build(name, n)
        filled = streams.prefill_partitions(client, f"bench:template:{name}", wl)
        expected = verify.stream_order_count(wl.entries[:n], wl.model)
        try:
            if name != "seed" and wl.partitions == 1:  # seed's ceiling: run by main
                log(f"{name}: Streams ceiling (XREADGROUP + XACK, no computation)")
                template = filled.templates[0]
                ceilings[name] = guard(
                    lambda: ceiling.run_stream_ceiling(url, wl, template, n, batch=batch),  # noqa: B023
                    name,
                    "ceiling",
                )
            for workers in plan.workers:
                runs: list[Result] = []
                for rep in range(plan.repeats):
                    log(f"{name}: {workers} worker(s), run {rep + 1}/{plan.repeats}")
                    try:
                        runs.append(
                            closed_loop.run_closed(
                                url,
                                wl,
                                filled,
                                workers,
                                batch=batch,
                                timeout_s=120 + n / 100,
                                stream_expected=expected,
                            )
                        )
                    except Exception as exc:
                        log(f"{name}: {workers} worker(s) failed: {exc}")
                        failed = True
                        runs.append(error_row(name, "streamcalc", workers, exc))
                    finally:
                        processes.kill_all_workers()
                rows.append(median_run(runs))
            one = next((r for r in rows if r.workload == name and r.workers == 1), None)
            latency_due = plan.latency_s > 0 and wl.partitions == 1
            if one is not None and one.entries_per_s > 0 and latency_due:
                failed = _latency(url, wl, plan, batch, one, ceilings.get(name)) or failed
        finally:
            filled.delete(client)
    return rows, failed


def _latency(
    url: str, wl: workloads.Workload, plan: Plan, batch: int, one: Result, ceiling: Result | None
) -> bool:
    """Open-loop latency runs with 1 worker at each load of the plan (fractions of ``one``'s
    entries/s); the median p50/p99 over the repeats at the first load go into ``one``.

    Returns True when a run failed.
    """
    failed = False
    by_load: list[dict[str, Any]] = []
    for load in plan.latency_loads:
        rate = one.entries_per_s * load
        runs: list[dict[str, Any]] = []
        for rep in range(plan.repeats):
            log(f"{wl.name}: open-loop latency, 1 worker, {rate:.0f} entries/s, run {rep + 1}")
            try:
                runs.append(
                    latency.run_latency(url, wl, rate=rate, seconds=plan.latency_s, batch=batch)
                )
            except Exception as exc:
                log(f"{wl.name}: latency run failed: {exc}")
                one.extra["latency_error"] = f"{type(exc).__name__}: {exc}"
                failed = True
            finally:
                processes.kill_all_workers()
        one.lost += sum(r["lost"] for r in runs)
        one.extra["bad"] = one.extra.get("bad", 0) + sum(bad_values(r["check"]) for r in runs)
        # a run too short for its warm-up on a busy box times no entry: it has no percentiles
        runs = [r for r in runs if r["p50_ms"] is not None]
        if not runs:
            log(f"{wl.name}: no latency measured at {rate:.0f} entries/s (nothing after warm-up)")
            continue
        p50 = round(statistics.median(r["p50_ms"] for r in runs), 3)
        p99 = round(statistics.median(r["p99_ms"] for r in runs), 3)
        by_load.append({"load": load, "rate": round(rate, 1), "p50_ms": p50, "p99_ms": p99,
                        "runs": runs})  # fmt: skip
        if load == plan.latency_loads[0]:
            one.latency_p50_ms, one.latency_p99_ms = p50, p99
            _ceiling_latency(url, wl, plan, rate, batch, ceiling)
    one.extra["latency"] = by_load
    return failed


def _ceiling_latency(
    url: str, wl: workloads.Workload, plan: Plan, rate: float, batch: int, row: Result | None
) -> None:
    """The ceiling's latency at streamcalc's offered rate, into the ceiling's row."""
    if row is None or "error" in row.extra:
        return
    log(f"{wl.name}: ceiling latency at the same {rate:.0f} entries/s")
    try:
        if wl.name == "seed":
            p50, p99 = ceiling.run_ceiling_latency(
                url, rate=rate, seconds=plan.latency_s, batch=batch
            )
        else:
            lat = ceiling.run_stream_ceiling_latency(
                url, wl, rate=rate, seconds=plan.latency_s, batch=batch
            )
            p50, p99 = lat["p50_ms"], lat["p99_ms"]
    except Exception as exc:
        log(f"{wl.name}: ceiling latency failed: {exc}")
        row.extra["latency_error"] = f"{type(exc).__name__}: {exc}"
        return
    row.latency_p50_ms, row.latency_p99_ms = p50, p99
    row.extra["latency_rate"] = round(rate, 1)


def run_sweep(url: str, plan: Plan, batch: int, client: redis.Redis) -> tuple[list[Result], bool]:
    """Graph size: *wide* (1,000 inputs, 10 readings an entry) with more and more derived
    nodes, 1 worker, one run each."""
    rows: list[Result] = []
    failed = False
    for derived in plan.sweep_derived:
        wl = workloads.wide(plan.sweep_entries, derived=derived)
        wl.name = f"wide-{derived}"
        filled: streams.Prefilled | None = None
        log(f"graph-size sweep: {wl.name}, 1 worker")
        try:
            filled = streams.prefill_partitions(client, f"bench:template:{wl.name}", wl)
            rows.append(closed_loop.run_closed(url, wl, filled, 1, batch=batch))
        except Exception as exc:
            log(f"{wl.name} failed: {exc}")
            failed = True
            rows.append(error_row(wl.name, "streamcalc", 1, exc))
        finally:
            processes.kill_all_workers()
            if filled is not None:
                filled.delete(client)
    return rows, failed


def run_seed_ceiling(url: str, plan: Plan, batch: int) -> Result:
    """Baseline (b) for *seed*: benchmarks.ceiling, closed loop (latency comes later, at
    streamcalc's offered rate)."""
    return ceiling.run_ceiling(url, entries=plan.entries["seed"], batch=batch, with_ts=True)


def run_celery_baseline(url: str, plan: Plan) -> Result:
    """Baseline (a): the seed's Celery + python-redis-lock design (benchmarks.baseline)."""
    from benchmarks.baseline.run import run_baseline

    return run_baseline(
        url,
        events=plan.baseline_events,
        open_loop_rate=None,
        concurrency=2,
        timeout_s=120.0,
        open_loop_seconds=plan.baseline_open_loop_s,
        idle_samples=plan.baseline_idle_samples,
    )
